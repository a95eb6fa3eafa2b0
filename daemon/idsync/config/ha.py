"""`[ha]`: leader election through ZooKeeper and the timings that keep it safe."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, model_validator

from idsync.config.base import ConfigPath, CredentialName, PositiveSeconds, Section, inline_secret
from idsync.config.errors import ConfigError
from idsync.config.secrets import SecretSource


class ZooKeeperSettings(Section):
    """`[ha.zookeeper]`: the ensemble and how to authenticate to it."""

    hosts: str = Field(min_length=1)
    session_timeout_seconds: PositiveSeconds = 30.0
    auth_value: SecretStr | None = inline_secret("auth")
    auth_file: ConfigPath | None = None
    auth_credential: CredentialName | None = None
    tls: bool = False
    ca_file: ConfigPath | None = None

    def auth_source(self) -> SecretSource:
        """Where the digest credentials (`user:password`) come from."""
        return SecretSource("ha.zookeeper.auth", self.auth_value, self.auth_file, self.auth_credential)

    def auth(self) -> tuple[str, str] | None:
        """Digest credentials as (user, password), or None without authentication."""
        src = self.auth_source()
        if not src.configured:
            return None
        user, sep, password = self._read_secret(src).partition(":")
        if not sep or not user or not password:
            setting = (
                src.path if src.inline is not None else f"{src.path}_{'file' if src.file else 'credential'}"
            )
            raise ConfigError.single(setting, "must hold digest credentials as user:password")
        return user, password

    def secret_sources(self) -> list[SecretSource]:
        return [self.auth_source()]


class HaSettings(Section):
    """`[ha]`: the HA loop's cadence and hand-over timing."""

    zookeeper: ZooKeeperSettings
    loop_interval_seconds: PositiveSeconds = 10.0
    retry_timeout_seconds: PositiveSeconds = 10.0
    # After an unplanned takeover, wait this long before the first write: the old leader's
    # writes in flight end by their deadline (target.graph.request_timeout_seconds, the default).
    lock_delay_seconds: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    # A leader whose main loop makes no progress this long resigns (default: the session timeout).
    stall_timeout_seconds: PositiveSeconds | None = None

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "failover_grace_seconds" in data:
            raise ValueError(
                "failover_grace_seconds was renamed lock_delay_seconds (it now defaults to "
                "target.graph.request_timeout_seconds, the old leader's longest write)"
            )
        return data
