"""What idsync needs to know about the tenant, and the one thing it sets up there itself.

Reads: the app's permissions (the `roles` claim of its token), the tenant's domains, whether the
group anchor extension is registered, the app's own directory roles and a user's directory roles.
Write: registering the group anchor extension (`idsync preflight --fix`), idempotently.
Every shape here is Graph's documented one (pages cited beside each call).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
import structlog

from idsync.sync.tenant import TenantDomains
from idsync.target.client import TRANSPORT_ERRORS, GraphClient, GraphResponse
from idsync.target.errors import GraphRequestError, GraphUnavailable

log = structlog.get_logger(__name__)

DIRECTORY_ROLE = "#microsoft.graph.directoryRole"
_EXTENSION = re.compile(r"^extension_([0-9a-fA-F]{32})_([A-Za-z0-9_]+)$")


@dataclass(frozen=True)
class Requirement:
    """An application permission idsync needs, satisfied by any of `any_of` (the page's least
    privileged permission or a higher one)."""

    what: str
    any_of: tuple[str, ...]
    fatal: bool  # without it idsync cannot do its job (vs. one feature is missing)
    page: str  # the Graph page whose permissions table says so


# Application permissions, per the "Permissions" table of each page (docs-contrib
# api-reference/v1.0/api/<page>.md, learn.microsoft.com/graph/api/<page>).
REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement(
        "create, update and delete users",
        ("User.ReadWrite.All", "Directory.ReadWrite.All"),
        True,
        "user-post-users, user-update, user-delete",
    ),
    Requirement(
        "create and update groups and their members",
        ("Group.ReadWrite.All", "Directory.ReadWrite.All"),
        True,
        "group-post-groups, group-post-members",
    ),
    Requirement(
        "read the tenant's domains (UPN suffix check and fallback)",
        ("Domain.Read.All", "Domain.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"),
        False,
        "domain-list",
    ),
    Requirement(
        "register the group anchor extension (preflight --fix)",
        ("Application.ReadWrite.OwnedBy", "Application.ReadWrite.All", "Directory.ReadWrite.All"),
        False,
        "application-post-extensionproperty",
    ),
    Requirement(
        "read the app's and users' directory roles",
        (
            "RoleManagement.Read.Directory",
            "Application.Read.All",
            "Application.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        ),
        False,
        "serviceprincipal-list-memberof, user-list-memberof",
    ),
)

# Directory roles that may change or delete any user, administrators included; User
# Administrator and Helpdesk Administrator may only manage users holding limited roles
# (user-update.md: sensitive properties of administrators; user-delete.md).
PRIVILEGED_MANAGERS = frozenset({"Global Administrator", "Privileged Authentication Administrator"})
LIMITED_MANAGERS = frozenset({"User Administrator", "Helpdesk Administrator", "Authentication Administrator"})


def token_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT access token, read without verifying it (Graph verifies it; idsync only
    wants to know what it says)."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    pad = "=" * (-len(parts[1]) % 4)
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(parts[1] + pad))
    except (ValueError, orjson.JSONDecodeError):
        return {}
    return payload if isinstance(payload, dict) else {}


def token_roles(token: str) -> tuple[str, ...]:
    """The application permissions a token carries (its `roles` claim)."""
    roles = token_claims(token).get("roles") or []
    return tuple(str(r) for r in roles) if isinstance(roles, list) else ()


def missing(roles: tuple[str, ...] | frozenset[str]) -> list[Requirement]:
    """The requirements `roles` do not satisfy."""
    have = set(roles)
    return [r for r in REQUIREMENTS if not have.intersection(r.any_of)]


@dataclass(frozen=True)
class ExtensionName:
    """A directory extension property name: `extension_<app id without dashes>_<name>`."""

    full: str
    app_id: str  # with dashes: addresses `applications(appId='…')`
    name: str

    @classmethod
    def parse(cls, full: str) -> ExtensionName | None:
        """None when `full` is not a name Graph could have given (e.g. the emulator's default)."""
        m = _EXTENSION.fullmatch(full)
        if m is None:
            return None
        h = m.group(1).lower()
        app = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        return cls(full, app, m.group(2))


@dataclass(frozen=True)
class ExtensionState:
    """Whether an extension property is registered, and for which object types."""

    name: str
    registered: bool
    target_objects: tuple[str, ...] = ()

    def serves(self, target: str) -> bool:
        return self.registered and target in self.target_objects


class TenantReader:
    """Reads (and the one write: the extension) through the process's Graph client."""

    def __init__(self, client: GraphClient) -> None:
        self.client = client

    async def token(self) -> str | None:
        """An access token for Graph (None when the connector is anonymous); raises
        GraphAuthError when the identity platform refuses one."""
        tokens = self.client.tokens
        if tokens is None:
            return None
        return await tokens.get_authorization_token(self.client.base_url + "/")

    async def _post(self, what: str, path: str, body: bytes) -> GraphResponse:
        """One POST; a dropped connection is GraphUnavailable (the caller says so, nothing retries
        a registration whose outcome is unknown: the next --fix looks first)."""
        try:
            return await self.client.send("POST", path, body=body)
        except TRANSPORT_ERRORS as e:
            raise GraphUnavailable(what, f"{type(e).__name__}: {e}") from e

    async def _get_all(self, path: str, what: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        link: str | None = path
        while link:
            resp = await self.client.get(link, what=what)
            body = _ok(resp, what)
            items.extend(v for v in body.get("value", []) if isinstance(v, dict))
            link = body.get("@odata.nextLink")
        return items

    async def domains(self) -> TenantDomains:
        """`GET /domains` (docs-contrib api-reference/v1.0/api/domain-list.md): each domain's
        `id`, `isVerified` and `isInitial` (resources/domain.md)."""
        items = await self._get_all("/domains", "list domains")
        return TenantDomains.from_graph(items)

    async def extension(self, name: str) -> ExtensionState:
        """Is `name` registered in the tenant? `POST /directoryObjects/getAvailableExtensionProperties`
        returns "all directory extension definitions that are registered in a directory, including
        through multitenant apps" (api/directoryobject-getavailableextensionproperties.md), so the
        answer does not depend on which app owns it."""
        what = "list registered extension properties"
        resp = await self._post(what, "/directoryObjects/getAvailableExtensionProperties", b"{}")
        body = _ok(resp, what)
        for item in body.get("value", []):
            if isinstance(item, dict) and str(item.get("name", "")).lower() == name.lower():
                targets = tuple(str(t) for t in item.get("targetObjects") or ())
                return ExtensionState(name, True, targets)
        return ExtensionState(name, False)

    async def register_extension(self, name: str, target: str = "Group") -> str:
        """Register `name` (a String property for `target`) on the application its name names.

        `POST /applications(appId='{appId}')/extensionProperties` with `name`, `dataType`,
        `targetObjects` → 201 and the extensionProperty, whose `name` is
        `extension_<appId without dashes>_<name>` (api/application-post-extensionproperty.md).
        Idempotent: an extension already registered is left as it is. Returns what happened.
        """
        parsed = ExtensionName.parse(name)
        if parsed is None:
            raise GraphRequestError(
                "register extension",
                0,
                "NotAnExtensionName",
                f"{name} is not extension_<application id without dashes>_<name>: set [target.graph]"
                " client_id (or anchor_extension_attribute / directory_extension_app) to the app"
                " that owns it",
            )
        state = await self.extension(name)
        if state.serves(target):
            return f"{name} already registered for {target}"
        if state.registered:
            raise GraphRequestError(
                "register extension",
                0,
                "WrongTargetObjects",
                f"{name} is registered for {', '.join(state.target_objects) or 'nothing'}, not {target};"
                " an extension's targetObjects cannot be changed: delete it and run preflight --fix again",
            )
        path = f"/applications(appId='{quote(parsed.app_id)}')/extensionProperties"
        body = orjson.dumps({"name": parsed.name, "dataType": "String", "targetObjects": [target]})
        resp = await self._post(f"register extension {name}", path, body)
        if resp.status in (200, 201):
            created = str((resp.json() or {}).get("name") or name)
            log.info("tenant.extension_registered", name=created, app=parsed.app_id)
            return f"{created} registered for {target} on application {parsed.app_id}"
        code, message = resp.error()
        if resp.status == 400 and "already exist" in message.lower():
            return f"{name} already registered"  # a concurrent --fix won the race
        raise GraphRequestError(f"register extension {name}", resp.status, code, message)

    async def app_roles(self, app_id: str) -> tuple[str, ...]:
        """The directory roles the app's service principal holds: `GET
        /servicePrincipals(appId='{appId}')/memberOf` lists "the groups and directory roles that
        this servicePrincipal is a direct member of" (api/serviceprincipal-list-memberof.md)."""
        sp = f"/servicePrincipals(appId='{quote(app_id)}')"
        try:
            return _role_names(await self._get_all(f"{sp}/memberOf", "list the app's directory roles"))
        except GraphRequestError as e:
            if e.status not in (400, 404):
                raise
        # The same answer the long way round: the activated roles and their members
        # (api/directoryrole-list.md, api/directoryrole-list-members.md).
        resp = await self.client.get(sp, what="read the app's service principal")
        sp_id = str(_ok(resp, "read the app's service principal").get("id") or "")
        held = []
        for role in await self._get_all("/directoryRoles", "list directory roles"):
            members = await self._get_all(f"/directoryRoles/{role.get('id')}/members", "list role members")
            if any(m.get("id") == sp_id for m in members):
                held.append(str(role.get("displayName") or role.get("id")))
        return tuple(sorted(held))

    async def user_roles(self, user_id: str) -> tuple[str, ...]:
        """The directory roles a user holds (`GET /users/{id}/memberOf`, api/user-list-memberof.md)."""
        path = f"/users/{quote(user_id)}/memberOf"
        return _role_names(await self._get_all(path, f"list the directory roles of user {user_id}"))


def _role_names(items: list[dict[str, Any]]) -> tuple[str, ...]:
    return tuple(
        sorted(
            str(i.get("displayName") or i.get("id")) for i in items if i.get("@odata.type") == DIRECTORY_ROLE
        )
    )


def _ok(resp: GraphResponse, what: str) -> Mapping[str, Any]:
    if resp.status != 200:
        code, message = resp.error()
        raise GraphRequestError(what, resp.status, code, message)
    body = resp.json()
    return body if isinstance(body, dict) else {}
