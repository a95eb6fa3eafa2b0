"""`[target]`: Microsoft Entra ID through Microsoft Graph (or the offline emulator)."""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr

from idsync.config.base import ConfigPath, CredentialName, PositiveSeconds, Section, inline_secret
from idsync.config.secrets import SecretSource

# Hosts of Microsoft's real clouds, where anonymous access makes no sense.
MICROSOFT_HOST = re.compile(
    r"(^|\.)(microsoft\.com|microsoftonline\.com|microsoft\.us|microsoftonline\.us|chinacloudapi\.cn"
    r"|microsoftonline\.cn)$"
)
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_EXTENSION = re.compile(r"^extension_[0-9a-fA-F]{32}_[A-Za-z0-9_]+$")


def _https_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value.rstrip("/")


def _guid(value: str) -> str:
    if not _GUID.fullmatch(value):
        raise ValueError("must be a GUID like 00000000-0000-0000-0000-000000000000")
    return value.lower()


def _tenant(value: str) -> str:
    if _GUID.fullmatch(value) or re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", value):
        return value.lower()
    raise ValueError("must be a tenant GUID or a verified domain like contoso.onmicrosoft.com")


def _extension(value: str) -> str:
    if not _EXTENSION.fullmatch(value):
        raise ValueError("must be a directory extension name: extension_<appIdWithoutDashes>_<name>")
    return value


HttpUrl = Annotated[str, AfterValidator(_https_url)]


def is_microsoft_host(url: str) -> bool:
    """True when `url` points at one of Microsoft's clouds rather than an emulator."""
    return bool(MICROSOFT_HOST.search(urlsplit(url).hostname or ""))


class GraphSettings(Section):
    """`[target.graph]`: endpoint, app credentials and write pacing."""

    graph_endpoint: HttpUrl = "https://graph.microsoft.com"
    authority_host: HttpUrl = "https://login.microsoftonline.com"
    tenant_id: Annotated[str, AfterValidator(_tenant)] | None = None
    client_id: Annotated[str, AfterValidator(_guid)] | None = None
    client_secret_value: SecretStr | None = inline_secret("client_secret")
    client_secret_file: ConfigPath | None = None
    client_secret_credential: CredentialName | None = None
    certificate_file: ConfigPath | None = None
    certificate_credential: CredentialName | None = None
    ca_file: ConfigPath | None = None
    anonymous: bool = False
    request_timeout_seconds: PositiveSeconds = 10.0
    write_budget: int = Field(default=3000, ge=1)
    write_window_seconds: PositiveSeconds = 150.0
    # pacing adapts to what Graph tells, from the configured rate up to this many times it
    # (1.0: never above write_budget per write_window_seconds)
    write_rate_ceiling: float = Field(default=3.0, ge=1.0, le=10.0)
    max_concurrent_batches: int = Field(default=4, ge=1, le=64)
    batch_size: int = Field(default=20, ge=1, le=20)
    anchor_extension_attribute: Annotated[str, AfterValidator(_extension)] | None = None

    def client_secret_source(self) -> SecretSource:
        """Where the app's client secret comes from."""
        return SecretSource(
            "target.graph.client_secret",
            self.client_secret_value,
            self.client_secret_file,
            self.client_secret_credential,
        )

    def certificate_source(self) -> SecretSource:
        """Where the app's certificate (PEM with private key) comes from."""
        return SecretSource(
            "target.graph.certificate", None, self.certificate_file, self.certificate_credential
        )

    @property
    def auth_method(self) -> str:
        """`"anonymous"`, `"certificate"` or `"client_secret"`."""
        if self.anonymous:
            return "anonymous"
        return "certificate" if self.certificate_source().configured else "client_secret"

    def client_secret(self) -> str:
        """The client secret; raises ConfigError naming the setting if it cannot be read."""
        return self._read_secret(self.client_secret_source())

    def certificate_path(self) -> str:
        """Path of the PEM certificate for azure-identity; checked readable first."""
        src = self.certificate_source()
        self._read_secret(src)
        if src.file is not None:
            return str(src.file)
        assert self._credentials_dir is not None  # read_secret raised otherwise
        return str(self._credentials_dir / str(src.credential))

    def secret_sources(self) -> list[SecretSource]:
        return [self.client_secret_source(), self.certificate_source()]


class TargetSettings(Section):
    """`[target]`: the tenant written to."""

    graph: GraphSettings = Field(default_factory=GraphSettings)
