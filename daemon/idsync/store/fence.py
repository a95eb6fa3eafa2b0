"""The fence row: leadership as the HA layer last confirmed it, checked in every claim transaction.

The HA layer writes (epoch, lease_until) after each confirmation with ZooKeeper; the export path
calls `check()` inside the transaction that claims a batch. A paused or partitioned old leader
whose lease ran out (on the database's clock, not its own) cannot claim work, whatever its
process believes.
"""

from __future__ import annotations

import psycopg

from idsync.fencing import Fenced


def renew(conn: psycopg.Connection, epoch: int, node: str, seconds: float) -> None:
    """Record that this node leads at `epoch` for the next `seconds` (never lowers the epoch)."""
    conn.execute(
        "INSERT INTO fence (singleton, epoch, node, lease_until)"
        " VALUES (true, %s, %s, now() + make_interval(secs => %s))"
        " ON CONFLICT (singleton) DO UPDATE SET epoch = excluded.epoch, node = excluded.node,"
        " lease_until = excluded.lease_until, updated_at = now()"
        " WHERE fence.epoch <= excluded.epoch",
        (epoch, node, seconds),
    )


def highest_epoch(conn: psycopg.Connection) -> int:
    """The highest epoch this store has run under (the fence row never lowers it); 0 if none."""
    row = conn.execute("SELECT epoch FROM fence WHERE singleton").fetchone()
    return int(row[0]) if row else 0


def observe_epoch(conn: psycopg.Connection, epoch: int) -> None:
    """Record an epoch seen in ZooKeeper (another node's leadership): it never lowers the row,
    and a higher one ends any lease of ours at once, so our own old epoch can claim nothing."""
    conn.execute(
        "INSERT INTO fence (singleton, epoch, node, lease_until) VALUES (true, %s, '', now())"
        " ON CONFLICT (singleton) DO UPDATE SET epoch = excluded.epoch, lease_until = now(),"
        " updated_at = now() WHERE fence.epoch < excluded.epoch",
        (epoch,),
    )


def revoke(conn: psycopg.Connection, epoch: int) -> None:
    """End the lease of `epoch` now (demotion, release)."""
    conn.execute("UPDATE fence SET lease_until = now(), updated_at = now() WHERE epoch = %s", (epoch,))


def check(conn: psycopg.Connection, epoch: int) -> None:
    """Raise Fenced unless `epoch` holds an unexpired lease; locks the row for the transaction."""
    row = conn.execute("SELECT epoch, lease_until > now() FROM fence WHERE singleton FOR SHARE").fetchone()
    if row is None:
        raise Fenced(epoch, "no leadership recorded in the store")
    current, valid = int(row[0]), bool(row[1])
    if current != epoch:
        raise Fenced(epoch, f"the store records epoch {current}")
    if not valid:
        raise Fenced(epoch, "lease expired in the store")
