"""The node cycle: only a fenced leader exports, a new leader catches up first, SIGTERM hands over.

The pipeline here is a recording stand-in for the connectors (which have their own tests); the
store, the fence row and ZooKeeper are real.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from idsync import progress
from idsync.fencing import Fence, Fenced
from idsync.ha.loop import HaLoop
from idsync.runtime.node import Node
from idsync.runtime.pipeline import CycleReport, ExportReport, StopFlag
from idsync.store import fence as store_fence
from idsync.store import migrate
from idsync.store.db import Store
from tests.ha.test_election import make_node  # noqa: F401  (fixture)


class RecordingPipeline:
    """Imports nothing; 'exports' batches by claiming them through the real store fence."""

    def __init__(self, store: Store, batches: int = 3) -> None:
        self.store = store
        self.batches = batches
        self.writes: list[tuple[str, int]] = []  # (node, epoch) per batch
        self.catch_ups = 0
        self.fail_next = False

    async def import_and_sync(self, *, full: bool = False) -> CycleReport:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("LDAP server down")
        return CycleReport(True, "source +0 ~0 -0", "r1", True, {"create": self.batches})

    async def catch_up_target(self) -> None:
        self.catch_ups += 1

    async def export(self, fence: Fence, stop: StopFlag) -> ExportReport:
        done = 0
        try:
            for _ in range(self.batches):
                if stop.is_set():
                    break
                fence.ensure()
                with self.store.transaction() as conn:
                    store_fence.check(conn, fence.epoch)
                self.writes.append((fence.node, fence.epoch))
                done += 1
        except Fenced as exc:
            return ExportReport(f"fenced after {done} batches: {exc}", done, done, fenced=True)
        return ExportReport(f"exported {done} batches", done, done)

    def reload(self) -> str:
        return "no change"

    def close(self) -> None:
        pass


@pytest.fixture
def stores(pg_dsn: str) -> Iterator[Callable[[str], Store]]:
    import uuid

    import psycopg

    made: list[Store] = []

    def make(node: str) -> Store:
        s = Store(pg_dsn, f"t_{node}_{uuid.uuid4().hex[:8]}").open()
        migrate.migrate(s)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{s.schema}" CASCADE')


def cycle(node: Node) -> str:
    return asyncio.run(node.run_cycle()).sentence


def test_leader_exports_followers_do_not_and_takeover_catches_up(
    make_node: Callable[..., HaLoop],  # noqa: F811
    stores: Callable[[str], Store],
) -> None:
    pa, pb = RecordingPipeline(stores("a")), RecordingPipeline(stores("b"))
    a = Node("a", pa, pa.store, make_node("a"))
    b = Node("b", pb, pb.store, make_node("b"))

    assert cycle(a) == "promoted: epoch 1, first leader, 3 pending exports; source +0 ~0 -0"
    assert cycle(b) == "staging: leader is a (epoch 1); source +0 ~0 -0"
    assert cycle(a) == "leader at epoch 1: exporting; exported 3 batches; source +0 ~0 -0"
    assert pa.writes == [("a", 1)] * 3 and pb.writes == []

    assert a.ha is not None
    a.ha.coord.stop()  # the leader dies without a hand-over
    assert cycle(b).startswith("promoted: epoch 2, previous leader a was lost")
    # The lock-delay (the old leader's longest write, 0.2 s here) holds the first export back.
    assert cycle(b).startswith("leader at epoch 2: waiting ")
    assert pb.writes == []
    time.sleep(0.25)
    assert cycle(b) == "leader at epoch 2: exporting; exported 3 batches; source +0 ~0 -0"
    assert pb.catch_ups == 1  # the target import caught up before the first export
    assert pb.writes == [("b", 2)] * 3
    # The old leader, if it comes back, demotes itself and its own store refuses its claims.
    assert cycle(a) == "demoted: ZooKeeper session lost (epoch 1); source +0 ~0 -0"
    assert pa.writes == [("a", 1)] * 3
    with pa.store.transaction() as conn, pytest.raises(Fenced, match="lease expired in the store"):
        store_fence.check(conn, 1)


def test_a_failed_cycle_is_reported_and_blocks_promotion(
    make_node: Callable[..., HaLoop],  # noqa: F811
    stores: Callable[[str], Store],
) -> None:
    p = RecordingPipeline(stores("a"))
    node = Node("a", p, p.store, make_node("a"))
    p.fail_next = True
    assert cycle(node) == (
        "staging: no leader, not taking over: last cycle failed (RuntimeError: LDAP server down); "
        "cycle failed: RuntimeError: LDAP server down"
    )
    assert cycle(node).startswith("promoted: epoch 1")


def test_stop_between_batches_then_release(
    make_node: Callable[..., HaLoop],  # noqa: F811
    stores: Callable[[str], Store],
) -> None:
    pa, pb = RecordingPipeline(stores("a")), RecordingPipeline(stores("b"))
    stop = threading.Event()
    a = Node("a", pa, pa.store, make_node("a"), stop=stop)
    b = Node("b", pb, pb.store, make_node("b"))
    cycle(a)
    stop.set()  # SIGTERM: no new batch starts
    assert cycle(a) == "leader at epoch 1: exporting; source +0 ~0 -0"
    assert pa.writes == []
    assert a.release("shutdown") == "released leadership at epoch 1: shutdown"
    with pa.store.transaction() as conn, pytest.raises(Fenced, match="lease expired in the store"):
        store_fence.check(conn, 1)
    assert cycle(b).startswith("promoted: epoch 2, previous leader a released cleanly")


def test_startup_waits_for_postgresql(spawn: Callable[[str], Any]) -> None:
    from idsync.runtime.daemon import retrying
    from idsync.store.errors import StoreUnavailable

    pg = spawn("postgres")
    pg.stop()
    threading.Timer(1.5, pg.start).start()
    store = retrying(
        "postgresql",
        lambda: Store(pg.dsn, "t_wait", connect_timeout=1).open(),
        (StoreUnavailable,),
        threading.Event(),
    )
    try:
        migrate.migrate(store)
    finally:
        store.close()


class LongPhases(RecordingPipeline):
    """A phase running page by page in a worker thread, as the imports and the evaluation do."""

    def __init__(self, store: Store, ha: HaLoop) -> None:
        super().__init__(store)
        self.ha = ha
        self.stalls: list[tuple[float, float]] = []  # (stalled before a page, after it)

    async def import_and_sync(self, *, full: bool = False) -> CycleReport:
        def pages() -> None:
            for _ in range(3):
                self.ha._progress -= 1000.0  # as if this page had taken 1000 s
                before = self.ha.stalled_for()
                progress.beat()  # what run.py, delta.py and the engine do after each page
                self.stalls.append((before, self.ha.stalled_for()))

        await asyncio.to_thread(pages)
        return await super().import_and_sync(full=full)


def test_pages_of_a_long_phase_count_as_main_loop_progress(
    make_node: Callable[..., HaLoop],  # noqa: F811
    stores: Callable[[str], Store],
) -> None:
    """A leader's lease is renewed only while its main loop progresses; a full import of a large
    directory is one phase of minutes, so each committed page reports progress — from the worker
    thread the phase runs in, through the cycle's context."""
    ha = make_node("a")
    p = LongPhases(stores("a"), ha)
    node = Node("a", p, p.store, ha)
    cycle(node)
    assert len(p.stalls) == 3
    assert all(before >= 1000.0 and after < 1000.0 for before, after in p.stalls)
    # Outside a node's cycle (a command, a test) a page reports to nobody.
    ha._progress -= 1000.0
    progress.beat()
    assert ha.stalled_for() >= 1000.0
