"""One import run: its counts, progress events, and the page-by-page commit to the source space."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg
import structlog

from idsync import progress
from idsync.model import MemberDelta, Quarantined, SourceObject
from idsync.source.connection import LdapSession
from idsync.source.errors import BadEntry
from idsync.source.normalize import Normalizer
from idsync.source.scope import Scope
from idsync.source.settings import LdapSourceSettings
from idsync.store import quarantine, source_space
from idsync.store.db import Store
from idsync.store.runs import RunCounts

log = structlog.get_logger(__name__)

PHASE = "import"
# Called after each committed page with the page number (1-based); tests inject failures here.
AfterCommit = Callable[[int], None]
# Extra writes in a page's transaction (watermarks), given the open connection.
Extra = Callable[[psycopg.Connection], None]


@dataclass
class RunContext:
    """Everything one import run needs, and what it has done so far."""

    settings: LdapSourceSettings
    store: Store
    session: LdapSession
    scope: Scope
    normalizer: Normalizer
    run_id: int
    kind: str
    after_commit: AfterCommit | None = None
    counts: RunCounts = field(default_factory=RunCounts)
    pages: int = 0
    seen: int = 0
    quarantined: int = 0
    started: float = field(default_factory=time.monotonic)
    _next_progress: int = 0

    def __post_init__(self) -> None:
        self._next_progress = self.settings.progress_every

    def bad(self, exc: BadEntry, object_type: str | None) -> Quarantined:
        """A BadEntry as a quarantine record (key: the anchor if known, else the DN)."""
        log.warning("source.entry_quarantined", dn=exc.dn, reason=exc.reason, run=self.run_id)
        return Quarantined(PHASE, exc.anchor or f"dn:{exc.dn}", exc.reason, object_type, exc.dn)

    def commit(
        self,
        objects: Sequence[SourceObject] = (),
        *,
        bad: Sequence[Quarantined] = (),
        deletes: Sequence[str] = (),
        tombstones: Sequence[str] = (),
        member_deltas: Sequence[MemberDelta] = (),
        seen_run: int | None = None,
        extra: Extra | None = None,
    ) -> None:
        """Write one page in one transaction (with `extra`, e.g. the cookie that produced it).

        `deletes` left the scope; `tombstones` were deleted in the directory (and so also leave
        every group that listed them).
        """
        with self.store.transaction() as conn:
            counts = source_space.upsert(conn, objects, seen_run=seen_run) if objects else RunCounts()
            if member_deltas:
                # A group whose only change is its membership counts as updated.
                touched = {o.anchor for o in objects}
                alone = [d for d in member_deltas if d.group_anchor not in touched]
                counts.updated += source_space.apply_member_deltas(conn, alone)
                source_space.apply_member_deltas(
                    conn, [d for d in member_deltas if d.group_anchor in touched]
                )
            if deletes or tombstones:
                counts.deleted += source_space.delete(conn, [*deletes, *tombstones])
            if tombstones:
                # a deleted object leaves its groups, and DirSync does not report those groups
                dropped = source_space.drop_member_refs(conn, tombstones)
                counted = {o.anchor for o in objects} | {d.group_anchor for d in member_deltas}
                counts.updated += len(dropped - counted)
            if bad:
                quarantine.put(conn, bad)
                counts.errors += len(bad)
            if objects:
                quarantine.release(conn, PHASE, [o.anchor for o in objects])
            if extra is not None:
                extra(conn)
        self.counts.add(counts)
        self.quarantined += len(bad)
        self.pages += 1
        progress.beat()  # a page committed: the main loop moves on
        self.seen += len(objects) + len(bad) + len(deletes) + len(tombstones)
        if self.seen >= self._next_progress:
            self._next_progress = self.seen + self.settings.progress_every
            elapsed = time.monotonic() - self.started
            log.info(
                "source.progress",
                kind=self.kind,
                run=self.run_id,
                objects=self.seen,
                pages=self.pages,
                per_second=round(self.seen / elapsed, 1) if elapsed > 0 else None,
            )
        if self.after_commit is not None:
            self.after_commit(self.pages)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
