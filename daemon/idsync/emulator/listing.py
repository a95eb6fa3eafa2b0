"""Collection reads shared by users and groups: $filter, $select, $top and nextLink paging."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from idsync.emulator.call import Call, Reply
from idsync.emulator.errors import GraphError, sync_state_not_found, unknown_extension
from idsync.emulator.model import COLLECTION, RESOURCE, DirObject
from idsync.emulator.odata import Clause, decode_token, encode_token, parse_filter, parse_select, parse_top
from idsync.emulator.schema import check_select, extension_names, render

if TYPE_CHECKING:
    from idsync.emulator.core import Emulator

FILTERABLE = {
    "user": {
        "id",
        "userPrincipalName",
        "onPremisesImmutableId",
        "mail",
        "displayName",
        "employeeId",
        "accountEnabled",
        "givenName",
        "surname",
        "mailNickname",
        "userType",
        "employeeType",
    },
    "group": {"id", "displayName", "mailNickname", "securityEnabled", "mailEnabled", "mail"},
}
STARTSWITH = {"displayName", "givenName", "surname", "mail", "mailNickname", "userPrincipalName"}
CASE_INSENSITIVE = {"userPrincipalName", "mail", "displayName", "mailNickname", "givenName", "surname"}


def link(base: str, path: str, params: dict[str, str]) -> str:
    """`{base}{path}?$a=..&$b=..` with OData's `$` left readable, as Graph writes links."""
    if not params:
        return base + path
    qs = "&".join(f"{k}={quote(v, safe=',()=')}" for k, v in params.items())
    return f"{base}{path}?{qs}"


def _matcher(kind: str, joiner: str, clauses: list[Clause]) -> Callable[[DirObject], bool]:
    def match_one(o: DirObject, c: Clause) -> bool:
        v = o.props.get(c.prop)
        if c.op == "startswith":
            return isinstance(v, str) and v.lower().startswith(str(c.values[0]).lower())
        if c.prop in CASE_INSENSITIVE and isinstance(v, str):
            lv = v.lower()
            return any(isinstance(x, str) and x.lower() == lv for x in c.values)
        return any(v == x for x in c.values)

    if joiner == "or":
        return lambda o: any(match_one(o, c) for c in clauses)
    return lambda o: all(match_one(o, c) for c in clauses)


def _candidates(em: Emulator, kind: str, joiner: str, clauses: list[Clause]) -> Iterable[DirObject] | None:
    """A short candidate list from the unique indexes, when the filter allows one."""
    if (joiner != "or" and len(clauses) != 1) or any(c.op != "eq" for c in clauses):
        return None
    st = em.store
    out: dict[str, DirObject] = {}
    for c in clauses:
        for v in c.values:
            if not isinstance(v, str):
                return None
            if c.prop == "id":
                o = st.live(kind, v)
            elif c.prop == "userPrincipalName" and kind == "user":
                o = st.user(v) if "@" in v else None
            elif c.prop == "onPremisesImmutableId" and kind == "user":
                ident = st.by_immutable.get(v)
                o = st.live(kind, ident) if ident else None
            else:
                return None
            if o is not None:
                out[o.id] = o
    for ident in list(st.stale):
        # the indexes hold new values; reads must still find an unreplicated object by its old ones
        o = st.live(kind, ident)
        if o is not None:
            out[o.id] = o
    return sorted(out.values(), key=lambda o: o.created_seq)


def compile_filter(
    em: Emulator, kind: str, filt: str
) -> tuple[str, list[Clause], Callable[[DirObject], bool]]:
    """A `$filter` on users or groups checked as Graph checks it: (joiner, clauses, matcher), or
    400 for a property or operator the type does not support."""
    ignore = em.cfg.unregistered_extension_query == "ignore"
    joiner, clauses = parse_filter(filt)
    allowed = FILTERABLE[kind] | extension_names(em.store.extensions, kind)
    unknown = [c for c in clauses if c.prop.startswith("extension_") and c.prop not in allowed]
    if unknown and not ignore:
        # Microsoft documents no message for an unregistered extension in $filter; this
        # is the directory's message for a property it does not know
        raise unknown_extension(unknown[0].prop)
    if unknown:
        # `ignore`: an unregistered extension has no value, so its clause matches nothing
        clauses = [c for c in clauses if c not in unknown]
        if joiner == "and" or not clauses:
            clauses = [Clause("id", ())]
    for c in clauses:
        if c.prop not in allowed or (c.op == "startswith" and c.prop not in STARTSWITH):
            raise GraphError(
                400,
                "Request_UnsupportedQuery",
                f"Unsupported or invalid query filter clause specified for property '{c.prop}' of "
                f"resource '{RESOURCE[kind]}'.",
            )
    return joiner, clauses, _matcher(kind, joiner, clauses)


def page(
    objs: Iterable[DirObject],
    match: Callable[[DirObject], bool] | None,
    top: int,
    after: int,
    view: Callable[[DirObject], dict[str, Any]],
) -> tuple[list[dict[str, Any]], int, bool]:
    """One page of a listing in creation order: (the views of up to `top` matching objects, the
    creation sequence of the last one — the next page's skiptoken —, whether more follow)."""
    value: list[dict[str, Any]] = []
    last = after
    for o in objs:
        if match is not None and not match(o):
            continue
        if len(value) >= top:
            return value, last, True
        value.append(view(o))
        last = o.created_seq
    return value, last, False


def list_objects(em: Emulator, call: Call, kind: str, relations: frozenset[str] = frozenset()) -> Reply:
    """GET /users or /groups with Graph's query options and paging (default 100, max 999)."""
    q = dict(call.query)
    after = 0
    tok = q.pop("$skiptoken", None)
    if tok is not None:
        data = decode_token(tok)
        if not data or data.get("g") != em.store.generation or data.get("k") != f"list:{kind}":
            raise sync_state_not_found()
        after = int(data["c"])
    for opt in ("$orderby", "$expand", "$search", "$skip"):
        if opt in q:
            raise GraphError(
                400,
                "Request_UnsupportedQuery",
                f"The query option {opt} is not supported by the idsync Graph emulator for this resource.",
            )
    select = parse_select(q)
    ignore = em.cfg.unregistered_extension_query == "ignore"
    select = check_select(kind, select, em.store.extensions, relations, ignore)
    top = parse_top(q, 100, 999)
    objs: Iterable[DirObject]
    filt = q.get("$filter")
    match: Callable[[DirObject], bool] | None = None
    if filt:
        joiner, clauses, match = compile_filter(em, kind, filt)
        cands = _candidates(em, kind, joiner, clauses)
        objs = (
            o for o in (cands if cands is not None else em.store.iter_live(kind)) if o.created_seq > after
        )
    else:
        objs = em.store.iter_live(kind, after)
    visible = (em.store.visible(o) for o in objs)
    value, last, more = page(visible, match, top, after, lambda o: render(o, select))
    body: dict[str, Any] = {"@odata.context": f"{call.base_url}/$metadata#{COLLECTION[kind]}", "value": value}
    if more:
        q["$skiptoken"] = encode_token({"g": em.store.generation, "k": f"list:{kind}", "c": last})
        body["@odata.nextLink"] = link(call.base_url, f"/{COLLECTION[kind]}", q)
    return Reply(200, body)
