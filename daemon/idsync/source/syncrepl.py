"""OpenLDAP delta import with RFC 4533 content synchronization (refreshOnly) and a stored cookie.

Changed and added entries arrive whole (state add/modify, with their Sync State control); deletes
arrive as syncIdSet messages with refreshDeletes=TRUE. When the provider lost its session log (a
restart), it falls back to the *present phase*: it lists every entry still present, and every
known anchor it did not list has been deleted.
"""

from __future__ import annotations

from collections.abc import Callable

import ldap3
import psycopg
import structlog

from idsync.model import Quarantined, SourceObject
from idsync.source import controls as ctl
from idsync.source.connection import LdapSession, SearchResult
from idsync.source.errors import BadEntry, CookieRejected, SearchFailed
from idsync.source.normalize import MEMBER, is_under, lower_keys
from idsync.source.run import RunContext
from idsync.source.scope import classify
from idsync.store import source_space

log = structlog.get_logger(__name__)

WATERMARK = "source.syncrepl"
NOTHING = "(entryUUID=00000000-0000-0000-0000-000000000000)"
SYNC_REFRESH_REQUIRED = 4096  # e-syncRefreshRequired: the cookie is too old, reload


def _search(
    session: LdapSession, base: str, search_filter: str, attrs: list[str], cookie: bytes | None
) -> SearchResult:
    try:
        return session.search(base, search_filter, ldap3.SUBTREE, attrs, [ctl.sync_request_control(cookie)])
    except SearchFailed as exc:
        if cookie and exc.code == SYNC_REFRESH_REQUIRED:
            raise CookieRejected("syncrepl", session.info.name, str(exc)) from exc
        raise


def _done(res: SearchResult) -> ctl.SyncDone:
    value = (res.controls.get(ctl.SYNC_DONE_OID) or {}).get("value")
    return ctl.sync_done(bytes(value) if value else None)


def baseline(session: LdapSession, base: str) -> bytes | None:
    """A cookie for "now", from a refresh that matches no entry (taken before a full import)."""
    res = _search(session, base, NOTHING, ["entryUUID"], None)
    cookie = _done(res).cookie
    for item in res.intermediates:
        if item.get("responseName") == ctl.SYNC_INFO_OID and item.get("responseValue"):
            info = ctl.sync_info(item["responseValue"])
            cookie = info.cookie or cookie
    return cookie


def run_delta(
    ctx: RunContext, base: str, cookie: bytes, save: Callable[[psycopg.Connection, bytes], None]
) -> bytes:
    """One refreshOnly pass from `cookie`; commits in batches, the last with the new cookie."""
    scope, norm = ctx.scope, ctx.normalizer
    attrs = [*scope.attributes, MEMBER]
    res = _search(ctx.session, base, scope.either_filter, attrs, cookie)
    new_cookie = cookie
    present: set[str] = set()
    present_phase = False
    deletes: list[str] = []  # left the scope
    tombstones: list[str] = []  # deleted in the directory
    objects: list[SourceObject] = []
    bad: list[Quarantined] = []
    for item in res.intermediates:
        if item.get("responseName") != ctl.SYNC_INFO_OID or not item.get("responseValue"):
            continue
        info = ctl.sync_info(item["responseValue"])
        if info.cookie:
            new_cookie = info.cookie
        if info.kind == "syncIdSet":
            if info.refresh_deletes:
                tombstones.extend(info.uuids)
            else:
                present.update(info.uuids)
                present_phase = True
        elif info.kind == "refreshPresent":
            present_phase = True
    for entry in res.entries:
        raw_state = (entry.get("controls") or {}).get(ctl.SYNC_STATE_OID, {}).get("value")
        if not raw_state:
            continue
        state = ctl.sync_state(bytes(raw_state))
        if state.cookie:
            new_cookie = state.cookie
        if state.state == ctl.STATE_DELETE:
            tombstones.append(state.entry_uuid)
            continue
        present.add(state.entry_uuid)
        if state.state == ctl.STATE_PRESENT:
            present_phase = True
            continue
        dn = entry["dn"]
        raw = lower_keys(entry["raw_attributes"])
        if not scope.in_scope(dn):
            deletes.append(state.entry_uuid)
            continue
        object_type = classify(raw.get("objectclass", ()))
        try:
            obj = norm.to_object(
                dn, raw, object_type, raw.get(MEMBER, ()) if object_type == "group" else None
            )
            objects.append(obj)
        except BadEntry as exc:
            bad.append(ctx.bad(exc, object_type))
    done = _done(res)
    if done.cookie:
        new_cookie = done.cookie
    if done.refresh_deletes:
        present_phase = False
    if present_phase and not present:
        # An empty present list would delete everything; never act on that ambiguity.
        log.warning("source.syncrepl.empty_present_phase", base=base)
        present_phase = False
    if present_phase:
        with ctx.store.transaction() as conn:
            known = source_space.live_anchors(conn)
        missing = [a for a, dn in known.items() if a not in present and is_under(dn, base)]
        log.info("source.syncrepl.present_phase", listed=len(present), deleted=len(missing), base=base)
        tombstones.extend(missing)
    size = ctx.settings.batch_size
    chunks = [objects[i : i + size] for i in range(0, len(objects), size)] or [[]]
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        ctx.commit(
            chunk,
            bad=bad if last else (),
            deletes=deletes if last else (),
            tombstones=tombstones if last else (),
            extra=(lambda conn: save(conn, new_cookie)) if last else None,
        )
    return new_cookie
