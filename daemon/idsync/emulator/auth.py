"""The emulator's Microsoft identity platform: client-credentials tokens and OpenID discovery.

Tokens are JWT-shaped (header.payload.signature, HS256 with a key the state file keeps, so tokens
survive a restart). Graph checks audience, expiry and signature; so does the emulator.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from idsync.emulator.config import (
    GRAPH_APP_ID,
    GRAPH_RESOURCE,
    ClientSpec,
    EmulatorConfig,
    service_principal_id,
)
from idsync.emulator.errors import GraphError, unauthorized
from idsync.emulator.store import Clock

ACCEPTED_SCOPES = {f"{GRAPH_RESOURCE}/.default", f"{GRAPH_RESOURCE}//.default", f"{GRAPH_APP_ID}/.default"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Identity:
    """Who a valid token speaks for: the app, its application permissions, its service principal."""

    app_id: str
    roles: frozenset[str]
    principal: str


class AuthError(Exception):
    """An OAuth error response from the token endpoint (`{"error", "error_description", ...}`)."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.code, self.description = status, error, code, description

    def body(self) -> dict[str, Any]:
        """The JSON body Entra ID sends."""
        trace = str(uuid.uuid4())
        return {
            "error": self.error,
            "error_description": f"AADSTS{self.code}: {self.description} Trace ID: {trace}",
            "error_codes": [self.code],
            "timestamp": "",
            "trace_id": trace,
            "correlation_id": str(uuid.uuid4()),
        }


class Auth:
    """Issues and checks bearer tokens for the configured tenant and app."""

    def __init__(self, cfg: EmulatorConfig, clock: Clock) -> None:
        self.cfg = cfg
        self.clock = clock
        self.key = os.urandom(32)
        self._cache: dict[str, tuple[float, Identity]] = {}

    def client(self, client_id: str) -> ClientSpec | None:
        """The configured client with this id (case-insensitive), if any."""
        for c in self.cfg.clients():
            if c.client_id.lower() == client_id.lower():
                return c
        return None

    def anonymous(self) -> Identity:
        """`--anonymous`: every call acts as the default client, with its roles."""
        cid = self.cfg.client_id
        return Identity(cid, frozenset(self.cfg.client_roles), service_principal_id(cid))

    def tenant_ok(self, tenant: str) -> bool:
        """Whether `tenant` (GUID or verified domain) names the emulated tenant."""
        t = tenant.lower()
        return t == self.cfg.tenant_id.lower() or t in {d.lower() for d in self.cfg.domains}

    def discovery(self, origin: str, tenant: str) -> dict[str, Any]:
        """The v2.0 OpenID configuration document msal reads before asking for a token."""
        tid = self.cfg.tenant_id
        return {
            "token_endpoint": f"{origin}/{tid}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{origin}/{tid}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{origin}/{tid}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{origin}/oidc/userinfo",
            "authorization_endpoint": f"{origin}/{tid}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{origin}/{tid}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{origin}/{tid}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "ver"],
            "kerberos_endpoint": f"{origin}/{tid}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }

    def token(self, tenant: str, form: Mapping[str, str]) -> dict[str, Any]:
        """The client-credentials grant: a token response, or AuthError as Entra ID words it."""
        if not self.tenant_ok(tenant):
            raise AuthError(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.")
        grant = form.get("grant_type")
        if grant != "client_credentials":
            raise AuthError(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        client = form.get("client_id", "")
        spec = self.client(client)
        if spec is None:
            raise AuthError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client}' was not found in the directory.",
            )
        secret = form.get("client_secret")
        if secret is None:
            raise AuthError(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following "
                "parameter: 'client_assertion' or 'client_secret'.",
            )
        if not hmac.compare_digest(secret.encode(), spec.client_secret.encode()):
            raise AuthError(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret "
                "being sent in the request is the client secret value, not the client secret ID.",
            )
        scope = form.get("scope", "")
        if scope not in ACCEPTED_SCOPES:
            raise AuthError(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. "
                "Client credential flows must have a scope value with /.default suffixed to the "
                "resource identifier (application ID URI).",
            )
        lifetime = int(self.cfg.token_lifetime)
        return {
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": self.issue(lifetime, spec.client_id),
        }

    def issue(self, lifetime: float | None = None, client_id: str | None = None) -> str:
        """A signed access token for a configured app, the default one unless `client_id` names
        another (tests may call this directly). Its `roles` claim holds that app's permissions."""
        now = int(self.clock.now())
        life = int(self.cfg.token_lifetime if lifetime is None else lifetime)
        tid = self.cfg.tenant_id
        spec = self.client(client_id or self.cfg.client_id)
        if spec is None:
            raise ValueError(f"no client {client_id!r} is configured")
        header = {"typ": "JWT", "alg": "HS256", "kid": "idsync-emulator"}
        payload = {
            "aud": GRAPH_RESOURCE,
            "iss": f"https://sts.windows.net/{tid}/",
            "iat": now,
            "nbf": now,
            "exp": now + life,
            "appid": spec.client_id,
            "appidacr": "1",
            "idtyp": "app",
            "oid": service_principal_id(spec.client_id),
            "roles": list(spec.roles),
            "sub": service_principal_id(spec.client_id),
            "tid": tid,
            "ver": "1.0",
            "uti": _b64(os.urandom(12)),
        }
        signing = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(payload))}"
        sig = hmac.new(self.key, signing.encode(), hashlib.sha256).digest()
        return f"{signing}.{_b64(sig)}"

    def verify(self, authorization: str | None) -> Identity:
        """Who a valid `Authorization: Bearer` header speaks for, or Graph's 401."""
        if not authorization or not authorization.startswith("Bearer ") or not authorization[7:].strip():
            raise unauthorized("Access token is empty.")
        token = authorization[7:].strip()
        now = self.clock.now()
        hit = self._cache.get(token)
        if hit is not None:
            if now >= hit[0]:
                raise unauthorized("Lifetime validation failed, the token is expired.")
            return hit[1]
        parts = token.split(".")
        if len(parts) != 3:
            raise unauthorized("IDX14100: JWT is not well formed, there are no dots (.).")
        try:
            payload = orjson.loads(_unb64(parts[1]))
            sig = _unb64(parts[2])
        except (ValueError, orjson.JSONDecodeError):
            raise unauthorized("Access token validation failure. Invalid token.") from None
        good = hmac.new(self.key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(sig, good):
            raise unauthorized("Access token validation failure. Invalid signature.")
        if payload.get("aud") not in (GRAPH_RESOURCE, GRAPH_RESOURCE + "/", GRAPH_APP_ID):
            raise unauthorized("Access token validation failure. Invalid audience.")
        if payload.get("tid") != self.cfg.tenant_id:
            raise GraphError(
                401, "InvalidAuthenticationToken", "Access token validation failure. Invalid tenant."
            )
        exp = float(payload.get("exp", 0))
        if now >= exp:
            raise unauthorized("Lifetime validation failed, the token is expired.")
        if len(self._cache) > 10_000:
            self._cache.clear()
        roles = payload.get("roles") or []
        ident = Identity(
            str(payload.get("appid", "")),
            frozenset(str(r) for r in roles if isinstance(r, str)),
            str(payload.get("oid", "")),
        )
        self._cache[token] = (exp, ident)
        return ident
