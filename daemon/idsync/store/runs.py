"""Run history: one row per import, sync or export run, with its counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psycopg

from idsync.store.db import Store


@dataclass
class RunCounts:
    """What a run did; the importers add to it as they go."""

    added: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    errors: int = 0
    detail: dict[str, Any] = field(default_factory=dict)

    def add(self, other: RunCounts) -> None:
        self.added += other.added
        self.updated += other.updated
        self.deleted += other.deleted
        self.unchanged += other.unchanged
        self.errors += other.errors


@dataclass(frozen=True)
class Run:
    id: int
    kind: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    added: int
    updated: int
    deleted: int
    unchanged: int
    errors: int
    watermark: str | None
    error: str | None


def start(store: Store, kind: str) -> int:
    """Record the start of a run; returns its id."""
    with store.transaction() as conn:
        row = conn.execute("INSERT INTO run_history (kind) VALUES (%s) RETURNING id", (kind,)).fetchone()
    assert row is not None
    return int(row[0])


def finish(
    conn: psycopg.Connection,
    run_id: int,
    counts: RunCounts,
    *,
    status: str = "ok",
    watermark: str | None = None,
    error: str | None = None,
) -> None:
    """Record the end of a run, in the caller's transaction (with the run's last data)."""
    conn.execute(
        "UPDATE run_history SET finished_at = now(), status = %s, added = %s, updated = %s,"
        " deleted = %s, unchanged = %s, errors = %s, watermark = %s, detail = %s, error = %s"
        " WHERE id = %s",
        (
            status,
            counts.added,
            counts.updated,
            counts.deleted,
            counts.unchanged,
            counts.errors,
            watermark,
            orjson.dumps(counts.detail).decode(),
            error,
            run_id,
        ),
    )


def fail(store: Store, run_id: int, counts: RunCounts, error: str) -> None:
    with store.transaction() as conn:
        finish(conn, run_id, counts, status="failed", error=error)


def recent(store: Store, kind: str | None = None, limit: int = 20) -> list[Run]:
    """The newest runs, optionally of one kind."""
    q = (
        "SELECT id, kind, started_at, finished_at, status, added, updated, deleted, unchanged, errors,"
        " watermark, error FROM run_history"
    )
    with store.connection() as conn:
        if kind:
            rows = conn.execute(q + " WHERE kind = %s ORDER BY id DESC LIMIT %s", (kind, limit)).fetchall()
        else:
            rows = conn.execute(q + " ORDER BY id DESC LIMIT %s", (limit,)).fetchall()
    return [Run(*r) for r in rows]
