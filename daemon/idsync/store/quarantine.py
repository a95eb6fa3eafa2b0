"""Quarantine: objects set aside with their reason while everything else goes on."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from idsync.model import Quarantined

# Words every privileged user's refusal carries in its reason (target/export.py writes them):
# how `privileged` finds those entries among the export phase's.
PRIVILEGED_MARK = "holds the directory role(s)"


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


def held_phases(conn: psycopg.Connection, phases: Iterable[str]) -> set[str]:
    """Which of these phases have entries (a sync with none to release skips `release`)."""
    rows = conn.execute(
        "SELECT p FROM unnest(%s::text[]) p WHERE EXISTS (SELECT 1 FROM quarantine q WHERE q.phase = p)",
        (list(phases),),
    ).fetchall()
    return {r[0] for r in rows}


def listing(conn: psycopg.Connection, phase: str | None = None) -> list[Quarantined]:
    q = "SELECT phase, key, reason, object_type, dn FROM quarantine"
    rows = (
        conn.execute(q + " WHERE phase = %s ORDER BY key", (phase,)).fetchall()
        if phase
        else conn.execute(q + " ORDER BY phase, key").fetchall()
    )
    return [Quarantined(*r) for r in rows]


def privileged(conn: psycopg.Connection) -> int:
    """How many users are quarantined because Graph refused to change or delete an administrator."""
    row = conn.execute(
        "SELECT count(*) FROM quarantine WHERE phase = 'export' AND strpos(reason, %s) > 0",
        (PRIVILEGED_MARK,),
    ).fetchone()
    return int(row[0]) if row else 0


def count(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT phase, count(*) FROM quarantine GROUP BY phase").fetchall()
    return {r[0]: int(r[1]) for r in rows}


# --- the operator's tools (`idsync quarantine`) ------------------------------------------------

# Phases an operator can retry: an export is re-armed, a sync re-evaluated. An import entry is
# re-read only by the next import of it, and a notice is not a failure.
RETRYABLE = ("export", "sync")


@dataclass(frozen=True)
class Entry:
    """One quarantine entry as an operator reads it: what, why, how often it was tried, since when."""

    phase: str
    key: str
    object_type: str | None
    dn: str | None
    name: str  # userPrincipalName or displayName when known, else the DN or the key
    reason: str
    attempts: int  # export attempts of its quarantined operations (0 outside the export phase)
    operations: tuple[str, ...]  # its quarantined operations ("update", "member_add <anchor>")
    first_seen: datetime
    last_seen: datetime


def entries(conn: psycopg.Connection, phase: str | None = None) -> list[Entry]:
    """Every quarantine entry (optionally of one phase) with its attempts and operations."""
    rows = conn.execute(
        "SELECT q.phase, q.key, q.object_type, coalesce(q.dn, s.dn), q.reason, q.first_seen, q.last_seen,"
        " coalesce(d.attrs ->> 'userPrincipalName', d.attrs ->> 'displayName',"
        "  t.attrs ->> 'userPrincipalName', t.attrs ->> 'displayName'),"
        " coalesce(max(p.attempts), 0),"
        " coalesce(array_agg(trim(p.kind || ' ' || p.member_anchor) ORDER BY p.id)"
        "  FILTER (WHERE p.id IS NOT NULL), '{}')"
        " FROM quarantine q"
        " LEFT JOIN source_object s ON s.anchor = q.key"
        " LEFT JOIN desired_object d ON d.anchor = q.key"
        " LEFT JOIN sync_link l ON l.anchor = q.key"
        " LEFT JOIN target_object t ON t.id = l.target_id"
        " LEFT JOIN pending_export p ON q.phase = 'export' AND p.anchor = q.key"
        "  AND p.quarantined_at IS NOT NULL"
        " WHERE %(phase)s::text IS NULL OR q.phase = %(phase)s"
        " GROUP BY q.phase, q.key, q.object_type, 4, q.reason, q.first_seen, q.last_seen, 8"
        " ORDER BY q.phase, q.key",
        {"phase": phase},
    ).fetchall()
    return [
        Entry(r[0], r[1], r[2], r[3], r[7] or r[3] or r[1], r[4], int(r[8]), tuple(r[9]), r[5], r[6])
        for r in rows
    ]


@dataclass(frozen=True)
class Done:
    """What `retry` or `clear` did with one entry, as a sentence for the operator."""

    phase: str
    key: str
    dn: str | None
    sentence: str


def _match(
    conn: psycopg.Connection, ids: Sequence[str] | None, phases: Sequence[str]
) -> list[tuple[str, str, str | None]]:
    """(phase, key) of the entries an operator named by anchor or DN (all of them for None)."""
    # Export entries carry no DN of their own: the source object's DN names them too.
    sql = (
        "SELECT q.phase, q.key, coalesce(q.dn, s.dn) FROM quarantine q"
        " LEFT JOIN source_object s ON s.anchor = q.key WHERE q.phase = ANY(%s)"
    )
    params: list[object] = [list(phases)]
    if ids is not None:
        sql += " AND (q.key = ANY(%s) OR lower(coalesce(q.dn, s.dn)) = ANY(%s))"
        params += [list(ids), [i.lower() for i in ids]]
    rows = conn.execute(sql + " ORDER BY q.phase, q.key FOR UPDATE OF q", params).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def retry(conn: psycopg.Connection, ids: Sequence[str] | None) -> list[Done]:
    """Give quarantined objects another go (`ids`: anchors or DNs; None: every retryable entry).

    export: its quarantined operations are re-armed with zero attempts and no back-off (the next
    export batch of the leader takes them); sync: the source object is evaluated again by the next
    sync. The entry is forgotten; a new failure quarantines it again with the new reason.
    """
    done = []
    for phase, key, dn in _match(conn, ids, RETRYABLE):
        if phase == "export":
            n = conn.execute(
                "UPDATE pending_export SET quarantined_at = NULL, attempts = 0, unequal_exports = 0,"
                " not_before = NULL,"
                " last_error = NULL, claimed_epoch = NULL, claimed_by = NULL, claimed_at = NULL"
                " WHERE anchor = %s AND quarantined_at IS NOT NULL",
                (key,),
            ).rowcount
            what = f"{n} operation(s) re-armed for the next export" if n else "no operation left to re-arm"
        else:
            # A new changed_seq puts the object in the next delta sync's evaluation.
            n = conn.execute(
                "UPDATE source_object SET changed_seq = nextval('change_seq'), updated_at = now()"
                " WHERE anchor = %s AND NOT deleted",
                (key,),
            ).rowcount
            what = "evaluated again by the next sync" if n else "the source object is gone"
        conn.execute("DELETE FROM quarantine WHERE phase = %s AND key = %s", (phase, key))
        done.append(Done(phase, key, dn, what))
    return done


def clear(conn: psycopg.Connection, ids: Sequence[str]) -> list[Done]:
    """Forget quarantine entries (anchors or DNs), and drop the quarantined operations with them.

    Nothing is exported for a cleared operation until the object changes again (or a full sync
    recomputes it): the operator has handled the object by hand, or accepts the difference.
    """
    done = []
    for phase, key, dn in _match(conn, ids, ("import", "sync", "export", "notice", "managed")):
        what = "forgotten"
        if phase == "export":
            n = conn.execute(
                "DELETE FROM pending_export WHERE anchor = %s AND quarantined_at IS NOT NULL", (key,)
            ).rowcount
            what = f"forgotten, {n} quarantined operation(s) dropped until the object changes again"
        conn.execute("DELETE FROM quarantine WHERE phase = %s AND key = %s", (phase, key))
        done.append(Done(phase, key, dn, what))
    return done
