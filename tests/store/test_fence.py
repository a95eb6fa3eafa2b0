"""The fence row refuses claims from an old epoch or after the lease ran out."""

from __future__ import annotations

import pytest

from idsync.fencing import Fenced
from idsync.store import fence, migrate
from idsync.store.db import Store


def test_fence_accepts_only_the_current_epoch_within_its_lease(pg_dsn: str, pg_schema: str) -> None:
    with Store(pg_dsn, pg_schema) as store:
        migrate.migrate(store)
        with store.transaction() as conn, pytest.raises(Fenced, match="no leadership recorded"):
            fence.check(conn, 1)
        with store.transaction() as conn:
            fence.renew(conn, 1, "a", 30)
        with store.transaction() as conn:
            fence.check(conn, 1)
        with store.transaction() as conn:
            fence.renew(conn, 2, "a", 30)
            fence.renew(conn, 1, "a", 30)  # an old epoch can never overwrite a newer one
        with store.transaction() as conn, pytest.raises(Fenced, match="the store records epoch 2"):
            fence.check(conn, 1)
        with store.transaction() as conn:
            fence.revoke(conn, 2)
        with store.transaction() as conn, pytest.raises(Fenced, match="lease expired in the store"):
            fence.check(conn, 2)
