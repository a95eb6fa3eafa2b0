"""`/users`: create, read, update, soft delete — with Graph's validation and conflicts."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from idsync.emulator import roles
from idsync.emulator.call import Call, Reply
from idsync.emulator.errors import (
    GraphError,
    bad_request,
    check_cloud_writable,
    conflict,
    invalid_value,
    not_found,
)
from idsync.emulator.groups import ref_id
from idsync.emulator.listing import list_objects
from idsync.emulator.model import ODATA_TYPE, USER_RELATIONS, DirObject
from idsync.emulator.odata import parse_select
from idsync.emulator.schema import check_select, clean_body, render
from idsync.emulator.store import iso_now

if TYPE_CHECKING:
    from idsync.emulator.core import Emulator

_UPN_LOCAL = re.compile(r"^[A-Za-z0-9'.\-_!#^~]+$")
_NICK_BAD = re.compile(r"[@()\\\[\]\";:<>,\s]")
_IMMUTABLE_BAD = re.compile(r"[$_]")
REQUIRED = ("accountEnabled", "displayName", "mailNickname", "userPrincipalName")
# employeeLeaveDateTime needs User-LifeCycleInfo permissions the emulator does not model.
DATE_TIME_OFFSETS = ("employeeHireDate",)


def _check_upn(em: Emulator, upn: Any) -> None:
    if not isinstance(upn, str) or upn.count("@") != 1:
        raise invalid_value("userPrincipalName", "User")
    local, domain = upn.split("@")
    if (
        not local
        or len(local) > 64
        or not _UPN_LOCAL.match(local)
        or local.startswith(".")
        or local.endswith(".")
    ):
        raise invalid_value("userPrincipalName", "User")
    if domain.lower() not in {d.lower() for d in em.cfg.domains}:
        raise bad_request(
            "The domain portion of the userPrincipalName property is invalid. You must use one of the "
            "verified domain names in your organization.",
            details=[{"code": "InvalidValue", "message": "", "target": "userPrincipalName"}],
        )


def _check_password(pp: Any) -> None:
    pwd = pp.get("password") if isinstance(pp, dict) else None
    if not isinstance(pwd, str) or not pwd:
        raise bad_request("A password must be specified to create a new user.")
    classes = sum(
        (
            any(c.islower() for c in pwd),
            any(c.isupper() for c in pwd),
            any(c.isdigit() for c in pwd),
            any(not c.isalnum() for c in pwd),
        )
    )
    # entra-docs docs/identity/authentication/concept-sspr-policy.md, "Microsoft Entra password
    # policies": 8 to 256 characters, three of the four kinds, "Characters not allowed: Unicode".
    if not 8 <= len(pwd) <= 256 or classes < 3 or not pwd.isascii():
        raise bad_request(
            "The specified password does not comply with password complexity requirements. Please provide "
            "a different password."
        )


def _check_values(em: Emulator, props: dict[str, Any]) -> None:
    if "userPrincipalName" in props:
        _check_upn(em, props["userPrincipalName"])
    if "displayName" in props:
        dn = props["displayName"]
        if not isinstance(dn, str) or not dn.strip() or len(dn) > 256:
            raise invalid_value("displayName", "User")
    if "mailNickname" in props:
        nick = props["mailNickname"]
        # user.md: at most 64 characters. Microsoft lists no characters for a user's alias; the
        # emulator applies the group rule (group-post-groups.md: ASCII 0-127 without
        # @ () \ [] " ; : <> , and space) but allows '.', which user aliases use everywhere.
        if (
            not isinstance(nick, str)
            or not nick
            or len(nick) > 64
            or _NICK_BAD.search(nick)
            or any(ord(c) > 127 for c in nick)
        ):
            raise invalid_value("mailNickname", "User")
    if "accountEnabled" in props and props["accountEnabled"] is None:
        raise invalid_value("accountEnabled", "User")
    imm = props.get("onPremisesImmutableId")
    if imm is not None and (_IMMUTABLE_BAD.search(imm) or len(imm) > 256):
        raise invalid_value("onPremisesImmutableId", "User")
    mail = props.get("mail")
    if mail is not None and (mail.count("@") != 1 or " " in mail):
        raise invalid_value("mail", "User")
    phones = props.get("businessPhones")
    if phones is not None and len(phones) > 1:
        # user.md: "Although this is a string collection, only one number can be set for this
        # property." Microsoft gives no message for a second number; this is the directory's
        # generic one for a refused value.
        raise invalid_value("businessPhones", "User")
    for name in DATE_TIME_OFFSETS:
        if props.get(name) is not None:
            props[name] = _utc_timestamp(name, props[name])
    if props.get("passwordProfile") is not None:
        pp = dict(props["passwordProfile"])
        if "password" in pp:
            _check_password(pp)
            del pp["password"]  # never keep secrets in state
        props["passwordProfile"] = pp


def _utc_timestamp(name: str, value: Any) -> str:
    """A DateTimeOffset as Graph keeps and returns it: "The Timestamp type represents date and time
    information using ISO 8601 format and is always in UTC time. For example, midnight UTC on Jan 1,
    2014 is 2014-01-01T00:00:00Z" (docs-contrib api-reference/v1.0/resources/user.md). A value
    written with another offset or fractional seconds reads back normalised — which a client that
    compares what it wrote with what it reads must expect."""
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None
    except ValueError:
        dt = None
    if dt is None or dt.tzinfo is None:  # Edm.DateTimeOffset carries an offset
        raise invalid_value(name, "User")
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _with_proxies(props: dict[str, Any]) -> None:
    # Exchange stamps the primary SMTP address from `mail`; that is where real proxy conflicts come from.
    if "mail" in props:
        props["proxyAddresses"] = [f"SMTP:{props['mail']}"] if props["mail"] else []


def create_user(em: Emulator, call: Call) -> Reply:
    """POST /users -> 201 and the user."""
    props, binds = clean_body("user", call.json(), em.store.extensions)
    if binds:
        raise GraphError(
            400,
            "BadRequest",
            f"The property '{next(iter(binds))}' does not exist on type "
            "'microsoft.graph.user'. Make sure to only use property names that are defined by the type.",
        )
    for name in REQUIRED:
        if props.get(name) is None:
            raise invalid_value(name, "User")
    if not props.get("passwordProfile"):
        raise bad_request("A password must be specified to create a new user.")
    _check_password(props["passwordProfile"])
    _check_values(em, props)
    # user-post-users.md: onPremisesImmutableId "Only needs to be specified when creating a new
    # user account if you are using a federated domain for the user's userPrincipalName"; a
    # missing required property is Graph's invalid-value 400, as for the others above.
    domain = str(props["userPrincipalName"]).rsplit("@", 1)[-1].lower()
    if domain in {d.lower() for d in em.cfg.federated_domains} and not props.get("onPremisesImmutableId"):
        raise invalid_value("onPremisesImmutableId", "User")
    _with_proxies(props)
    st = em.store
    probe = DirObject(id="", kind="user", props=props, seq=0, created_seq=0)
    prop = st.conflict_with("", st.keys_of(probe))
    if prop:
        raise conflict(prop)
    props.setdefault("userType", "Member")
    props["createdDateTime"] = iso_now(st)
    props["securityIdentifier"] = "S-1-12-1-" + "-".join(
        str(uuid.uuid4().int >> (96 - 32 * i) & 0xFFFFFFFF) for i in range(4)
    )
    obj = st.add("user", props)
    body = {"@odata.context": f"{call.base_url}/$metadata#users/$entity", **render(obj, None)}
    return Reply(201, body, {"Location": f"{call.base_url}/users/{obj.id}"})


def find_user(em: Emulator, ident: str) -> DirObject:
    """A live user by id or UPN, or Graph's 404."""
    obj = em.store.user(ident)
    if obj is None:
        raise not_found(ident)
    return obj


def get_user(em: Emulator, call: Call, ident: str) -> Reply:
    """GET /users/{id | userPrincipalName}."""
    obj = find_user(em, ident)
    select = parse_select(call.query)
    select = check_select(
        "user", select, em.store.extensions, USER_RELATIONS, em.cfg.unregistered_extension_query == "ignore"
    )
    view = em.store.visible(obj)
    return Reply(200, {"@odata.context": f"{call.base_url}/$metadata#users/$entity", **render(view, select)})


def list_users(em: Emulator, call: Call) -> Reply:
    """GET /users."""
    return list_objects(em, call, "user", USER_RELATIONS)


def patch_user(em: Emulator, call: Call, ident: str) -> Reply:
    """PATCH /users/{id | upn} -> 204; only changed values count as changes for delta."""
    obj = find_user(em, ident)
    props, binds = clean_body("user", call.json(), em.store.extensions)
    check_cloud_writable(obj.props, props)
    roles.check_sensitive_change(em, call, obj, props)
    if binds:
        raise GraphError(
            400,
            "BadRequest",
            f"The property '{next(iter(binds))}' does not exist on type "
            "'microsoft.graph.user'. Make sure to only use property names that are defined by the type.",
        )
    if "displayName" in props and props["displayName"] is None:
        raise invalid_value("displayName", "User")
    for name in ("mailNickname", "userPrincipalName"):
        if name in props and props[name] is None:
            raise invalid_value(name, "User")
    _check_values(em, props)
    if "onPremisesExtensionAttributes" in props:
        merged = dict(obj.props.get("onPremisesExtensionAttributes") or {})
        merged.update(
            {k: v for k, v in (props["onPremisesExtensionAttributes"] or {}).items() if not k.startswith("@")}
        )
        props["onPremisesExtensionAttributes"] = merged
    _with_proxies(props)
    st = em.store
    new = {**obj.props, **props}
    probe = DirObject(id=obj.id, kind="user", props=new, seq=0, created_seq=0)
    prop = st.conflict_with(obj.id, st.keys_of(probe))
    if prop:
        raise conflict(prop)
    changed = [k for k, v in props.items() if obj.props.get(k) != v and k != "passwordProfile"]
    if changed or "passwordProfile" in props:
        st.will_change(obj)
        st.unindex(obj)
        obj.props.update(props)
        st.index(obj)
        st.touch(obj, changed)
    return Reply(204)


def delete_user(em: Emulator, call: Call, ident: str) -> Reply:
    """DELETE /users/{id | upn} -> 204; the user goes to /directory/deletedItems for 30 days."""
    obj = find_user(em, ident)
    check_cloud_writable(obj.props)
    roles.check_sensitive_change(em, call, obj, None)
    em.store.soft_delete(obj)
    return Reply(204)


def _no_manager() -> GraphError:
    # What Graph answers for a reference that is not there (the same text as an unknown id).
    return not_found("manager")


def get_manager(em: Emulator, call: Call, ident: str) -> Reply:
    """GET /users/{id}/manager -> the manager (docs-contrib api-reference/v1.0/api/user-list-manager.md);
    404 when the user has none."""
    obj = em.store.visible(find_user(em, ident))
    m = em.store.live("user", obj.manager) if obj.manager else None
    if m is None:
        raise _no_manager()
    select = parse_select(call.query)
    select = check_select(
        "user", select, em.store.extensions, USER_RELATIONS, em.cfg.unregistered_extension_query == "ignore"
    )
    view = em.store.visible(m)
    body = {"@odata.context": f"{call.base_url}/$metadata#directoryObjects/$entity"}
    return Reply(200, {**body, "@odata.type": ODATA_TYPE["user"], **render(view, select)})


def put_manager_ref(em: Emulator, call: Call, ident: str) -> Reply:
    """PUT /users/{id}/manager/$ref {"@odata.id": ".../directoryObjects/{id}"} -> 204
    (docs-contrib api-reference/v1.0/api/user-post-manager.md); the manager must exist (404)."""
    obj = find_user(em, ident)
    check_cloud_writable(obj.props)
    body = call.json()
    mid = ref_id(body.get("@odata.id") if isinstance(body, dict) else None, "manager")
    m = em.store.live("user", mid)
    if m is None:
        raise not_found(mid)
    if m.id == obj.id:
        # Microsoft documents no message; a user cannot manage itself in any directory.
        raise bad_request("A user cannot be their own manager.")
    em.store.set_manager(obj, m.id)
    return Reply(204)


def delete_manager_ref(em: Emulator, call: Call, ident: str) -> Reply:
    """DELETE /users/{id}/manager/$ref -> 204 (docs-contrib api-reference/v1.0/api/user-delete-manager.md);
    404 when the user has no manager (Microsoft's page is silent; Graph answers as for a missing
    reference)."""
    obj = find_user(em, ident)
    check_cloud_writable(obj.props)
    if obj.manager is None:
        raise _no_manager()
    em.store.set_manager(obj, None)
    return Reply(204)
