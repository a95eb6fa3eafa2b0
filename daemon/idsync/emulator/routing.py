"""Which handler answers which Graph path and method."""

from __future__ import annotations

from typing import TYPE_CHECKING

from idsync.emulator import delta, directory, groups, users
from idsync.emulator.call import Call, Reply
from idsync.emulator.errors import bad_request, method_not_allowed, segment_not_found

if TYPE_CHECKING:
    from idsync.emulator.core import Emulator

DELTA = frozenset({"delta", "delta()", "microsoft.graph.delta()", "microsoft.graph.delta"})
KIND_CAST = {"microsoft.graph.user": "user", "microsoft.graph.group": "group"}


def route(em: Emulator, call: Call) -> Reply:
    """Answer a call that passed auth, faults and throttling. Raises GraphError for Graph errors."""
    segs = call.path.strip("/").split("/") if call.path.strip("/") else []
    m = call.method
    n = len(segs)
    if n == 0:
        raise segment_not_found("")
    head = segs[0]
    if head == "users":
        if n == 1:
            return _pick(m, GET=lambda: users.list_users(em, call), POST=lambda: users.create_user(em, call))
        if n == 2 and segs[1] in DELTA:
            return _pick(m, GET=lambda: delta.delta(em, call, "user"))
        if n == 2:
            ident = segs[1]
            return _pick(
                m,
                GET=lambda: users.get_user(em, call, ident),
                PATCH=lambda: users.patch_user(em, call, ident),
                DELETE=lambda: users.delete_user(em, call, ident),
            )
        raise segment_not_found(segs[2])
    if head == "groups":
        if n == 1:
            return _pick(
                m, GET=lambda: groups.list_groups(em, call), POST=lambda: groups.create_group(em, call)
            )
        if n == 2 and segs[1] in DELTA:
            return _pick(m, GET=lambda: delta.delta(em, call, "group"))
        gid = segs[1]
        if n == 2:
            return _pick(
                m,
                GET=lambda: groups.get_group(em, call, gid),
                PATCH=lambda: groups.patch_group(em, call, gid),
                DELETE=lambda: groups.delete_group(em, call, gid),
            )
        if segs[2] != "members":
            raise segment_not_found(segs[2])
        if n == 3:
            return _pick(m, GET=lambda: groups.list_members(em, call, gid))
        if n == 4 and segs[3] == "$ref":
            return _pick(
                m,
                GET=lambda: groups.list_members(em, call, gid, refs=True),
                POST=lambda: groups.add_member_ref(em, call, gid),
            )
        mid = segs[3]
        if n == 4:
            return _pick(m, DELETE=lambda: groups.delete_member_object(em, call, gid, mid))
        if n == 5 and segs[4] == "$ref":
            return _pick(m, DELETE=lambda: groups.remove_member_ref(em, call, gid, mid))
        raise segment_not_found(segs[-1])
    if head == "directory" and n >= 2 and segs[1] == "deletedItems":
        if n == 2:
            return _pick(m, GET=lambda: directory.list_deleted(em, call, None))
        if n == 3 and segs[2] in KIND_CAST:
            kind = KIND_CAST[segs[2]]
            return _pick(m, GET=lambda: directory.list_deleted(em, call, kind))
        oid = segs[2]
        if n == 3:
            return _pick(
                m,
                GET=lambda: directory.get_deleted(em, call, oid),
                DELETE=lambda: directory.purge(em, call, oid),
            )
        if n == 4 and segs[3] in ("restore", "microsoft.graph.restore"):
            return _pick(m, POST=lambda: directory.restore(em, call, oid))
        raise segment_not_found(segs[-1])
    if head == "directoryObjects" and n == 2:
        oid = segs[1]
        return _pick(m, GET=lambda: directory.get_directory_object(em, call, oid))
    if head == "domains" and n == 1:
        return _pick(m, GET=lambda: directory.list_domains(em, call))
    if head == "$batch":
        raise bad_request("Nested $batch requests are not supported.", code="BadRequest")
    raise segment_not_found(head)


def _pick(method: str, **handlers: object) -> Reply:
    h = handlers.get(method)
    if h is None:
        raise method_not_allowed()
    return h()  # type: ignore[operator,no-any-return]
