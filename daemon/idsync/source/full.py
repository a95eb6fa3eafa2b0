"""Full import: paged searches per object type and base, ranged member retrieval, page-wise commits.

Memory stays bounded by one page: each page is normalized and committed (stamped with the run
id) before the next is requested. The sweep of objects the run did not see happens in the
importer, only after every page has been committed.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Iterator, Sequence

import ldap3

from idsync.model import OBJECT_TYPES, ObjectType, Quarantined, SourceObject
from idsync.source.connection import Entry, LdapSession
from idsync.source.controls import Control
from idsync.source.errors import BadEntry
from idsync.source.normalize import MEMBER, Normalizer, lower_keys, parse_extended_dn
from idsync.source.run import RunContext
from idsync.source.scope import Scope

_RANGE = re.compile(r"^[^;]+;range=(\d+)-(\d+|\*)$", re.IGNORECASE)
MAX_RANGE_ROUNDS = 100_000  # a server that never ends a range must not loop forever


def _ranged_key(raw: dict[str, list[bytes]], attr: str) -> tuple[str, int, str] | None:
    for key in raw:
        low = key.lower()
        if low.startswith(attr + ";range="):
            m = _RANGE.match(low)
            if m:
                return key, int(m.group(1)), m.group(2)
    return None


def entry_base(entry: Entry) -> str:
    """A DN to address this entry again: `<GUID=…>` when the server gave one (rename-proof)."""
    ext = parse_extended_dn(entry["dn"])
    return f"<GUID={ext.guid}>" if ext.guid else ext.dn


def ranged_values(
    session: LdapSession, entry: Entry, controls: Sequence[Control] | None, attr: str = MEMBER
) -> list[bytes]:
    """All values of a multi-valued attribute, following `attr;range=a-b` until `b` is `*`.

    Active Directory returns at most MaxValRange (1,500) values per attribute per search; the
    rest must be asked for with `member;range=1500-*`, and so on.
    """
    raw = entry["raw_attributes"]
    found = _ranged_key(raw, attr)
    if found is None:
        for key, vals in raw.items():
            if key.lower() == attr:
                return list(vals)
        return []
    key, _, end = found
    values = list(raw[key])
    base = entry_base(entry)
    rounds = 0
    while end != "*":
        rounds += 1
        if rounds > MAX_RANGE_ROUNDS:
            raise BadEntry(parse_extended_dn(entry["dn"]).dn, f"{attr} range retrieval did not end")
        start = int(end) + 1
        res = session.search(
            base, "(objectClass=*)", ldap3.BASE, [f"{attr};range={start}-*"], controls, allow=(32,)
        )
        if not res.entries:
            raise BadEntry(parse_extended_dn(entry["dn"]).dn, f"entry vanished while reading {attr} values")
        more = res.entries[0]["raw_attributes"]
        nxt = _ranged_key(more, attr)
        if nxt is None:  # some servers answer the last range as the plain attribute
            values.extend(next((v for k, v in more.items() if k.lower() == attr), []))
            break
        key, _, end = nxt
        values.extend(more[key])
    return values


def to_object(
    session: LdapSession,
    normalizer: Normalizer,
    entry: Entry,
    object_type: ObjectType,
    controls: Sequence[Control] | None,
) -> SourceObject:
    """A complete entry → SourceObject (members completed through ranges), or BadEntry."""
    raw = lower_keys(entry["raw_attributes"])
    members = ranged_values(session, entry, controls) if object_type == "group" else None
    return normalizer.to_object(entry["dn"], raw, object_type, members)


def read_object(
    session: LdapSession,
    scope: Scope,
    normalizer: Normalizer,
    base: str,
    controls: Sequence[Control] | None,
) -> SourceObject | None:
    """Read one object completely by DN or `<GUID=…>`; None when it matches neither type filter."""
    for object_type in OBJECT_TYPES:
        attrs = [*scope.attributes, MEMBER] if object_type == "group" else list(scope.attributes)
        res = session.search(base, scope.filter_for(object_type), ldap3.BASE, attrs, controls, allow=(32,))
        if res.entries:
            return to_object(session, normalizer, res.entries[0], object_type, controls)
    return None


def _pages(
    ctx: RunContext, controls: Sequence[Control] | None
) -> Iterator[tuple[list[SourceObject], list[Quarantined]]]:
    """Normalized pages (objects, quarantined) of every in-scope user and group."""
    scope = ctx.scope
    for object_type in OBJECT_TYPES:
        attrs = [*scope.attributes, MEMBER] if object_type == "group" else list(scope.attributes)
        for base in scope.search_bases:
            pages = ctx.session.paged(
                base, scope.filter_for(object_type), attrs, ctx.settings.page_size, controls
            )
            for page in pages:
                objects: list[SourceObject] = []
                bad: list[Quarantined] = []
                for entry in page:
                    if not scope.in_scope(parse_extended_dn(entry["dn"]).dn):
                        continue
                    try:
                        objects.append(to_object(ctx.session, ctx.normalizer, entry, object_type, controls))
                    except BadEntry as exc:
                        bad.append(ctx.bad(exc, object_type))
                yield objects, bad


Page = tuple[list[SourceObject], list[Quarantined]]


def run_full(ctx: RunContext, controls: Sequence[Control] | None) -> None:
    """Read every in-scope user and group, page by page, stamping each with the run id.

    One thread reads and normalizes the next page while this one commits the previous: the
    directory, ldap3's decoding and PostgreSQL work at the same time. At most two pages wait.
    """
    pages: queue.Queue[Page | BaseException | None] = queue.Queue(maxsize=2)  # None: done
    stop = threading.Event()

    def put(item: Page | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                pages.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for page in _pages(ctx, controls):
                if not put(page):
                    return
            put(None)
        except BaseException as exc:  # handed to the committing thread, which raises it
            put(exc)

    reader = threading.Thread(target=produce, name="source-full-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = pages.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            objects, bad = item
            ctx.commit(objects, bad=bad, seen_run=ctx.run_id)
    finally:
        stop.set()
        reader.join()
