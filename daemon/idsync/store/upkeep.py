"""Table statistics and dead rows after the bulk changes of a sync, without waiting for autovacuum.

PostgreSQL plans from the statistics ANALYZE last wrote, and keeps a prepared statement's
generic plan until the statistics of a table it reads change. A daemon whose queue statements
were planned while `sync_link` was empty went on scanning the whole link table for every row
of every claim once a first sync had linked 100,000 objects (bench_throughput: ~60 member adds
per second instead of ~4,000) — until something analyzed the table. autovacuum does, within a
minute, where it runs; where it is off (as on the machines this project's CI runs on, and at
some sites), nothing did.

So after each sync the engine does what autovacuum would, for the instance's own tables only:
ANALYZE a table changed by more than autovacuum's analyze threshold since its last analysis
(`autovacuum_analyze_threshold` + `autovacuum_analyze_scale_factor` * rows, the server's own
settings); VACUUM one with more dead rows than the vacuum threshold when autovacuum is off for
it (server-wide or by the table's `autovacuum_enabled`); and VACUUM the queue after a sync that
confirmed `VACUUM_AFTER` operations whatever autovacuum does (their dead rows would weigh on the
next claims before autovacuum comes round). An ANALYZE reads a sample of at most 30,000 rows
(at the default statistics target) whatever the table's size.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg
from psycopg import sql

QUEUE = "pending_export"
# A sync that confirmed at least this many operations vacuums the queue (measured at 1,000,000
# users: a delta sync right after the first sync's 3,000,000 confirmations took +0.5 s without).
VACUUM_AFTER = 50_000


@dataclass(frozen=True, slots=True)
class TableStats:
    """What the cumulative statistics say of one table (pg_stat_user_tables, pg_class)."""

    rows: float  # reltuples as of the last VACUUM/ANALYZE; 0 when never measured
    changed: int  # rows inserted, updated or deleted since the last ANALYZE
    dead: int
    autovacuum: bool  # autovacuum works on this table (server setting and table option)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """autovacuum's formulas: act above `base + scale * rows`."""

    analyze_base: float = 50
    analyze_scale: float = 0.1
    vacuum_base: float = 50
    vacuum_scale: float = 0.2


@dataclass(frozen=True, slots=True)
class Tended:
    analyzed: tuple[str, ...] = ()
    vacuumed: tuple[str, ...] = ()
    seconds: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.analyzed or self.vacuumed)


@dataclass(frozen=True, slots=True)
class Plan:
    analyze: tuple[str, ...] = ()
    vacuum: tuple[str, ...] = ()


def plan(tables: Mapping[str, TableStats], limits: Thresholds, *, confirmed: int = 0) -> Plan:
    """Which tables to VACUUM (ANALYZE) and which only to ANALYZE."""
    vacuum = [
        name
        for name, t in sorted(tables.items())
        if (name == QUEUE and confirmed >= VACUUM_AFTER)
        or (not t.autovacuum and t.dead > limits.vacuum_base + limits.vacuum_scale * t.rows)
    ]
    analyze = [
        name
        for name, t in sorted(tables.items())
        if name not in vacuum and t.changed > limits.analyze_base + limits.analyze_scale * t.rows
    ]
    return Plan(tuple(analyze), tuple(vacuum))


def flush_stats(conn: psycopg.Connection) -> None:
    """Make this session's row counts visible to `tend` as soon as its transaction ends
    (PostgreSQL 15+ reports them at most once a second otherwise; older servers: no-op)."""
    if conn.info.server_version >= 150000:
        conn.execute("SELECT pg_stat_force_next_flush()")


def _limits(conn: psycopg.Connection) -> tuple[bool, Thresholds]:
    row = conn.execute(
        "SELECT current_setting('autovacuum')::bool,"
        " current_setting('autovacuum_analyze_threshold')::float8,"
        " current_setting('autovacuum_analyze_scale_factor')::float8,"
        " current_setting('autovacuum_vacuum_threshold')::float8,"
        " current_setting('autovacuum_vacuum_scale_factor')::float8"
    ).fetchone()
    assert row is not None
    return bool(row[0]), Thresholds(*(float(v) for v in row[1:]))


def stats(conn: psycopg.Connection, server_autovacuum: bool) -> dict[str, TableStats]:
    """The instance schema's tables (the first schema of the search path)."""
    rows = conn.execute(
        "SELECT s.relname, greatest(c.reltuples, 0), s.n_mod_since_analyze, s.n_dead_tup,"
        " coalesce((SELECT o.option_value::bool FROM pg_options_to_table(c.reloptions) o"
        "   WHERE o.option_name = 'autovacuum_enabled'), true)"
        " FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
        " WHERE s.schemaname = current_schema()"
    ).fetchall()
    return {
        r[0]: TableStats(float(r[1]), int(r[2]), int(r[3]), server_autovacuum and bool(r[4])) for r in rows
    }


def tend(conn: psycopg.Connection, *, confirmed: int = 0) -> Tended:
    """ANALYZE / VACUUM the instance's tables that need it (see the module doc). `conn` must be
    in autocommit mode (VACUUM cannot run in a transaction)."""
    t0 = time.monotonic()
    server_autovacuum, limits = _limits(conn)
    todo = plan(stats(conn, server_autovacuum), limits, confirmed=confirmed)
    for name in todo.vacuum:
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(name)))
    for name in todo.analyze:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(name)))
    return Tended(todo.analyze, todo.vacuum, time.monotonic() - t0)
