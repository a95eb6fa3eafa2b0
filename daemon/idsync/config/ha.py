"""`[ha]`: leader election through ZooKeeper and the timings that keep it safe."""

from __future__ import annotations

from pydantic import Field, SecretStr

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
    failover_grace_seconds: float = Field(default=0.0, ge=0, allow_inf_nan=False)
