"""A leader isolated together with one ZooKeeper follower (the minority of a 3-server ensemble).

The isolated follower goes on answering plain reads for `syncLimit` ticks while the quorum
expires the leader's session and elects another node. A lease renewed from such reads would
still be valid when the new leader is elected; the quorum-confirmed lease (`sync()` first)
runs out before. Asserted as an ordering, never as a duration.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from idsync.fencing import Fenced
from idsync.ha.loop import HaLoop, Health, Timing
from idsync.ha.zk import Coordinator, ZkSettings
from tests.harness.zookeeper import ZooKeeperEnsemble

SESSION = 2.0  # 10 ticks of 200 ms
# An isolated follower answers its clients for syncLimit ticks (3 s), longer than the session:
# as with ZooKeeper's defaults (syncLimit 5 x tickTime 2 s = 10 s) and a short session.
SYNC_LIMIT = 15


@pytest.fixture
def ensemble(tmp_path: Path) -> Iterator[ZooKeeperEnsemble]:
    ens = ZooKeeperEnsemble(tmp_path / "zk", sync_limit=SYNC_LIMIT)
    try:
        ens.start()
        yield ens
    finally:
        ens.close()


def healthy() -> Health:
    return Health(True, time.time(), True, "r1")


def node(name: str, hosts: str) -> HaLoop[Coordinator]:
    ha: HaLoop[Coordinator]
    coord = Coordinator(
        ZkSettings(hosts=hosts, session_timeout=SESSION, retry_timeout=0.5),
        "ens",
        name,
        on_state=lambda s: ha.on_state(s),
    )
    ha = HaLoop(coord, Timing(session_timeout=SESSION, loop_interval=0.5, request_timeout=0.3))
    coord.start(timeout=10)
    return ha


def test_a_leader_cut_off_with_a_follower_loses_its_lease_before_another_is_elected(
    ensemble: ZooKeeperEnsemble,
) -> None:
    follower = ensemble.followers()[0]
    others = [n for n in ensemble.members if n != follower]
    a = node("a", ensemble.hosts(follower))  # a talks only to the follower that will be isolated
    b = node("b", ensemble.hosts(*others))
    try:
        assert a.run_cycle(healthy()).promoted
        assert a.run_cycle(healthy()).sentence == "leader at epoch 1: exporting"
        # b reads from other servers, which may not have applied a's leader znode yet: then b's
        # election attempt finds it and b says so; a later cycle sees a.
        for _ in range(20):
            said = b.run_cycle(healthy()).sentence
            if said == "staging: leader is a (epoch 1)":
                break
            assert said == "staging: no leader, another node won the election"
        assert said == "staging: leader is a (epoch 1)"
        assert a.coord.session_timeout == pytest.approx(SESSION)  # as negotiated
        lease = a.lease
        assert lease is not None

        # a's lease keeper runs as in the daemon: a main loop that progresses, renewals between.
        events: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def keeper() -> None:
            while not stop.wait(0.1):
                a.progress()
                renewal = a.refresh()
                try:
                    lease.write_deadline()
                    ok = True
                except Fenced:
                    ok = False
                with lock:
                    events.append(f"a may write ({renewal.sentence})" if ok else "a fenced")

        t = threading.Thread(target=keeper, daemon=True)
        t.start()
        while not any("lease renewed" in e for e in list(events)):  # renewals work before the cut
            time.sleep(0.05)
        ensemble.isolate(follower)
        # b (on the quorum side) polls until it is elected: a's session expired there.
        deadline = time.monotonic() + SESSION * 10
        promoted = None
        while time.monotonic() < deadline and promoted is None:
            d = b.run_cycle(healthy())
            if d.promoted:
                with lock:
                    events.append("b elected")
                    a_valid = lease.valid()
                promoted = d
            time.sleep(0.05)
        stop.set()
        t.join(timeout=5)
        assert promoted is not None, "b was never elected"
        assert promoted.sentence.startswith("promoted: epoch 2, previous leader a was lost")
        assert not a_valid, "a's lease was still valid when b was elected"
        # Ordering: a was fenced before b's election, and never may write after it.
        elected = events.index("b elected")
        assert "a fenced" in events[:elected]
        assert not [e for e in events[elected:] if e.startswith("a may write")]
        with pytest.raises(Fenced):
            lease.write_deadline()

        ensemble.heal()
        ensemble.wait_serving(follower)
        deadline = time.monotonic() + SESSION * 10
        said = ""
        while time.monotonic() < deadline and said != "staging: leader is b (epoch 2)":
            said = a.run_cycle(healthy()).sentence
            time.sleep(0.1)
        assert said == "staging: leader is b (epoch 2)"  # a demoted and follows b
    finally:
        a.coord.stop()
        b.coord.stop()
