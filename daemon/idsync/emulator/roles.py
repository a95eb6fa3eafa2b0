"""Directory roles (`/directoryRoles`), who holds them, and the rule that protects privileged users.

Graph: "In app-only scenarios, the User.ReadWrite.All application permission isn't enough
privilege to delete users with privileged administrative roles. The app must be assigned a
higher privileged administrator role" (docs-contrib: api-reference/v1.0/api/user-delete.md), and
the same for "sensitive user properties, such as accountEnabled, mobilePhone, and otherMails"
(api-reference/v1.0/api/user-update.md, which points to the Entra table "Who can perform
sensitive actions"). The emulator models that table coarsely, see `may_manage`.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from idsync.emulator.call import Call, Reply
from idsync.emulator.config import service_principal_id
from idsync.emulator.errors import GraphError, bad_request, forbidden, not_found
from idsync.emulator.groups import ALREADY_MEMBER, NOT_MEMBER, ref_id
from idsync.emulator.model import ODATA_TYPE, DirObject

if TYPE_CHECKING:
    from idsync.emulator.core import Emulator

# Built-in role templates the emulated tenant has activated (ids are Entra's template ids).
TEMPLATES: dict[str, str] = {
    "Global Administrator": "62e90394-69f5-4237-9190-012177145e10",
    "Privileged Authentication Administrator": "7be44c8a-adaf-4e2a-84d6-ab2649e08a13",
    "Privileged Role Administrator": "e8611ab8-c189-46e8-94e1-60213ab1f814",
    "User Administrator": "fe930be7-5e62-47db-91af-98c3a49a38b1",
    "Authentication Administrator": "c4e39bd9-1100-46d3-8c65-fb160da0071f",
    "Helpdesk Administrator": "729827e3-9c14-49f7-bb1b-9608f156bbb8",
    "Password Administrator": "966707d0-3269-4727-9be2-8c3a10f19b9d",
    "Groups Administrator": "fdd7a751-b60b-444a-984c-02652fe8fa1c",
    "Directory Readers": "88d8e3e3-8f55-4a1e-953a-9b9898b8876b",
    "Guest Inviter": "95e79109-95c0-4d8e-aee3-d01accf2d47b",
    "Message Center Reader": "790c1fb9-7f7d-4f88-86a1-ef1f95c05c1b",
    "Reports Reader": "4a5d8f65-41da-4de4-8968-e035b65339cf",
}
# Holders of only these roles count as non-administrators for sensitive changes (user-update.md,
# 2020 text: "non-administrators or assigned one of the following roles: Directory Readers, Guest
# Inviter, Helpdesk Administrator, Message Center Reader, and Reports Reader").
UNPRIVILEGED = frozenset(
    {
        "Directory Readers",
        "Guest Inviter",
        "Helpdesk Administrator",
        "Message Center Reader",
        "Reports Reader",
    }
)
# What a User Administrator may act on besides those (Entra "Who can perform sensitive actions").
USER_ADMIN_SCOPE = UNPRIVILEGED | {"Password Administrator", "Groups Administrator", "User Administrator"}
# Roles that may act on every user, Global Administrators included.
TOP = frozenset({"Global Administrator", "Privileged Authentication Administrator"})
# Properties Graph treats as sensitive on a privileged user (user-update.md and its role table).
SENSITIVE = frozenset(
    {"accountEnabled", "passwordProfile", "mobilePhone", "businessPhones", "otherMails", "userPrincipalName"}
)


def role_id(em: Emulator, name: str) -> str:
    """The object id of the activated role `name` in this tenant (stable across runs)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"directoryRole:{em.cfg.tenant_id}:{TEMPLATES[name]}"))


def _by_id(em: Emulator) -> dict[str, str]:
    return {role_id(em, n): n for n in TEMPLATES}


def roles_of(em: Emulator, principal: str) -> set[str]:
    """The names of the roles a user or service principal holds."""
    names = _by_id(em)
    return {
        names[rid] for rid, members in em.store.role_members.items() if principal in members and rid in names
    }


def may_manage(caller: set[str], target: set[str]) -> bool:
    """Whether a caller holding roles `caller` may change a holder of `target`'s sensitive data."""
    if target <= UNPRIVILEGED or caller & TOP:
        return True
    return "User Administrator" in caller and target <= USER_ADMIN_SCOPE


def check_sensitive_change(em: Emulator, call: Call, user: DirObject, props: dict[str, Any] | None) -> None:
    """403 when an app without a higher administrator role deletes a privileged user (`props`
    None) or changes one of its sensitive properties."""
    if props is not None and not (SENSITIVE & props.keys()):
        return
    target = roles_of(em, user.id)
    if not target or may_manage(roles_of(em, call.principal), target):
        return
    raise forbidden()


def _principals(em: Emulator) -> dict[str, str]:
    """Service principal id -> app display name, for every configured client."""
    return {service_principal_id(c.client_id): c.display_name or c.client_id for c in em.cfg.clients()}


def _role_view(em: Emulator, name: str) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.directoryRole",
        "id": role_id(em, name),
        "deletedDateTime": None,
        "description": f"{name} (emulated)",
        "displayName": name,
        "roleTemplateId": TEMPLATES[name],
    }


def find_role(em: Emulator, segment: str) -> str:
    """The role name for `{id}` or `(roleTemplateId='{id}')` addressing, or Graph's 404."""
    ident = segment
    if segment.startswith("directoryRoles(") or segment.startswith("("):
        inner = segment[segment.index("(") + 1 : -1]
        key, _, val = inner.partition("=")
        if key.strip() != "roleTemplateId":
            raise bad_request(f"Invalid key segment '{inner}'.", code="BadRequest")
        tid = val.strip().strip("'")
        for name, t in TEMPLATES.items():
            if t == tid:
                return name
        raise not_found(tid)
    found = _by_id(em).get(ident)
    if found is None:
        raise not_found(ident)
    return found


def list_roles(em: Emulator, call: Call) -> Reply:
    """GET /directoryRoles (directoryrole-list.md)."""
    value = [_role_view(em, n) for n in TEMPLATES]
    return Reply(200, {"@odata.context": f"{call.base_url}/$metadata#directoryRoles", "value": value})


def get_role(em: Emulator, call: Call, segment: str) -> Reply:
    """GET /directoryRoles/{id} or /directoryRoles(roleTemplateId='{id}') (directoryrole-get.md)."""
    name = find_role(em, segment)
    return Reply(
        200, {"@odata.context": f"{call.base_url}/$metadata#directoryRoles/$entity", **_role_view(em, name)}
    )


def _member_view(em: Emulator, mid: str, refs: bool, base_url: str) -> dict[str, Any] | None:
    if refs:
        return {"@odata.id": f"{base_url}/directoryObjects/{mid}"}
    sps = _principals(em)
    if mid in sps:
        return {"@odata.type": "#microsoft.graph.servicePrincipal", "id": mid, "displayName": sps[mid]}
    o = em.store.live(None, mid)
    if o is None:
        return None
    v = em.store.visible(o)
    return {
        "@odata.type": ODATA_TYPE[o.kind],
        "id": mid,
        "displayName": v.props.get("displayName"),
        **({"userPrincipalName": v.props.get("userPrincipalName")} if o.kind == "user" else {}),
    }


def list_role_members(em: Emulator, call: Call, segment: str, refs: bool = False) -> Reply:
    """GET /directoryRoles/{id}/members[/$ref] (directoryrole-list-members.md)."""
    rid = role_id(em, find_role(em, segment))
    value = [
        v
        for mid in em.store.role_members.get(rid, [])
        if (v := _member_view(em, mid, refs, call.base_url)) is not None
    ]
    return Reply(200, {"@odata.context": f"{call.base_url}/$metadata#directoryObjects", "value": value})


def add_role_member(em: Emulator, call: Call, segment: str) -> Reply:
    """POST /directoryRoles/{id}/members/$ref -> 204 (directoryrole-post-members.md); a user or a
    service principal."""
    rid = role_id(em, find_role(em, segment))
    mid = ref_id(call.json().get("@odata.id"))
    assign(em, rid, mid)
    return Reply(204)


def assign(em: Emulator, rid: str, mid: str) -> None:
    """Give the role `rid` to user or service principal `mid` (400 if it already holds it)."""
    if mid not in _principals(em):
        o = em.store.live("user", mid)
        if o is None:
            raise not_found(mid)
    members = em.store.role_members.setdefault(rid, [])
    if mid in members:
        raise bad_request(ALREADY_MEMBER)
    members.append(mid)


def remove_role_member(em: Emulator, call: Call, segment: str, mid: str) -> Reply:
    """DELETE /directoryRoles/{id}/members/{mid}/$ref -> 204 (directoryrole-delete-member.md)."""
    rid = role_id(em, find_role(em, segment))
    members = em.store.role_members.get(rid, [])
    if mid not in members:
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            NOT_MEMBER,
        )
    members.remove(mid)
    return Reply(204)


def principal_member_of(em: Emulator, call: Call, principal: str) -> Reply:
    """GET /servicePrincipals/{id}/memberOf: the directory roles a service principal holds (the
    emulator puts service principals in no group) (serviceprincipal-list-memberof.md)."""
    value = [_role_view(em, name) for name in sorted(roles_of(em, principal))]
    return Reply(200, {"@odata.context": f"{call.base_url}/$metadata#directoryObjects", "value": value})


def member_of(em: Emulator, call: Call, user: DirObject) -> Reply:
    """GET /users/{id}/memberOf: its groups and directory roles (user-list-memberof.md)."""
    value: list[dict[str, Any]] = []
    for gid in sorted(em.store.visible(user).member_of):
        g = em.store.live("group", gid)
        if g is not None:
            v = em.store.visible(g)
            value.append(
                {
                    "@odata.type": "#microsoft.graph.group",
                    "id": gid,
                    "displayName": v.props.get("displayName"),
                }
            )
    for name in sorted(roles_of(em, user.id)):
        value.append(_role_view(em, name))
    return Reply(200, {"@odata.context": f"{call.base_url}/$metadata#directoryObjects", "value": value})
