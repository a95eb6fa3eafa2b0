"""Quarantine: objects set aside with their reason while everything else goes on."""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

from idsync.model import Quarantined


def put(conn: psycopg.Connection, items: Iterable[Quarantined]) -> int:
    """Record (or refresh) quarantined objects; returns how many."""
    rows = [(q.phase, q.key, q.object_type, q.dn, q.reason) for q in items]
    if not rows:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO quarantine (phase, key, object_type, dn, reason) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (phase, key) DO UPDATE SET reason = excluded.reason, dn = excluded.dn,"
            " object_type = excluded.object_type, last_seen = now()",
            rows,
        )
    return len(rows)


def release(conn: psycopg.Connection, phase: str, keys: Iterable[str]) -> None:
    """Forget quarantine entries of objects that have since been processed."""
    conn.execute("DELETE FROM quarantine WHERE phase = %s AND key = ANY(%s)", (phase, list(keys)))


def listing(conn: psycopg.Connection, phase: str | None = None) -> list[Quarantined]:
    q = "SELECT phase, key, reason, object_type, dn FROM quarantine"
    rows = (
        conn.execute(q + " WHERE phase = %s ORDER BY key", (phase,)).fetchall()
        if phase
        else conn.execute(q + " ORDER BY phase, key").fetchall()
    )
    return [Quarantined(*r) for r in rows]


def count(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT phase, count(*) FROM quarantine GROUP BY phase").fetchall()
    return {r[0]: int(r[1]) for r in rows}
