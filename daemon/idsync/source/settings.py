"""The settings the source connector runs with, adapted from `[source]` of the configuration.

A small frozen dataclass rather than the pydantic model itself: tests and the benchmark build it
directly, and the fields the configuration does not (yet) have get defaults here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from idsync.config.source import SourceSettings

SourceKind = Literal["ad", "openldap"]
DeltaMode = Literal["dirsync", "usn", "syncrepl", "none"]

# What the sync rules usually need; `extra_attributes` in the configuration adds to these.
DEFAULT_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "ad": (
        "objectGUID",
        "objectSid",
        "objectClass",
        "cn",
        "sAMAccountName",
        "userPrincipalName",
        "displayName",
        "givenName",
        "sn",
        "mail",
        "proxyAddresses",
        "userAccountControl",
        "department",
        "title",
        "company",
        "employeeID",
        "telephoneNumber",
        "mobile",
        "description",
        "groupType",
        "primaryGroupID",
        "mS-DS-ConsistencyGuid",
        "manager",
    ),
    "openldap": (
        "entryUUID",
        "objectClass",
        "cn",
        "uid",
        "sn",
        "givenName",
        "displayName",
        "mail",
        "employeeNumber",
        "departmentNumber",
        "telephoneNumber",
        "title",
        "description",
        "manager",
    ),
}
DEFAULT_FILTERS: dict[str, tuple[str, str]] = {
    "ad": ("(&(objectCategory=person)(objectClass=user))", "(objectClass=group)"),
    "openldap": ("(objectClass=inetOrgPerson)", "(objectClass=groupOfNames)"),
}


@dataclass(frozen=True)
class LdapSourceSettings:
    """How to reach the directory and what to import from it.

    `password` is a callable so the secret is read when a connection is made (a rotated
    password file takes effect at the next reconnect) and never stored here.
    """

    kind: SourceKind
    urls: tuple[str, ...]
    base_dns: tuple[str, ...]
    bind_dn: str | None = None
    password: Callable[[], str] | None = field(default=None, repr=False, compare=False)
    start_tls: bool = False
    ca_file: Path | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    page_size: int = 1000
    include_ous: tuple[str, ...] = ()
    exclude_ous: tuple[str, ...] = ()
    user_filter: str | None = None
    group_filter: str | None = None
    extra_attributes: tuple[str, ...] = ()
    delta_mode: DeltaMode = "none"
    max_value_bytes: int = 1_048_576
    # Not (yet) in the configuration file:
    connect_attempts: int = 4  # per server, with jittered exponential backoff between rounds
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    batch_size: int = 1000  # objects per committed transaction
    progress_every: int = 10_000  # log `source.progress` every N objects

    @property
    def users(self) -> str:
        """The LDAP filter selecting users."""
        return self.user_filter or DEFAULT_FILTERS[self.kind][0]

    @property
    def groups(self) -> str:
        """The LDAP filter selecting groups."""
        return self.group_filter or DEFAULT_FILTERS[self.kind][1]

    @property
    def attributes(self) -> tuple[str, ...]:
        """Attributes read and stored (without `member`, which is read separately)."""
        seen = dict.fromkeys(DEFAULT_ATTRIBUTES[self.kind] + self.extra_attributes)
        return tuple(a for a in seen if a.lower() != "member")

    def read_password(self) -> str | None:
        return self.password() if self.password else None

    @classmethod
    def from_config(cls, source: SourceSettings) -> LdapSourceSettings:
        """Build from the `[source]` section of the loaded configuration."""
        ldap = source.ldap
        password: Callable[[], str] | None = ldap.password if ldap.password_source().configured else None
        return cls(
            kind=source.kind,
            urls=tuple(ldap.urls),
            base_dns=tuple(ldap.base_dns),
            bind_dn=ldap.bind_dn,
            password=password,
            start_tls=ldap.start_tls,
            ca_file=ldap.ca_file,
            connect_timeout=ldap.connect_timeout_seconds,
            read_timeout=ldap.read_timeout_seconds,
            page_size=ldap.page_size,
            include_ous=tuple(ldap.include_ous),
            exclude_ous=tuple(ldap.exclude_ous),
            user_filter=ldap.user_filter,
            group_filter=ldap.group_filter,
            extra_attributes=tuple(ldap.extra_attributes),
            delta_mode=ldap.delta_mode,
            max_value_bytes=ldap.max_value_bytes,
        )
