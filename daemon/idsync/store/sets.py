"""The sync's dirty sets (temporary tables of anchors) in SQL conditions."""

from __future__ import annotations

import psycopg

# Above this many dirty anchors, `among` joins instead of walking the index per anchor.
BIG = 20_000


def among(conn: psycopg.Connection, column: str, dirty: str) -> str:
    """SQL: `column` is one of the anchors in the temporary table `dirty`.

    A few anchors: `= ANY(ARRAY(…))`, which walks the anchor index (a join let a queue bloated by
    a big confirmation — 300,000 deleted rows before autovacuum — be scanned whole instead). Many
    (a full sync): a semi-join, since the array is searched linearly for each row the planner
    does not find through the index (a 1,000,000-user first sync sat for minutes there).
    """
    if more_than(conn, dirty, BIG):
        return f"{column} IN (SELECT anchor FROM {dirty})"
    return f"{column} = ANY(ARRAY(SELECT anchor FROM {dirty}))"


def more_than(conn: psycopg.Connection, table: str, n: int) -> bool:
    """Whether the temporary table `table` holds more than `n` rows (reads at most n + 1)."""
    row = conn.execute(f"SELECT count(*) > {n} FROM (SELECT 1 FROM {table} LIMIT {n + 1}) x").fetchone()
    return bool(row and row[0])
