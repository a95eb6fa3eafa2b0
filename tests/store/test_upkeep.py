"""The node tends its own tables after a sync: ANALYZE past autovacuum's threshold, VACUUM where
autovacuum does not, and the queue after a big confirmation (store/upkeep.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from idsync.store import fence, migrate, pending, upkeep
from idsync.store.db import Store
from idsync.store.upkeep import TableStats, Thresholds


def _t(rows: float = 1000, changed: int = 0, dead: int = 0, autovacuum: bool = True) -> TableStats:
    return TableStats(rows=rows, changed=changed, dead=dead, autovacuum=autovacuum)


def test_the_plan_follows_autovacuums_formulas() -> None:
    limits = Thresholds()  # PostgreSQL's defaults: 50 + 10 % to analyze, 50 + 20 % to vacuum
    got = upkeep.plan(
        {
            "sync_link": _t(rows=1000, changed=151),  # above 50 + 100
            "source_object": _t(rows=1000, changed=150),  # at the threshold: not above it
            "target_object": _t(rows=0, changed=51),  # an empty (or never measured) table
            "desired_object": _t(rows=1000, dead=10_000, changed=0),  # autovacuum will see to it
        },
        limits,
    )
    assert got == upkeep.Plan(analyze=("sync_link", "target_object"), vacuum=())


def test_dead_rows_are_vacuumed_only_where_autovacuum_is_off() -> None:
    tables = {
        "desired_object": _t(rows=1000, dead=251, changed=300, autovacuum=False),  # above 50 + 200
        "source_object": _t(rows=1000, dead=250, changed=300, autovacuum=False),  # at it
        "target_object": _t(rows=1000, dead=251, changed=300, autovacuum=True),
    }
    got = upkeep.plan(tables, Thresholds())
    # a vacuumed table is analyzed by the same VACUUM (ANALYZE), not twice
    assert got == upkeep.Plan(analyze=("source_object", "target_object"), vacuum=("desired_object",))


def test_the_queue_is_vacuumed_after_a_big_confirmation_whatever_autovacuum_does() -> None:
    tables = {upkeep.QUEUE: _t(rows=10**6, dead=10, changed=10)}
    assert upkeep.plan(tables, Thresholds(), confirmed=upkeep.VACUUM_AFTER).vacuum == (upkeep.QUEUE,)
    assert upkeep.plan(tables, Thresholds(), confirmed=upkeep.VACUUM_AFTER - 1) == upkeep.Plan()


@pytest.fixture
def store(pg_dsn: str, pg_schema: str) -> Iterator[Store]:
    with Store(pg_dsn, pg_schema, max_size=1) as st:  # one connection: its prepared statements
        migrate.migrate(st)
        yield st


def _counts(conn: psycopg.Connection, table: str) -> tuple[int, int]:
    row = conn.execute(
        "SELECT analyze_count + autoanalyze_count, vacuum_count FROM pg_stat_user_tables"
        " WHERE schemaname = current_schema() AND relname = %s",
        (table,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _link_scans(conn: psycopg.Connection, statement: str, params: str) -> list[str]:
    """How the statement prepared on this connection (psycopg prepares a statement run 5 times)
    would read sync_link now: the plan nodes naming it."""
    name = conn.execute(
        "SELECT name FROM pg_prepared_statements WHERE statement LIKE %s", (statement + "%",)
    ).fetchone()
    assert name is not None, f"no prepared statement starting {statement!r}"
    plan: Any = conn.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {name[0]}({params})").fetchone()
    found: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Relation Name") == "sync_link":
            found.append(node["Node Type"])
        for child in node.get("Plans", ()):
            walk(child)

    doc = plan[0] if not isinstance(plan[0], str) else json.loads(plan[0])
    walk(doc[0]["Plan"])
    return found


def test_claims_planned_while_no_link_existed_read_the_link_index_once_links_are_tended(store: Store) -> None:
    """The regression of bench_throughput (issue 16): the generic plan of the claim's read was
    made while sync_link was empty and kept scanning it whole for every claimed row."""
    with store.connection() as conn:
        conn.execute(
            "INSERT INTO pending_export (object_type, anchor, kind, member_anchor, payload)"
            " SELECT 'user', 'u-' || u, 'create', '', '{}' FROM generate_series(1, 2000) u"
        )
    for _ in range(12):  # enough runs for PostgreSQL to settle on a generic plan
        with store.transaction() as conn:
            fence.renew(conn, 1, "n", 3600)
            pending.claim(conn, epoch=1, node="n", limit=5, held=False)
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO sync_link (anchor, object_type, target_id, how)"
            " SELECT 'u-' || u, 'user', 't-' || u, 'created' FROM generate_series(1, 20000) u"
        )
        upkeep.flush_stats(conn)
    select = "SELECT p.id, p.object_type"
    with store.connection() as conn:
        analyzed, _ = _counts(conn, "sync_link")
        before = _link_scans(conn, select, "ARRAY[1, 2, 3]")
        if _counts(conn, "sync_link")[0] == analyzed:  # autovacuum did not analyze it meanwhile
            assert "Seq Scan" in before, before  # the stale plan: what the fix must change
        tended = upkeep.tend(conn)
        assert "sync_link" in tended.analyzed
        assert _counts(conn, "sync_link")[0] > analyzed
        after = _link_scans(conn, select, "ARRAY[1, 2, 3]")
    assert after and "Seq Scan" not in after, after


def test_tend_vacuums_dead_rows_where_autovacuum_is_off_and_analyzes_the_rest(store: Store) -> None:
    with store.connection() as conn:
        conn.execute("ALTER TABLE meta SET (autovacuum_enabled = false)")
        server_autovacuum = conn.execute("SELECT current_setting('autovacuum')::bool").fetchone()
    with store.transaction() as conn:
        for table in ("meta", "watermark"):
            _fill_and_empty(conn, table)
        upkeep.flush_stats(conn)
    with store.connection() as conn:
        before = {t: _counts(conn, t) for t in ("meta", "watermark")}
        tended = upkeep.tend(conn)
        after = {t: _counts(conn, t) for t in ("meta", "watermark")}
    assert "meta" in tended.vacuumed and after["meta"][1] == before["meta"][1] + 1
    # the server's own setting decides for a table without the option (CI's server has it off)
    assert ("watermark" in tended.vacuumed) == (not (server_autovacuum and server_autovacuum[0]))
    assert "watermark" in tended.vacuumed + tended.analyzed
    with store.connection() as conn:
        assert not upkeep.tend(conn)  # nothing changed since: nothing to do


def _fill_and_empty(conn: psycopg.Connection, table: str) -> None:
    """Insert and delete 300 rows: 300 dead rows, 600 changes since the last analysis."""
    value = "'\\x00'::bytea" if table == "watermark" else "'x'"
    key = "name" if table == "watermark" else "key"
    conn.execute(
        f"INSERT INTO {table} ({key}, value) SELECT 'w' || i, {value} FROM generate_series(1, 300) i"
    )
    conn.execute(f"DELETE FROM {table} WHERE {key} LIKE 'w%'")
