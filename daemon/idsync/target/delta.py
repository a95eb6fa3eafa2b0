"""Target import: Graph `users/delta` and `groups/delta`, page by page into the target space.

Each page is parsed with orjson and committed in one transaction with the link that follows it,
so a crash resumes at the next page. While one page is written the next is already being fetched.
A stale, expired or unknown delta token (400 syncStateNotFound, 410 Gone, resyncRequired) starts
a full round, logged as `target.delta.resync`; a full round ends by sweeping what it did not see.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson
import structlog

from idsync import progress
from idsync.model import OBJECT_TYPES, ObjectType
from idsync.store import target_space
from idsync.store.db import Store
from idsync.store.runs import RunCounts
from idsync.store.target_space import DeltaPosition, TargetPage, TargetRow
from idsync.target.client import GraphClient
from idsync.target.errors import GraphRequestError, ResyncRequired
from idsync.target.schema import TargetSchema, flatten, owned_anchor

log = structlog.get_logger(__name__)

COLLECTION: dict[ObjectType, str] = {"user": "users", "group": "groups"}
RESYNC_CODES = frozenset({"syncStateNotFound", "resyncRequired", "syncStateInvalid"})
# Pages fetched ahead of the writer; a transaction takes every page already fetched (up to this).
PREFETCH = 8


@dataclass
class TypeImport:
    """What the import of one object type did."""

    object_type: ObjectType
    counts: RunCounts = field(default_factory=RunCounts)
    pages: int = 0
    objects: int = 0  # objects in the pages (replays and member slices included)
    member_changes: int = 0
    full: bool = False
    resynced: str = ""  # why a full round replaced a stored link ("" when it did not)
    complete: bool = False

    def sentence(self) -> str:
        c = self.counts
        kind = "full round" if self.full else "delta"
        done = "complete" if self.complete else "incomplete"
        s = (
            f"{COLLECTION[self.object_type]} {kind} {done}: {self.pages} pages, +{c.added} ~{c.updated}"
            f" -{c.deleted} ={c.unchanged}, {self.member_changes} member changes"
        )
        return s + (f" (resync: {self.resynced})" if self.resynced else "")


@dataclass
class ImportResult:
    """The target import of every object type."""

    types: dict[str, TypeImport]
    seconds: float

    @property
    def objects(self) -> int:
        return sum(t.objects for t in self.types.values())

    def sentence(self) -> str:
        """One line for the log and the operator."""
        return "; ".join(t.sentence() for t in self.types.values()) + f" in {self.seconds:.1f}s"


@dataclass(frozen=True)
class RawPage:
    """A delta page as Graph sent it, with the link that follows it."""

    content: bytes
    next_link: str | None
    delta_link: str | None


_NEXT = b'"@odata.nextLink":'
_DELTA = b'"@odata.deltaLink":'


def _json_string_at(content: bytes, key: bytes) -> str | None:
    """The string value of a top-level `key` found by search (keys cannot occur inside strings:
    their quotes would be escaped); None when absent."""
    i = content.rfind(key)
    if i < 0:
        return None
    start = content.index(b'"', i + len(key))
    end = start + 1
    while True:
        end = content.index(b'"', end)
        if content[end - 1] != 0x5C:  # not an escaped quote
            break
        end += 1
    value = orjson.loads(content[start : end + 1])
    return value if isinstance(value, str) else None


def page_links(content: bytes) -> tuple[str | None, str | None]:
    """`(nextLink, deltaLink)` of a delta page without parsing its objects, so the fetcher can go on
    at once and the objects are parsed by the writer."""
    try:
        return _json_string_at(content, _NEXT), _json_string_at(content, _DELTA)
    except (ValueError, orjson.JSONDecodeError):
        body = orjson.loads(content)
        nxt, dl = body.get("@odata.nextLink"), body.get("@odata.deltaLink")
        return (nxt if isinstance(nxt, str) else None), (dl if isinstance(dl, str) else None)


def parse_page(object_type: ObjectType, value: list[dict[str, Any]], anchor_attribute: str) -> TargetPage:
    """A delta page's `value` as target-space rows."""
    rows: list[TargetRow] = []
    removed: list[str] = []
    added_m: list[tuple[str, str]] = []
    removed_m: list[tuple[str, str]] = []
    managers: list[tuple[str, str | None]] = []
    for item in value:
        oid = item["id"]
        if "@removed" in item:
            removed.append(oid)
            continue
        md = item.get("members@delta")
        known = anchor_attribute in item or "onPremisesSyncEnabled" in item
        rows.append(TargetRow(oid, flatten(item), owned_anchor(item, anchor_attribute), known))
        if md:
            for m in md:
                (removed_m if "@removed" in m else added_m).append((oid, str(m["id"])))
        if "manager@delta" in item:
            managers.append((oid, manager_of(item["manager@delta"])))
    return TargetPage(object_type, rows, removed, added_m, removed_m, managers)


def manager_of(entries: Any) -> str | None:
    """The manager a `manager@delta` annotation names, or None when it names none.

    Relationships come as `<name>@delta` annotations (docs-contrib concepts/delta-query-overview.md);
    Microsoft does not document how a removed manager looks, so both an entry marked `@removed`
    (as in `members@delta`) and an empty list mean "no manager"."""
    live = [e for e in entries or () if isinstance(e, dict) and "@removed" not in e and e.get("id")]
    return str(live[-1]["id"]) if live else None


class WriteGate:
    """Lets writes of users and groups run together, but a write that deletes runs alone: it
    touches the groups of what it deletes, and a concurrent group write would deadlock with it."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._shared = 0
        self._exclusive = False

    @contextlib.asynccontextmanager
    async def hold(self, exclusive: bool) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive and (not exclusive or self._shared == 0))
            if exclusive:
                self._exclusive = True
            else:
                self._shared += 1
        try:
            yield
        finally:
            async with self._cond:
                if exclusive:
                    self._exclusive = False
                else:
                    self._shared -= 1
                self._cond.notify_all()


class DeltaImporter:
    """Runs delta rounds for users and groups into one instance's target space."""

    def __init__(self, client: GraphClient, schema: TargetSchema) -> None:
        self.client = client
        self.schema = schema
        # Users and groups are imported concurrently; writes that delete go one at a time.
        self._gate = WriteGate()
        self.prefetch = PREFETCH

    def start_url(self, object_type: ObjectType) -> str:
        """The first page of a full round."""
        select = quote(",".join(self.schema.select(object_type)), safe=",")
        return f"/{COLLECTION[object_type]}/delta?$select={select}"

    async def run(self, store: Store, types: tuple[ObjectType, ...] = OBJECT_TYPES) -> ImportResult:
        """Bring the target space up to date for `types` (concurrently); returns what happened."""
        t0 = time.monotonic()
        results = await asyncio.gather(*(self.run_type(store, t) for t in types))
        return ImportResult({r.object_type: r for r in results}, time.monotonic() - t0)

    async def run_type(self, store: Store, object_type: ObjectType) -> TypeImport:
        """Follow links until a deltaLink; a stale link restarts as a full round once."""
        res = TypeImport(object_type)
        pos = await asyncio.to_thread(self._load, store, object_type)
        sig = self.schema.signature(object_type)
        if pos is not None and (pos.server != self.client.base_url or pos.select != sig):
            res.resynced = "the Graph endpoint or the selected attributes changed"
            log.warning("target.delta.resync", type=object_type, reason=res.resynced)
            pos = None
        try:
            await self._round(store, object_type, pos, res)
        except ResyncRequired as e:
            if pos is None:
                raise  # even a fresh round was refused: nothing more to try
            res.resynced = f"{e.status} {e.code}"
            log.warning("target.delta.resync", type=object_type, status=e.status, code=e.code)
            await self._round(store, object_type, None, res)
        log.info("target.delta.done", type=object_type, summary=res.sentence())
        return res

    def _load(self, store: Store, object_type: ObjectType) -> DeltaPosition | None:
        with store.transaction() as conn:
            return target_space.load_position(conn, object_type)

    async def _round(
        self, store: Store, object_type: ObjectType, pos: DeltaPosition | None, res: TypeImport
    ) -> None:
        """One round: a fetcher follows the links ahead while pages are written; every
        transaction holds the pages fetched so far (at least one, whole) and the link after them."""
        fresh = pos is None
        full = fresh or bool(pos and pos.full and not pos.complete)
        round_start = None if pos is None else pos.round_start
        link = self.start_url(object_type) if pos is None else pos.link
        res.full = full
        sig = self.schema.signature(object_type)
        pages: asyncio.Queue[RawPage | BaseException] = asyncio.Queue(maxsize=self.prefetch)
        fetcher = asyncio.ensure_future(self._follow(object_type, link, pages))
        try:
            while True:
                got = [await pages.get()]
                while len(got) < self.prefetch and not pages.empty():
                    got.append(pages.get_nowait())
                failure = next((g for g in got if isinstance(g, BaseException)), None)
                batch = [g for g in got if isinstance(g, RawPage)]
                if batch:
                    last = batch[-1]
                    new_pos = DeltaPosition(
                        link=last.next_link or str(last.delta_link),
                        complete=last.next_link is None,
                        full=full,
                        select=sig,
                        server=self.client.base_url,
                        round_start=round_start,
                    )
                    begin, fresh = fresh, False
                    # Deletions touch the groups of the deleted object, and a sweep deletes: those
                    # writes go one at a time (users and groups would deadlock on the group rows).
                    exclusive = (new_pos.complete and full) or any(b'"@removed"' in p.content for p in batch)
                    async with self._gate.hold(exclusive):
                        results, round_start, swept = await asyncio.to_thread(
                            self._write, store, object_type, batch, new_pos, begin
                        )
                    for counts, objects, changes in results:
                        res.counts.add(counts)
                        res.objects += objects
                        res.member_changes += changes
                    res.counts.deleted += swept
                    res.pages += len(batch)
                    progress.beat()
                    if new_pos.complete:
                        res.complete = True
                        return
                if failure is not None:
                    raise failure
        finally:
            if not fetcher.done():
                fetcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fetcher

    async def _follow(
        self, object_type: ObjectType, link: str, out: asyncio.Queue[RawPage | BaseException]
    ) -> None:
        """Fetch pages from `link` on, into `out`, until a deltaLink (or a failure, passed on)."""
        try:
            while True:
                page = await self._fetch(object_type, link)
                await out.put(page)
                if page.next_link is None:
                    return
                link = page.next_link
        except Exception as e:
            await out.put(e)

    def _write(
        self, store: Store, object_type: ObjectType, pages: list[RawPage], pos: DeltaPosition, begin: bool
    ) -> tuple[list[tuple[RunCounts, int, int]], str | None, int]:
        """One transaction: (start of round,) the pages, (sweep,) and the position after them."""
        swept = 0
        anchor_attr = self.schema.anchor_attribute(object_type)
        with store.transaction() as conn:
            # Losing this commit in a server crash is harmless: the link is lost with the pages.
            conn.execute("SET LOCAL synchronous_commit = off")
            round_start = pos.round_start
            if begin:
                round_start = target_space.begin_full_round(conn, object_type)
            results = []
            for p in pages:
                value = orjson.loads(p.content).get("value") or []
                page = parse_page(object_type, value, anchor_attr)
                changes = len(page.members_added) + len(page.members_removed)
                results.append((target_space.apply_page(conn, page), len(value), changes))
            if pos.complete and pos.full and round_start:
                swept = target_space.sweep_unseen(conn, object_type, round_start)
            stored = DeltaPosition(
                pos.link,
                pos.complete,
                pos.full and not pos.complete,
                pos.select,
                pos.server,
                round_start if not pos.complete else None,
            )
            target_space.save_position(conn, object_type, stored)
        return results, round_start, swept

    async def _fetch(self, object_type: ObjectType, link: str) -> RawPage:
        what = f"{COLLECTION[object_type]} delta"
        resp = await self.client.get(link, what=what)
        if resp.status == 200:
            next_link, delta_link = page_links(resp.content)
            if next_link is None and delta_link is None:
                raise GraphRequestError(what, 200, "NoLink", "page has neither nextLink nor deltaLink")
            return RawPage(resp.content, next_link, delta_link)
        code, message = resp.error()
        if resp.status == 410 or code in RESYNC_CODES:
            raise ResyncRequired(COLLECTION[object_type], resp.status, code)
        raise GraphRequestError(what, resp.status, code, message)
