"""`[writeback]`: writing back to on-premises AD over LDAP (ms-DS-ConsistencyGuid, cloud groups).

The writer binds with its own account (a delegated one with rights on the groups OU and on the
users' mS-DS-ConsistencyGuid only), not the import account, which needs only read rights.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr

from idsync.config.base import ConfigPath, CredentialName, PositiveSeconds, Section, inline_secret
from idsync.config.errors import ConfigProblem
from idsync.config.secrets import SecretSource

if TYPE_CHECKING:
    from idsync.config.model import Config

GroupScope = Literal["all", "named", "filter"]


def _dn(value: str) -> str:
    parts = [p.strip() for p in value.split(",")]
    if not parts or any("=" not in p or not p.split("=", 1)[1] for p in parts):
        raise ValueError("must be a distinguished name like OU=Cloud Groups,DC=example,DC=com")
    return value


Dn = Annotated[str, AfterValidator(_dn)]


class WritebackSettings(Section):
    """`[writeback]`: what is written back to AD, and with which account."""

    enabled: bool = False
    bind_dn: Dn | None = None
    password_value: SecretStr | None = inline_secret("password")
    password_file: ConfigPath | None = None
    password_credential: CredentialName | None = None
    # ms-DS-ConsistencyGuid := objectGUID on synced users that lack it (exactly once per user).
    consistency_guid: bool = True
    # Cloud security groups → universal security groups in `groups_ou`.
    groups: bool = True
    groups_ou: Dn | None = None
    group_scope: GroupScope = "all"
    group_names: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    # With group_scope = "filter": cloud groups whose displayName starts with this prefix.
    group_name_prefix: str = ""
    write_timeout_seconds: PositiveSeconds = 10.0

    def in_scope(self, display_name: str) -> bool:
        """True when a cloud group of this display name is written back."""
        if self.group_scope == "named":
            return display_name.lower() in {n.lower() for n in self.group_names}
        if self.group_scope == "filter":
            return display_name.lower().startswith(self.group_name_prefix.lower())
        return True

    def password_source(self) -> SecretSource:
        return SecretSource(
            "writeback.password", self.password_value, self.password_file, self.password_credential
        )

    def password(self) -> str:
        """The writer's bind password; raises ConfigError naming the setting if unreadable."""
        return self._read_secret(self.password_source())

    def secret_sources(self) -> list[SecretSource]:
        return [self.password_source()] if self.enabled else []


def writeback_problems(cfg: Config) -> Iterator[ConfigProblem]:
    """What an enabled `[writeback]` cannot run without, each naming its setting."""
    wb = cfg.writeback
    if not wb.enabled:
        return
    if cfg.source.kind != "ad":
        yield ConfigProblem("writeback.enabled", 'writeback needs source.kind = "ad" (Active Directory)')
    if wb.bind_dn is None:
        yield ConfigProblem(
            "writeback.bind_dn", "required when writeback is enabled (the writer's own account)"
        )
    if not wb.password_source().configured:
        yield ConfigProblem(
            "writeback.password_file", "required when writeback is enabled (or password_credential)"
        )
    if wb.groups and wb.groups_ou is None:
        yield ConfigProblem("writeback.groups_ou", "required when group writeback is on (writeback.groups)")
    if wb.group_scope == "named" and not wb.group_names:
        yield ConfigProblem("writeback.group_names", 'required with group_scope = "named"')
    if wb.group_scope == "filter" and not wb.group_name_prefix:
        yield ConfigProblem("writeback.group_name_prefix", 'required with group_scope = "filter"')
