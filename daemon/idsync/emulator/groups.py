"""`/groups`: security groups, members and `$ref` links — hard delete, as Graph does for them."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from idsync.emulator.call import Call, Reply
from idsync.emulator.errors import (
    GraphError,
    bad_request,
    check_cloud_writable,
    invalid_object_id,
    invalid_value,
    not_found,
)
from idsync.emulator.listing import link, list_objects
from idsync.emulator.model import GROUP_RELATIONS, ODATA_TYPE, DirObject
from idsync.emulator.odata import decode_token, encode_token, parse_select, parse_top
from idsync.emulator.schema import check_select, clean_body, render
from idsync.emulator.store import iso_now

if TYPE_CHECKING:
    from idsync.emulator.core import Emulator

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_REF = re.compile(
    r"^https?://[^/]+/(?:v1\.0|beta)/(?:directoryObjects|users|groups|servicePrincipals)/([^/?#]+)$"
)
_NICK_BAD = re.compile(r"[@()\\\[\]\";:.<>,\s]")
MAX_BINDS = 20
ALREADY_MEMBER = (
    "One or more added object references already exist for the following modified properties: 'members'."
)
# A $ref to an object that has not replicated yet: docs-contrib api-reference/v1.0/api/
# group-post-members.md documents this 400 for objects created a moment ago and says to retry
# after a short delay (Graph's eventual consistency); the emulator answers it, not a 404.
NOT_REPLICATED = "The source resource object or one of the objects being referenced don't exist."
NOT_MEMBER = (
    "One or more removed object references do not exist for the following modified properties: 'members'."
)


def find_group(em: Emulator, ident: str) -> DirObject:
    """A live group by id; a non-GUID is 400 and an unknown GUID 404, as in Graph."""
    if not GUID.match(ident):
        raise invalid_object_id(ident)
    obj = em.store.live("group", ident)
    if obj is None:
        raise not_found(ident)
    return obj


def ref_id(url: Any, prop: str = "members") -> str:
    """The object id inside an `@odata.id` / `@odata.bind` URL."""
    m = _REF.match(url) if isinstance(url, str) else None
    if not m:
        raise bad_request(f"Invalid URL format specified in @odata.bind for {prop}")
    return m.group(1)


def _resolve_binds(em: Emulator, binds: dict[str, Any], group: DirObject | None) -> list[DirObject]:
    """Validate `members@odata.bind` / `owners@odata.bind` (all or nothing); returns new members."""
    total = 0
    members: list[DirObject] = []
    for rel, urls in binds.items():
        if rel not in ("members", "owners"):
            raise GraphError(
                400,
                "BadRequest",
                f"The property '{rel}@odata.bind' does not exist on type "
                "'microsoft.graph.group'. Make sure to only use property names that are defined by the type.",
            )
        if not isinstance(urls, list):
            raise bad_request(f"Invalid value for {rel}@odata.bind: an array of URLs is required.")
        total += len(urls)
        seen: set[str] = set()
        for u in urls:
            mid = ref_id(u, rel)
            obj = em.store.live(None, mid)
            if obj is None:
                raise _missing(em, mid)
            if rel == "owners" and obj.kind != "user":
                raise bad_request("Invalid object type for owners: only users can own a security group.")
            if rel == "members":
                if mid in seen:
                    raise bad_request(ALREADY_MEMBER)
                if group is not None and mid in group.members:
                    if em.cfg.bind_existing_member == "error":
                        raise bad_request(ALREADY_MEMBER)
                    seen.add(mid)
                    continue  # "ignore": the member already there stays, the others are added
                if group is not None and mid == group.id:
                    raise bad_request("A group cannot be a member of itself.")
                seen.add(mid)
                members.append(obj)
    if total > MAX_BINDS:
        raise bad_request(
            f"The request contains {total} references to add; at most {MAX_BINDS} members and owners can be "
            "added in one request."
        )
    return members


def _missing(em: Emulator, mid: str) -> GraphError:
    """A referenced object the directory does not show: unknown, or created but not replicated."""
    if em.store.replicating(mid) and em.cfg.unreplicated_member == "bad_request":
        return bad_request(NOT_REPLICATED)
    return not_found(mid)


def _check_values(props: dict[str, Any]) -> None:
    if "displayName" in props:
        dn = props["displayName"]
        if not isinstance(dn, str) or not dn.strip() or len(dn) > 256:
            raise invalid_value("displayName", "Group")
    if "mailNickname" in props:
        nick = props["mailNickname"]
        if (
            not isinstance(nick, str)
            or not nick
            or len(nick) > 64
            or _NICK_BAD.search(nick)
            or any(ord(c) > 127 for c in nick)
        ):
            raise invalid_value("mailNickname", "Group")


def create_group(em: Emulator, call: Call) -> Reply:
    """POST /groups -> 201 (security groups: mailEnabled false, securityEnabled true)."""
    props, binds = clean_body("group", call.json(), em.store.extensions)
    for name in ("displayName", "mailEnabled", "mailNickname", "securityEnabled"):
        if props.get(name) is None:
            raise invalid_value(name, "Group")
    types = props.get("groupTypes") or []
    if "Unified" in types or "DynamicMembership" in types:
        raise bad_request(
            "Microsoft 365 and dynamic groups are not emulated: the idsync Graph emulator "
            "models security groups (groupTypes []).",
            code="Request_BadRequest",
        )
    if types:
        raise invalid_value("groupTypes", "Group")
    if props["mailEnabled"] or not props["securityEnabled"]:
        raise bad_request(
            "Creating mail-enabled security groups or distribution groups through Microsoft "
            "Graph is not supported."
        )
    _check_values(props)
    members = _resolve_binds(em, binds, None)
    st = em.store
    props["groupTypes"] = []
    props["createdDateTime"] = iso_now(st)
    props["renewedDateTime"] = props["createdDateTime"]
    props["securityIdentifier"] = "S-1-12-1-" + "-".join(
        str(uuid.uuid4().int >> (96 - 32 * i) & 0xFFFFFFFF) for i in range(4)
    )
    props.setdefault("visibility", None)
    g = st.add("group", props)
    for m in members:
        st.add_member(g, m)
    body = {"@odata.context": f"{call.base_url}/$metadata#groups/$entity", **render(g, None)}
    return Reply(201, body, {"Location": f"{call.base_url}/groups/{g.id}"})


def get_group(em: Emulator, call: Call, ident: str) -> Reply:
    """GET /groups/{id}."""
    g = find_group(em, ident)
    select = parse_select(call.query)
    select = check_select(
        "group", select, em.store.extensions, GROUP_RELATIONS, em.cfg.unregistered_extension_query == "ignore"
    )
    view = em.store.visible(g)
    return Reply(200, {"@odata.context": f"{call.base_url}/$metadata#groups/$entity", **render(view, select)})


def list_groups(em: Emulator, call: Call) -> Reply:
    """GET /groups."""
    return list_objects(em, call, "group", GROUP_RELATIONS)


def patch_group(em: Emulator, call: Call, ident: str) -> Reply:
    """PATCH /groups/{id} -> 204, including `members@odata.bind` (at most 20, all or nothing)."""
    g = find_group(em, ident)
    props, binds = clean_body("group", call.json(), em.store.extensions)
    check_cloud_writable(g.props, [*props, *(f"{b}@odata.bind" for b in binds)])
    for name in ("displayName", "mailNickname", "mailEnabled", "securityEnabled"):
        if name in props and props[name] is None:
            raise invalid_value(name, "Group")
    if props.get("mailEnabled") or props.get("securityEnabled") is False:
        raise bad_request("Changing a security group to mail-enabled or non-security is not supported.")
    if props.get("groupTypes"):
        raise invalid_value("groupTypes", "Group")
    _check_values(props)
    members = _resolve_binds(em, binds, g)
    st = em.store
    changed = [k for k, v in props.items() if g.props.get(k) != v]
    if changed:
        st.will_change(g)
        g.props.update(props)
        st.touch(g, changed)
    for m in members:
        st.add_member(g, m)
    return Reply(204)


def delete_group(em: Emulator, call: Call, ident: str) -> Reply:
    """DELETE /groups/{id} -> 204; security groups are deleted permanently at once."""
    g = find_group(em, ident)
    check_cloud_writable(g.props)
    em.store.purge(g)
    return Reply(204)


def list_members(em: Emulator, call: Call, ident: str, refs: bool = False) -> Reply:
    """GET /groups/{id}/members (or `/members/$ref`), paged like Graph (100 default, 999 max)."""
    g = em.store.visible(find_group(em, ident))
    q = dict(call.query)
    after = 0
    tok = q.pop("$skiptoken", None)
    if tok is not None:
        data = decode_token(tok)
        if not data or data.get("k") != f"members:{g.id}":
            raise bad_request("Invalid $skiptoken.", code="BadRequest")
        after = int(data["c"])
    select = parse_select(q)
    top = parse_top(q, 100, 999)
    value: list[dict[str, Any]] = []
    last = after
    more = False
    for mid, seq in g.members.items():
        if seq <= after:
            continue
        if len(value) >= top:
            more = True
            break
        m = em.store.objects.get(mid)
        if m is None:
            continue  # purged after the replicated version was taken
        m = em.store.visible(m)
        if refs:
            value.append({"@odata.id": f"{call.base_url}/directoryObjects/{mid}"})
        else:
            value.append({"@odata.type": ODATA_TYPE[m.kind], **render(m, select)})
        last = seq
    body: dict[str, Any] = {"@odata.context": f"{call.base_url}/$metadata#directoryObjects", "value": value}
    if more:
        q["$skiptoken"] = encode_token({"k": f"members:{g.id}", "c": last})
        body["@odata.nextLink"] = link(
            call.base_url, f"/groups/{g.id}/members" + ("/$ref" if refs else ""), q
        )
    return Reply(200, body)


def add_member_ref(em: Emulator, call: Call, ident: str) -> Reply:
    """POST /groups/{id}/members/$ref {"@odata.id": ".../directoryObjects/{id}"} -> 204."""
    if em.store.replicating(ident):
        raise bad_request(NOT_REPLICATED)  # a just-created group: Graph's eventual consistency
    g = find_group(em, ident)
    check_cloud_writable(g.props)
    body = call.json()
    mid = ref_id(body.get("@odata.id"))
    m = em.store.live(None, mid)
    if m is None:
        raise _missing(em, mid)
    if mid in g.members:
        raise bad_request(ALREADY_MEMBER)
    if mid == g.id:
        raise bad_request("A group cannot be a member of itself.")
    em.store.add_member(g, m)
    return Reply(204)


def remove_member_ref(em: Emulator, call: Call, ident: str, mid: str) -> Reply:
    """DELETE /groups/{id}/members/{mid}/$ref -> 204; 404 when it is not a member."""
    g = find_group(em, ident)
    check_cloud_writable(g.props)
    if mid not in g.members:
        raise GraphError(404, "Request_ResourceNotFound", NOT_MEMBER)
    em.store.remove_member(g, mid)
    return Reply(204)


def delete_member_object(em: Emulator, call: Call, ident: str, mid: str) -> Reply:
    """DELETE /groups/{id}/members/{mid} without `/$ref` deletes the member object itself, as in Graph."""
    g = find_group(em, ident)
    check_cloud_writable(g.props)
    if mid not in g.members:
        raise not_found(mid)
    m = em.store.objects[mid]
    if m.kind == "user":
        em.store.soft_delete(m)
    else:
        em.store.purge(m)
    return Reply(204)
