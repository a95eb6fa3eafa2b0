"""`/users/delta` and `/groups/delta`: rounds of pages over the change log.

A token holds the round's base (`w`: changes after it are reported), the log cursor (`c`), the
$select, an optional id filter and, for a group whose `members@delta` did not fit in a page,
where that group's member list resumes (`p`). The walk runs to the end of the log; an object that
changes mid-round moves ahead of the cursor and is seen again (Graph replays too), so the final
deltaLink can safely take the current change number as the next base.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from idsync.emulator.call import Call, Reply
from idsync.emulator.errors import GraphError, bad_request, sync_state_not_found
from idsync.emulator.listing import link
from idsync.emulator.model import COLLECTION, GROUP_RELATIONS, ODATA_TYPE, USER_RELATIONS, DirObject
from idsync.emulator.odata import decode_token, encode_token, parse_filter, parse_select
from idsync.emulator.schema import check_select, render

if TYPE_CHECKING:
    from idsync.emulator.core import Emulator

MAX_FILTER_IDS = 50


def _member_changes(em: Emulator, g: DirObject, base: int, after: int) -> list[tuple[int, dict[str, Any]]]:
    """`members@delta` entries of `g` changed after `base` (and after member cursor `after`)."""
    floor = max(base, after)
    out: list[tuple[int, dict[str, Any]]] = []
    objects, tombs = em.store.objects, em.store.tombstones
    for mid, seq in reversed(g.members.items()):
        if seq <= floor:
            break
        m = objects.get(mid)
        out.append((seq, {"@odata.type": ODATA_TYPE[m.kind if m else "user"], "id": mid}))
    if base > 0:
        for mid, seq in reversed(g.removed.items()):
            if seq <= floor:
                break
            m = objects.get(mid)
            kind = m.kind if m else (tombs[mid].kind if mid in tombs else "user")
            out.append((seq, {"@odata.type": ODATA_TYPE[kind], "id": mid, "@removed": {"reason": "deleted"}}))
    out.sort(key=lambda e: e[0])
    return out


def _first_change_after(obj: DirObject, base: int, latest: int) -> int:
    """The number of `obj`'s earliest change after `base`. An object held back for replication lag
    must be reported from there: holding only its latest change would let the next round's base
    pass the member adds (and property changes) that came before it, and lose them."""
    seqs = [latest]
    if obj.created_seq > base:
        seqs.append(obj.created_seq)
    seqs += [s for s in obj.prop_seq.values() if s > base]
    seqs += [s for s in obj.members.values() if s > base]
    seqs += [s for s in obj.removed.values() if s > base]
    if obj.manager_seq > base:
        seqs.append(obj.manager_seq)
    return min(seqs)


def _manager_delta(em: Emulator, user: DirObject, base: int) -> list[dict[str, Any]] | None:
    """`manager@delta` of a user whose manager changed after `base` (a first round: any manager).

    With `$select=manager`, "Selecting those properties allows tracking of changes to user's
    manager" and relationships are "annotations ... propertyName@delta" (docs-contrib
    concepts/delta-query-overview.md). How a removal looks is undocumented: `manager_removed_delta`.
    """
    if base == 0:
        return [{"@odata.type": ODATA_TYPE["user"], "id": user.manager}] if user.manager else None
    if user.manager_seq <= base:
        return None
    if user.manager:
        return [{"@odata.type": ODATA_TYPE["user"], "id": user.manager}]
    if em.cfg.manager_removed_delta == "empty" or not user.manager_was:
        return []
    return [{"@odata.type": ODATA_TYPE["user"], "id": user.manager_was, "@removed": {"reason": "deleted"}}]


def _start(em: Emulator, call: Call, kind: str) -> dict[str, Any]:
    q = call.query
    for opt in ("$top", "$expand", "$orderby", "$skip", "$search", "$count"):
        if opt in q:
            raise GraphError(400, "Request_UnsupportedQuery", "Unsupported Query.")
    select = parse_select(q)
    select = check_select(
        kind,
        select,
        em.store.extensions,
        USER_RELATIONS if kind == "user" else GROUP_RELATIONS,
        em.cfg.unregistered_extension_query == "ignore",
    )
    ids: list[str] | None = None
    if "$filter" in q:
        joiner, clauses = parse_filter(q["$filter"])
        if any(c.prop != "id" or c.op != "eq" for c in clauses) or (joiner == "and" and len(clauses) > 1):
            raise GraphError(
                400,
                "Request_UnsupportedQuery",
                "Unsupported Query.",  # what Graph answers; only `id eq '..' or ..` is allowed
            )
        ids = [str(v) for c in clauses for v in c.values]
        if len(ids) > MAX_FILTER_IDS:
            raise GraphError(
                400, "Request_UnsupportedQuery", f"Delta query $filter supports at most {MAX_FILTER_IDS} ids."
            )
    return {
        "g": em.store.generation,
        "k": kind,
        "w": 0,
        "c": 0,
        "s": select,
        "f": ids,
        "t": em.store.clock.now(),
    }


def _resume(em: Emulator, call: Call, kind: str, token: str) -> dict[str, Any]:
    if "$select" in call.query or "$filter" in call.query:
        raise bad_request(
            "$select and $filter are encoded in the delta token and cannot be combined with it.",
            code="BadRequest",
        )
    data = decode_token(token)
    if (
        not data
        or data.get("g") != em.store.generation
        or data.get("k") != kind
        or em.store.clock.now() - float(data.get("t", 0)) > em.cfg.delta_token_lifetime
    ):
        raise sync_state_not_found()
    return data


def delta(em: Emulator, call: Call, kind: str) -> Reply:
    """One delta page: `value` plus an `@odata.nextLink` or an `@odata.deltaLink`."""
    q = call.query
    st = em.store
    path = f"/{COLLECTION[kind]}/delta"
    ctx = f"{call.base_url}/$metadata#{COLLECTION[kind]}"
    if "$deltatoken" in q and q["$deltatoken"].lower() == "latest":
        tok = _start(em, call, kind)
        tok["w"] = tok["c"] = st.seq
        return Reply(
            200,
            {
                "@odata.context": ctx,
                "value": [],
                "@odata.deltaLink": link(call.base_url, path, {"$deltatoken": encode_token(tok)}),
            },
        )
    raw = q.get("$skiptoken") or q.get("$deltatoken")
    tok = _resume(em, call, kind, raw) if raw else _start(em, call, kind)
    base, cursor, select = int(tok["w"]), int(tok["c"]), tok["s"]
    ids = set(tok["f"]) if tok.get("f") else None
    minimal = base > 0 and "return=minimal" in call.headers.get("prefer", "")
    members = kind == "group" and (select is None or "members" in select)
    managers = kind == "user" and select is not None and "manager" in select
    limit, link_limit = em.cfg.delta_page_size, em.cfg.delta_link_limit
    value: list[dict[str, Any]] = []
    links = 0
    partial: list[Any] | None = None

    def emit_members(g: DirObject, item: dict[str, Any], after: int) -> bool:
        """Attach members@delta; False when the page's link budget cut the list (resume later)."""
        nonlocal links, partial
        changes = _member_changes(em, g, base, after)
        if not changes:
            return True
        room = max(link_limit - links, 1)
        chunk = changes[:room]
        item["members@delta"] = [e for _, e in chunk]
        links += len(chunk)
        if len(chunk) < len(changes):
            partial = [g.id, chunk[-1][0]]
            return False
        return True

    done = True
    hold: int | None = tok.get("h")
    resume = tok.get("p")
    if resume:
        g = st.live("group", resume[0])
        if g is not None:
            item: dict[str, Any] = {"id": g.id}
            if not emit_members(g, item, int(resume[1])):
                done = False
            value.append(item)
    if done:
        objects, tombs = st.objects, st.tombstones
        for seq, ident in st.changes[kind].after(cursor):
            obj = objects.get(ident)
            cur = obj.seq if obj is not None else (tombs[ident].seq if ident in tombs else None)
            if cur != seq or (ids is not None and ident not in ids):
                cursor = seq
                continue
            cursor = seq
            if obj is None:
                if base > 0:
                    value.append({"id": ident, "@removed": {"reason": "deleted"}})
            elif obj.deleted_at is not None:
                if base > 0:
                    value.append({"id": ident, "@removed": {"reason": "changed"}})
            elif st.pending(obj):
                # not replicated yet (replication lag): leave it, and let the next round's base
                # stay below it so that round reports it (Graph's "processing delay",
                # concepts/delta-query-overview.md)
                first = _first_change_after(obj, base, seq)
                hold = first if hold is None else min(hold, first)
                continue
            else:
                if minimal and obj.created_seq <= base:
                    names = [
                        n for n, s in obj.prop_seq.items() if s > base and (select is None or n in select)
                    ]
                    item = render(obj, names)
                else:
                    item = render(obj, select)
                if managers and (md := _manager_delta(em, obj, base)) is not None:
                    item["manager@delta"] = md
                value.append(item)
                if members and not emit_members(obj, item, 0):
                    done = False
                    break
            if len(value) >= limit or links >= link_limit:
                done = False
                break
    out: dict[str, Any] = {"@odata.context": ctx, "value": value}
    nxt = {**tok, "c": cursor, "p": partial, "h": hold}
    if done:
        # everything up to now was walked: the next round reports changes after the current
        # number, or from the first change that had not replicated yet
        nxt_base = st.seq if hold is None else min(st.seq, hold - 1)
        nxt.update(w=nxt_base, c=nxt_base, p=None, h=None, t=st.clock.now())
        out["@odata.deltaLink"] = link(call.base_url, path, {"$deltatoken": encode_token(nxt)})
    else:
        out["@odata.nextLink"] = link(call.base_url, path, {"$skiptoken": encode_token(nxt)})
    headers = {"Preference-Applied": "return=minimal"} if minimal else {}
    return Reply(200, out, headers)
