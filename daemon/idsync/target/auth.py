"""Tokens for Graph: azure-identity credentials behind a cache that can be told a token died.

Graph can reject a token before the expiry the client computed (clock skew, revocation, a CAE
event, the emulator's clock moved). azure-identity keeps serving its cached token then, so the
connector asks for a new credential object on `invalidate()` and gets a fresh token from the
identity platform.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import ClientAuthenticationError
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    AnonymousAuthenticationProvider,
    AuthenticationProvider,
    BaseBearerTokenAuthenticationProvider,
)

from idsync.config.target import GraphSettings, is_microsoft_host
from idsync.target.errors import GraphAuthError

GLOBAL_GRAPH_RESOURCE = "https://graph.microsoft.com"
# Ask again this long before the token expires (azure-identity uses the same margin).
REFRESH_MARGIN = 300.0


def graph_scope(settings: GraphSettings) -> str:
    """The `.default` scope of the configured Graph endpoint.

    National clouds have their own resource (`https://graph.microsoft.us`, ...); an emulator or
    proxy at any other host stands in for global Graph, whose resource its tokens name.
    """
    endpoint = settings.graph_endpoint
    resource = endpoint if is_microsoft_host(endpoint) else GLOBAL_GRAPH_RESOURCE
    return f"{resource}/.default"


def _credential(settings: GraphSettings) -> Any:
    """A new azure-identity async credential for the configured app (secret or certificate)."""
    from azure.identity.aio import CertificateCredential, ClientSecretCredential

    if not settings.tenant_id or not settings.client_id:
        raise GraphAuthError("target.graph: tenant_id and client_id are required unless anonymous = true")
    kwargs: dict[str, Any] = {"authority": settings.authority_host}
    if not is_microsoft_host(settings.authority_host):
        kwargs["disable_instance_discovery"] = True  # an emulator or a private authority
    if settings.ca_file is not None:
        kwargs["connection_verify"] = str(settings.ca_file)
    if settings.auth_method == "certificate":
        return CertificateCredential(
            settings.tenant_id, settings.client_id, certificate_path=settings.certificate_path(), **kwargs
        )
    return ClientSecretCredential(settings.tenant_id, settings.client_id, settings.client_secret(), **kwargs)


class CredentialTokenProvider(AccessTokenProvider):
    """kiota's token source: one cached token, refreshed before expiry or when Graph rejects it."""

    def __init__(
        self, settings: GraphSettings, factory: Callable[[GraphSettings], Any] = _credential
    ) -> None:
        self._settings = settings
        self._factory = factory
        self._scope = graph_scope(settings)
        self._credential: Any = None
        self._token: str = ""
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.issued = 0  # tokens obtained so far (tests and metrics)
        host = urlsplit(settings.graph_endpoint).hostname or ""
        self._hosts = AllowedHostsValidator([host])

    async def get_authorization_token(
        self, uri: str, additional_authentication_context: dict[str, Any] | None = None
    ) -> str:
        """A valid bearer token for `uri` (only the configured Graph host gets one)."""
        if not self._hosts.is_url_host_valid(uri):
            return ""
        if self._token and time.time() < self._expires - REFRESH_MARGIN:
            return self._token
        async with self._lock:
            if self._token and time.time() < self._expires - REFRESH_MARGIN:
                return self._token
            if self._credential is None:
                self._credential = self._factory(self._settings)
            try:
                tok = await self._credential.get_token(self._scope)
            except ClientAuthenticationError as e:
                raise GraphAuthError(
                    f"the identity platform at {self._settings.authority_host} refused a token for "
                    f"app {self._settings.client_id} in tenant {self._settings.tenant_id}: {e.message}"
                ) from None
            self._token, self._expires = tok.token, float(tok.expires_on)
            self.issued += 1
            return self._token

    async def invalidate(self, rejected: str) -> None:
        """Graph rejected `rejected`: drop it and the credential's cache; the next call re-authenticates."""
        async with self._lock:
            if rejected and rejected != self._token:
                return  # another request already replaced it
            self._token, self._expires = "", 0.0
            old, self._credential = self._credential, None
        if old is not None:
            await old.close()

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._hosts

    async def close(self) -> None:
        """Close the credential's transport."""
        if self._credential is not None:
            await self._credential.close()
            self._credential = None


def auth_provider(settings: GraphSettings) -> tuple[AuthenticationProvider, CredentialTokenProvider | None]:
    """kiota's authentication provider for the settings, and the token cache behind it (if any)."""
    if settings.anonymous:
        return AnonymousAuthenticationProvider(), None
    tokens = CredentialTokenProvider(settings)
    return BaseBearerTokenAuthenticationProvider(tokens), tokens
