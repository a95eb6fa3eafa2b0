"""Claiming shares every batch between creates, updates, member operations and deletes (issue 16).

Against the real PostgreSQL of the test stack: a backlog of one kind cannot starve another, the
export order still holds within a kind, and member operations still wait for their target ids.
"""

from __future__ import annotations

from collections import Counter

from idsync.store import pending
from idsync.store.db import Store


def _queue(store: Store, rows: list[tuple[str, str, str, str, str | None]]) -> None:
    copy = "COPY pending_export (object_type, anchor, kind, member_anchor, target_id, payload) FROM STDIN"
    with store.transaction() as conn, conn.cursor() as cur, cur.copy(copy) as cp:
        for object_type, anchor, kind, member, tid in rows:
            cp.write_row((object_type, anchor, kind, member, tid, "{}"))


def _link(store: Store, rows: list[tuple[str, str, str]]) -> None:
    copy = "COPY sync_link (anchor, object_type, target_id, how) FROM STDIN"
    with store.transaction() as conn, conn.cursor() as cur, cur.copy(copy) as cp:
        for anchor, object_type, tid in rows:
            cp.write_row((anchor, object_type, tid, "created"))


def _claim(store: Store, limit: int = 20) -> list[pending.PendingExport]:
    with store.transaction() as conn:
        return pending.claim(conn, epoch=1, node="a", limit=limit, held=False)


def _member_backlog(store: Store, n: int) -> None:
    """A group with `n` member adds, every id known: all of them ready."""
    _link(store, [("g-0", "group", "tg-0")] + [(f"m-{i}", "user", f"tm-{i}") for i in range(n)])
    _queue(store, [("group", "g-0", "member_add", f"m-{i}", None) for i in range(n)])


def test_a_member_backlog_does_not_starve_creates_and_updates(store: Store) -> None:
    _member_backlog(store, 2000)
    _link(store, [(f"u-{i}", "user", f"tu-{i}") for i in range(3)])
    _queue(store, [("user", f"u-{i}", "update", "", f"tu-{i}") for i in range(3)])
    _queue(store, [("user", f"new-{i}", "create", "", None) for i in range(3)])
    first = _claim(store)
    kinds = Counter(o.kind for o in first)
    # every create and update goes in the first batch; the member adds fill the rest of it
    assert kinds == {"create": 3, "update": 3, "member_add": 14}
    assert [o.kind for o in first if o.kind != "member_add"] == ["create"] * 3 + ["update"] * 3


def test_a_create_backlog_does_not_starve_member_operations_and_deletes(store: Store) -> None:
    _queue(store, [("user", f"new-{i}", "create", "", None) for i in range(2000)])
    _member_backlog(store, 10)
    _link(store, [("gone", "user", "t-gone")])
    _queue(store, [("user", "gone", "delete", "", "t-gone")])
    kinds = Counter(o.kind for o in _claim(store))
    assert kinds["member_add"] >= 5 and kinds["delete"] == 1  # before, 20 creates and nothing else
    assert sum(kinds.values()) == 20
    creates = [o for o in _claim(store, 2000) if o.kind == "create"]
    names = [o.anchor for o in creates]
    assert names == sorted(names, key=lambda a: int(a.split("-")[1]))  # queue order within a lane


def test_member_operations_still_wait_for_their_ids_and_one_lane_alone_fills_the_batch(
    store: Store,
) -> None:
    _link(store, [("g-1", "group", "tg-1")])
    _queue(store, [("group", "g-1", "member_add", f"unknown-{i}", None) for i in range(5)])
    _queue(store, [("user", f"new-{i}", "create", "", None) for i in range(50)])
    got = _claim(store)
    assert Counter(o.kind for o in got) == {"create": 20}  # nobody else is ready: no share is lost
    assert {o.anchor for o in _claim(store, 100)} == {f"new-{i}" for i in range(20, 50)}
