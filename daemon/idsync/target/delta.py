"""Target import: Graph `users/delta` and `groups/delta`, page by page into the target space.

Each page is parsed with orjson and committed in one transaction with the link that follows it,
so a crash resumes at the next page. While one page is written the next is already being fetched.
A stale, expired or unknown delta token (400 syncStateNotFound, 410 Gone, resyncRequired) starts
a full round, logged as `target.delta.resync`; a full round ends by sweeping what it did not see.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import structlog

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


@dataclass
class _Page:
    body: dict[str, Any]


def parse_page(object_type: ObjectType, value: list[dict[str, Any]], anchor_attribute: str) -> TargetPage:
    """A delta page's `value` as target-space rows."""
    rows: list[TargetRow] = []
    removed: list[str] = []
    added_m: list[tuple[str, str]] = []
    removed_m: list[tuple[str, str]] = []
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
    return TargetPage(object_type, rows, removed, added_m, removed_m)


class DeltaImporter:
    """Runs delta rounds for users and groups into one instance's target space."""

    def __init__(self, client: GraphClient, schema: TargetSchema) -> None:
        self.client = client
        self.schema = schema
        # Pages of users and groups are fetched concurrently but written one at a time: a user's
        # deletion touches its groups' rows, and two writers would deadlock on them.
        self._write_lock = asyncio.Lock()

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
        fresh = pos is None
        full = fresh or bool(pos and pos.full and not pos.complete)
        round_start = None if pos is None else pos.round_start
        link = self.start_url(object_type) if pos is None else pos.link
        res.full = full
        anchor_attr = self.schema.anchor_attribute(object_type)
        sig = self.schema.signature(object_type)
        pending = asyncio.ensure_future(self._fetch(object_type, link))
        try:
            while True:
                body = await pending
                nxt = body.get("@odata.nextLink")
                delta = body.get("@odata.deltaLink")
                if not isinstance(nxt, str) and not isinstance(delta, str):
                    what = f"{COLLECTION[object_type]} delta"
                    raise GraphRequestError(what, 200, "NoLink", "page has neither nextLink nor deltaLink")
                if isinstance(nxt, str):
                    pending = asyncio.ensure_future(self._fetch(object_type, nxt))
                value = body.get("value") or []
                page = parse_page(object_type, value, anchor_attr)
                new_pos = DeltaPosition(
                    link=nxt if isinstance(nxt, str) else str(delta),
                    complete=not isinstance(nxt, str),
                    full=full,
                    select=sig,
                    server=self.client.base_url,
                    round_start=round_start,
                )
                begin = fresh
                fresh = False
                async with self._write_lock:
                    counts, round_start, swept = await asyncio.to_thread(
                        self._write, store, page, new_pos, begin
                    )
                res.counts.add(counts)
                res.counts.deleted += swept
                res.pages += 1
                res.objects += len(value)
                res.member_changes += len(page.members_added) + len(page.members_removed)
                if not isinstance(nxt, str):
                    res.complete = True
                    return
        finally:
            if not pending.done():
                pending.cancel()

    def _write(
        self, store: Store, page: TargetPage, pos: DeltaPosition, begin: bool
    ) -> tuple[RunCounts, str | None, int]:
        """One transaction: (start of round,) page, (sweep,) and the position after the page."""
        swept = 0
        with store.transaction() as conn:
            round_start = pos.round_start
            if begin:
                round_start = target_space.begin_full_round(conn, page.object_type)
            counts = target_space.apply_page(conn, page)
            if pos.complete and pos.full and round_start:
                swept = target_space.sweep_unseen(conn, page.object_type, round_start)
            stored = DeltaPosition(
                pos.link,
                pos.complete,
                pos.full and not pos.complete,
                pos.select,
                pos.server,
                round_start if not pos.complete else None,
            )
            target_space.save_position(conn, page.object_type, stored)
        return counts, round_start, swept

    async def _fetch(self, object_type: ObjectType, link: str) -> dict[str, Any]:
        what = f"{COLLECTION[object_type]} delta"
        resp = await self.client.get(link, what=what)
        if resp.status == 200:
            body = resp.json()
            if not isinstance(body, dict):
                raise GraphRequestError(what, 200, "BadBody", "the page is not a JSON object")
            return body
        code, message = resp.error()
        if resp.status == 410 or code in RESYNC_CODES:
            raise ResyncRequired(COLLECTION[object_type], resp.status, code)
        raise GraphRequestError(what, resp.status, code, message)
