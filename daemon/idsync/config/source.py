"""`[source]`: the directory idsync imports from (Active Directory or OpenLDAP)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, SecretStr, model_validator

from idsync.config.base import ConfigPath, CredentialName, PositiveSeconds, Section, inline_secret
from idsync.config.secrets import SecretSource

SourceKind = Literal["ad", "openldap"]
DeltaMode = Literal["dirsync", "usn", "syncrepl", "none"]

# Per kind: the default user filter, group filter and delta mode.
DEFAULTS: dict[str, dict[str, str]] = {
    "ad": {
        "user_filter": "(&(objectCategory=person)(objectClass=user))",
        "group_filter": "(objectClass=group)",
        "delta_mode": "dirsync",
    },
    "openldap": {
        "user_filter": "(objectClass=inetOrgPerson)",
        "group_filter": "(objectClass=groupOfNames)",
        "delta_mode": "syncrepl",
    },
}
# Which delta modes each kind supports.
DELTA_MODES: dict[str, tuple[str, ...]] = {
    "ad": ("dirsync", "usn", "none"),
    "openldap": ("syncrepl", "none"),
}
AD_MAX_PAGE_SIZE = 1000  # AD's MaxPageSize; larger requests are silently cut to it


def _ldap_url(value: str) -> str:
    if not value.lower().startswith(("ldap://", "ldaps://")):
        raise ValueError("must start with ldap:// or ldaps://")
    if not value.split("://", 1)[1].strip("/"):
        raise ValueError("has no host")
    return value


def _ldap_filter(value: str) -> str:
    depth = 0
    for ch in value:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            break
    if not (value.startswith("(") and value.endswith(")")) or depth != 0:
        raise ValueError("must be an LDAP filter in balanced parentheses, e.g. (objectClass=user)")
    return value


LdapUrl = Annotated[str, AfterValidator(_ldap_url)]
LdapFilter = Annotated[str, AfterValidator(_ldap_filter)]
NonEmpty = Annotated[str, Field(min_length=1)]


class LdapSettings(Section):
    """`[source.ldap]`: how to reach and read the directory."""

    urls: list[LdapUrl] = Field(min_length=1)
    start_tls: bool = False
    ca_file: ConfigPath | None = None
    bind_dn: str | None = None
    password_value: SecretStr | None = inline_secret("password")
    password_file: ConfigPath | None = None
    password_credential: CredentialName | None = None
    connect_timeout_seconds: PositiveSeconds = 10.0
    read_timeout_seconds: PositiveSeconds = 120.0
    page_size: int = Field(default=1000, ge=1, le=100_000)
    base_dns: list[NonEmpty] = Field(min_length=1)
    include_ous: list[NonEmpty] = Field(default_factory=list)
    exclude_ous: list[NonEmpty] = Field(default_factory=list)
    # Defaults depend on source.kind; SourceSettings fills them in.
    user_filter: LdapFilter
    group_filter: LdapFilter
    extra_attributes: list[NonEmpty] = Field(default_factory=list)
    delta_mode: DeltaMode
    max_value_bytes: int = Field(default=1_048_576, ge=1024)

    def password_source(self) -> SecretSource:
        """Where the bind password comes from."""
        return SecretSource(
            "source.ldap.password", self.password_value, self.password_file, self.password_credential
        )

    def password(self) -> str:
        """The bind password; raises ConfigError naming the setting if it cannot be read."""
        return self._read_secret(self.password_source())

    def secret_sources(self) -> list[SecretSource]:
        return [self.password_source()]


class SourceSettings(Section):
    """`[source]`: the kind of directory and how to read it."""

    kind: SourceKind
    ldap: LdapSettings

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("ldap"), dict):
            # An unknown kind is reported on `kind`; AD's defaults avoid follow-on noise.
            defaults = DEFAULTS.get(str(data.get("kind")), DEFAULTS["ad"])
            data = {**data, "ldap": {**defaults, **data["ldap"]}}
        return data
