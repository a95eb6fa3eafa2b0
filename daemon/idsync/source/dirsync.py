"""Active Directory delta import with the DirSync control.

Each DirSync batch is applied and committed together with the cookie that follows it, so a crash
resumes from the last committed batch. DirSync returns only changed attributes of changed
objects; they are merged into the stored object. An object not yet known (new, or moved into
scope) is read completely by its GUID. Tombstones become deletes; member changes arrive as
`member;range=1-1` (added) and `member;range=0-0` (removed) values and become MemberDeltas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import ldap3
import structlog

from idsync.model import MemberDelta, Quarantined, SourceObject
from idsync.source import watermark
from idsync.source.connection import Entry, LdapSession, SearchResult
from idsync.source.controls import (
    Control,
    DirSyncResponse,
    dirsync_control,
    dirsync_response,
    extended_dn_control,
    show_deleted_control,
)
from idsync.source.errors import BadEntry, CookieRejected, SearchFailed
from idsync.source.full import read_object
from idsync.source.normalize import MEMBER, Normalizer, first_rdn, lower_keys, parse_extended_dn
from idsync.source.run import Extra, RunContext
from idsync.store import source_space

log = structlog.get_logger(__name__)

# No object has the all-zero GUID: a DirSync with this filter returns a cookie and no entries.
NOTHING = "(objectGUID=" + "\\00" * 16 + ")"
INSUFFICIENT_ACCESS = 50
MAX_BATCHES = 1_000_000


def watermark_name(nc: str) -> str:
    return f"source.dirsync:{nc.lower()}"


def _controls(cookie: bytes | None) -> list[Control]:
    return [dirsync_control(cookie), extended_dn_control(), show_deleted_control()]


def _search(
    session: LdapSession, nc: str, search_filter: str, attrs: Sequence[str], cookie: bytes | None
) -> tuple[SearchResult, DirSyncResponse]:
    try:
        res = session.search(nc, search_filter, ldap3.SUBTREE, attrs, _controls(cookie))
    except SearchFailed as exc:
        if exc.code == INSUFFICIENT_ACCESS or not cookie:
            raise  # a permission problem, not a stale cookie: the operator must fix it
        raise CookieRejected("dirsync", session.info.name, str(exc)) from exc
    resp = dirsync_response(res.controls)
    if resp is None:
        raise CookieRejected("dirsync", session.info.name, "the server sent no DirSync response control")
    return res, resp


def baseline(session: LdapSession, nc: str) -> bytes:
    """A cookie for "now" that reads no objects (taken before a full import reads the directory).

    Changes made while the full import runs are replayed by the next delta; applying the
    latest state twice is harmless.
    """
    cookie = b""
    for _ in range(MAX_BATCHES):
        _, resp = _search(session, nc, NOTHING, ["objectGUID"], cookie)
        cookie = resp.cookie
        if not resp.more_results:
            return cookie
    raise CookieRejected("dirsync", session.info.name, "baseline never ended (more_results forever)")


def _is_deleted(raw: dict[str, Sequence[bytes]]) -> bool:
    vals = raw.get("isdeleted")
    return vals is not None and len(vals) > 0 and bytes(vals[0]).upper() == b"TRUE"


def _member_changes(raw: dict[str, Sequence[bytes]]) -> tuple[list[bytes] | None, list[bytes], list[bytes]]:
    """(complete list if sent plainly, added values, removed values) of `member` in a delta entry."""
    full: list[bytes] | None = None
    added: list[bytes] = []
    removed: list[bytes] = []
    for key, vals in raw.items():
        if key == MEMBER:
            full = list(vals)
        elif key.startswith(MEMBER + ";range=1-1"):
            added.extend(vals)
        elif key.startswith(MEMBER + ";range=0-0"):
            removed.extend(vals)
    return full, added, removed


# Linked attributes AD holds one value of: an added value replaces the old one, and a removal
# with no addition clears it (the stored DN may be stale: a rename of the target is not resent).
SINGLE_VALUED_LINKS = frozenset({"manager"})


def _linked_changes(
    norm: Normalizer, dn: str, raw: dict[str, Sequence[bytes]], cur: Mapping[str, Sequence[str]]
) -> dict[str, tuple[str, ...] | None]:
    """Stored linked attributes (other than member) whose changes DirSync sent as incremental
    values — `<name>;range=1-1` added, `<name>;range=0-0` removed (MS-ADTS 3.1.1.3.4.1.3,
    LDAP_DIRSYNC_INCREMENTAL_VALUES) — merged into their new value lists."""
    added: dict[str, list[str]] = {}
    removed: dict[str, list[str]] = {}
    for key, vals in raw.items():
        name, _, rng = key.partition(";range=")
        if not rng or name == MEMBER or name not in norm.attributes:
            continue
        side = added if rng.startswith("1-1") else removed if rng.startswith("0-0") else None
        if side is not None:
            side.setdefault(name, []).extend(norm.values(dn, name, vals))
    out: dict[str, tuple[str, ...] | None] = {}
    for name in {*added, *removed}:
        new, gone = added.get(name, []), {v.lower() for v in removed.get(name, [])}
        if name in SINGLE_VALUED_LINKS:
            values = new[-1:]
        else:
            values = [v for v in cur.get(name, ()) if v.lower() not in gone] + new
        out[name] = tuple(dict.fromkeys(values)) or None
    return out


def apply_batch(
    ctx: RunContext, entries: Sequence[Entry], controls: Sequence[Control], extra: Extra | None
) -> None:
    """Turn one DirSync batch into upserts, deletes and member deltas, committed with `extra`."""
    norm, scope = ctx.normalizer, ctx.scope
    deletes: list[str] = []
    tombstones: list[str] = []
    bad: list[Quarantined] = []
    changed: dict[str, tuple[str, dict[str, Sequence[bytes]]]] = {}
    for entry in entries:
        ext = parse_extended_dn(entry["dn"])
        raw = lower_keys(entry["raw_attributes"])
        try:
            anchor = norm.anchor_of(ext.dn, raw, ext)
        except BadEntry as exc:
            bad.append(ctx.bad(exc, None))
            continue
        if _is_deleted(raw):
            tombstones.append(anchor)
            changed.pop(anchor, None)
        else:
            prev = changed.get(anchor)
            if prev is not None:  # the same object twice in one batch: later values win, merged
                merged = dict(prev[1])
                merged.update(raw)
                raw = merged
            changed[anchor] = (ext.dn, raw)
    with ctx.store.transaction() as conn:
        known = source_space.get_many(conn, changed)
    objects: list[SourceObject] = []
    member_deltas: list[MemberDelta] = []
    for anchor, (dn, raw) in changed.items():
        cur = known.get(anchor)
        if not scope.in_scope(dn):
            if cur is not None:
                deletes.append(anchor)  # moved out of scope
            continue
        try:
            if cur is None:  # new, or moved into scope: DirSync sent only what changed
                obj = read_object(ctx.session, scope, norm, f"<GUID={anchor}>", controls)
                if obj is not None:
                    objects.append(obj)
                continue
            attrs: dict[str, tuple[str, ...] | None] = dict(cur.attrs)
            attrs.update(norm.attrs(dn, raw))  # absent = unchanged; present without values = cleared
            attrs.update(_linked_changes(norm, dn, raw, cur.attrs))
            rdn = first_rdn(dn) if dn != cur.dn else None
            if rdn is not None and rdn[0] in scope.attribute_names:
                attrs[rdn[0]] = (rdn[1],)  # a rename does not always resend the naming attribute
            full, added, removed = _member_changes(raw)
            members = None
            if cur.object_type == "group":
                if full is not None:
                    members = tuple(dict.fromkeys(norm.member_refs(dn, full)))
                elif added or removed:
                    member_deltas.append(
                        MemberDelta(
                            anchor, tuple(norm.member_refs(dn, added)), tuple(norm.member_refs(dn, removed))
                        )
                    )
            final = norm.complete(attrs)
            if members is None and final == dict(cur.attrs) and dn == cur.dn:
                continue  # only membership changed (a MemberDelta) or nothing we store
            objects.append(SourceObject(anchor, cur.object_type, dn, final, members))
        except BadEntry as exc:
            bad.append(ctx.bad(BadEntry(exc.dn, exc.reason, anchor), cur.object_type if cur else None))
    ctx.commit(
        objects, bad=bad, deletes=deletes, tombstones=tombstones, member_deltas=member_deltas, extra=extra
    )


def run_delta(ctx: RunContext, nc: str, start: watermark.Position) -> watermark.Position:
    """Apply DirSync batches from `start` until the server has no more; returns the last position."""
    session = ctx.session
    controls = [extended_dn_control()]
    # `name` changes on every rename and move: without it DirSync would not report moves at all
    attrs = [*ctx.scope.attributes, MEMBER, "isDeleted", "name"]
    search_filter = f"(|{ctx.scope.user_filter}{ctx.scope.group_filter}(isDeleted=TRUE))"
    pos = start
    for _ in range(MAX_BATCHES):
        res, resp = _search(session, nc, search_filter, attrs, pos.cookie)
        new = watermark.Position(server=session.info.name, scope=pos.scope, cookie=resp.cookie)
        apply_batch(ctx, res.entries, controls, partial(watermark.save, name=watermark_name(nc), pos=new))
        log.debug("source.dirsync.batch", entries=len(res.entries), more=resp.more_results, nc=nc)
        pos = new
        if not resp.more_results:
            return pos
    raise CookieRejected("dirsync", session.info.name, "more_results never ended")
