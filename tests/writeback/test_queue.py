"""The queue's AD rows (store/writeback.py): claimed only by a leader holding the fence row at the
store's export epoch, never by the Graph claim, given back when not written, and confirmed only
for the types planned."""

from __future__ import annotations

from datetime import timedelta

import pytest

from idsync.fencing import Fenced
from idsync.store import fence, migrate, pending
from idsync.store import writeback as wb
from idsync.store.db import Store

OPS = [
    wb.AdOp("group", "ad:Group_g1", "create", {"cloud_id": "g1", "displayName": "G1", "member": []}),
    wb.AdOp("user", "ad:guid:u1", "update", {"dn": "CN=U1,DC=x", "objectGUID": "u1"}),
]


def test_claim_is_fenced_and_apart_from_graph(pg_dsn: str, pg_schema: str) -> None:
    with Store(pg_dsn, pg_schema) as store:
        migrate.migrate(store)
        with store.transaction() as conn:
            wb.reconcile(conn, OPS, timedelta(0))
        # No leadership recorded: nothing is claimed.
        with store.transaction() as conn, pytest.raises(Fenced):
            wb.claim(conn, epoch=1, node="a", limit=10)
        with store.transaction() as conn:
            fence.renew(conn, 2, "b", 30)
        with store.transaction() as conn:
            # The Graph exporter never takes AD rows.
            assert pending.claim(conn, epoch=2, node="b", limit=10, held=False) == []
            got = wb.claim(conn, epoch=2, node="b", limit=10)
        # In export order: creates before updates.
        assert [(o.target, o.object_type, o.kind) for o in got] == [
            ("ad", "group", "create"),
            ("ad", "user", "update"),
        ]
        # An older epoch is refused by the fence row.
        with store.transaction() as conn, pytest.raises(Fenced, match="the store records epoch 2"):
            wb.claim(conn, epoch=1, node="a", limit=10)
        # Claimed and not written (fenced between writes): given back, claimable again at once.
        with store.transaction() as conn:
            assert wb.claim(conn, epoch=2, node="b", limit=10) == []
            assert wb.release(conn, [o.id for o in got], 2) == 2
            assert len(wb.claim(conn, epoch=2, node="b", limit=10)) == 2


def test_reconcile_confirms_only_the_planned_types(pg_dsn: str, pg_schema: str) -> None:
    with Store(pg_dsn, pg_schema) as store:
        migrate.migrate(store)
        with store.transaction() as conn:
            wb.reconcile(conn, OPS, timedelta(0))
            # Groups not planned this cycle (their import incomplete): their rows stay.
            got = wb.reconcile(conn, [], timedelta(0), ["user"])
            assert got["confirmed"] == 1
            rows = conn.execute("SELECT anchor FROM pending_export WHERE target = 'ad'").fetchall()
            assert rows == [("ad:Group_g1",)]
            # Planned and gone from the plan: confirmed.
            assert wb.reconcile(conn, [], timedelta(0))["confirmed"] == 1
