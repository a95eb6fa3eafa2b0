"""Election, epochs, hand-over and demotion against a real ZooKeeper."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from idsync.fencing import Fenced
from idsync.ha.loop import HaLoop, Health, Timing
from idsync.ha.records import FailoverRequest, PauseRecord, SwitchoverRequest
from idsync.ha.zk import Coordinator, ZkSettings
from tests.harness.proxy import TcpProxy

SESSION = 2.0  # the harness's ZooKeeper runs a 200 ms tick, so 2 s sessions are fine


def healthy(rules: str = "r1", pending: int = 0) -> Health:
    return Health(
        cycle_ok=True,
        last_cycle_ok=time.time(),
        target_caught_up=True,
        rules_hash=rules,
        pending={"create": pending},
    )


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise AssertionError("condition not reached in time")


@pytest.fixture
def make_node(zk_hosts: str, zk_chroot: str) -> Iterator[Callable[..., HaLoop]]:
    made: list[Coordinator] = []

    def make(name: str, hosts: str | None = None, lock_delay: float | None = None) -> HaLoop:
        settings = ZkSettings(
            hosts=(hosts or zk_hosts) + zk_chroot, session_timeout=SESSION, retry_timeout=0.5
        )
        ha: HaLoop
        coord = Coordinator(settings, "test", name, on_state=lambda s: ha.on_state(s))
        ha = HaLoop(
            coord,
            Timing(session_timeout=SESSION, loop_interval=0.5, request_timeout=0.2, lock_delay=lock_delay),
        )
        coord.start(timeout=5)
        made.append(coord)
        return ha

    yield make
    for c in made:
        c.stop()


def test_first_healthy_node_promotes_and_the_other_stages(make_node: Callable[..., HaLoop]) -> None:
    a, b = make_node("a"), make_node("b")
    da = a.run_cycle(healthy(pending=3))
    assert da.sentence == "promoted: epoch 1, first leader, 3 pending exports"
    assert da.promoted and not da.export
    db = b.run_cycle(healthy())
    assert db.sentence == "staging: leader is a (epoch 1)"
    da2 = a.run_cycle(healthy())
    assert da2.sentence == "leader at epoch 1: exporting"
    assert da2.export and da2.lease is not None
    da2.lease.ensure()
    assert da2.lease.epoch == 1


def test_leader_loss_promotes_follower_with_a_new_epoch_and_fences_the_old(
    make_node: Callable[..., HaLoop],
) -> None:
    a, b = make_node("a"), make_node("b")
    a.run_cycle(healthy())
    lease_a = a.lease
    assert lease_a is not None
    a.coord.stop()  # the session closes: as if the process died
    d = b.run_cycle(healthy())
    assert (
        d.sentence == "promoted: epoch 2, previous leader a was lost; target import catches up first,"
        " then 0.2s lock-delay, 0 pending exports"
    )
    with pytest.raises(Fenced, match="ZooKeeper session lost"):
        lease_a.ensure()


def test_clean_release_needs_no_lock_delay(make_node: Callable[..., HaLoop]) -> None:
    a, b = make_node("a"), make_node("b", lock_delay=30.0)
    a.run_cycle(healthy())
    rel = a.release("shutdown")
    assert rel.sentence == "released leadership at epoch 1: shutdown"
    d = b.run_cycle(healthy())
    assert d.sentence.startswith("promoted: epoch 2, previous leader a released cleanly")
    assert b.run_cycle(healthy()).sentence == "leader at epoch 2: exporting"


def test_unplanned_takeover_waits_the_configured_lock_delay(make_node: Callable[..., HaLoop]) -> None:
    a, b = make_node("a"), make_node("b", lock_delay=30.0)
    a.run_cycle(healthy())
    a.coord.stop()
    assert "then 30s lock-delay" in b.run_cycle(healthy()).sentence
    d = b.run_cycle(healthy())
    assert d.sentence.startswith("leader at epoch 2: waiting ")
    assert not d.export


def test_switchover_to_a_named_node(make_node: Callable[..., HaLoop]) -> None:
    a, b, c = make_node("a"), make_node("b"), make_node("c")
    a.run_cycle(healthy())
    b.run_cycle(healthy())
    c.run_cycle(healthy())
    a.coord.request_switchover(SwitchoverRequest(to="c", by="test", at=time.time(), leader="a", epoch=1))
    assert a.run_cycle(healthy()).sentence == "released leadership at epoch 1: switchover to c"
    # b is healthy too but must leave the leadership to c.
    assert b.run_cycle(healthy()).sentence == "staging: no leader, switchover to c in progress"
    assert c.run_cycle(healthy()).sentence.startswith("promoted: epoch 2, previous leader a released cleanly")
    assert a.run_cycle(healthy()).sentence == "staging: leader is c (epoch 2)"
    # The request was consumed by c's election transaction.
    assert c.coord.read().switchover is None


def test_unhealthy_nodes_do_not_take_over_but_failover_forces(make_node: Callable[..., HaLoop]) -> None:
    a, b = make_node("a"), make_node("b")
    lagging = Health(cycle_ok=True, last_cycle_ok=time.time(), target_caught_up=False, rules_hash="r1")
    assert b.run_cycle(lagging).sentence == "staging: no leader, not taking over: target import not caught up"
    a.run_cycle(healthy())
    a.release("test")
    other_rules = healthy(rules="r2")
    assert b.run_cycle(other_rules).sentence.startswith("staging: no leader, not taking over: rules hash r2")
    b.coord.request_failover(FailoverRequest(to="b", by="test", at=time.time()))
    assert a.run_cycle(healthy()).sentence == "staging: no leader, failover to b requested"
    d = b.run_cycle(other_rules)
    assert d.sentence.startswith("promoted: epoch 2, forced by failover, previous leader a released cleanly")
    assert b.coord.read().failover is None


def test_pause_holds_exports_on_the_leader(make_node: Callable[..., HaLoop]) -> None:
    a = make_node("a")
    a.run_cycle(healthy())
    a.coord.set_pause(PauseRecord(by="ops", at=time.time()))
    d = a.run_cycle(healthy())
    assert d.sentence == "leader at epoch 1: paused by ops, exports held"
    assert not d.export
    a.coord.clear_pause()
    assert a.run_cycle(healthy()).export


def test_concurrent_candidates_take_one_epoch_once(make_node: Callable[..., HaLoop]) -> None:
    a, b = make_node("a"), make_node("b")
    view = a.coord.read()
    won_a = a.coord.try_acquire(view, "r1")
    won_b = b.coord.try_acquire(view, "r1")  # same stale view: its epoch CAS must fail
    assert won_a is not None and won_a.epoch == 1
    assert won_b is None
    assert b.coord.read().epoch.epoch == 1


def test_partitioned_leader_stops_writing_before_the_follower_promotes(
    zk_hosts: str, make_node: Callable[..., HaLoop]
) -> None:
    host, port = zk_hosts.split(",")[0].rsplit(":", 1)
    proxy = TcpProxy(host, int(port))
    try:
        a = make_node("a", hosts=proxy.address)
        b = make_node("b")
        a.run_cycle(healthy())
        lease = a.lease
        assert lease is not None
        lease.ensure()
        proxy.cut()
        # Ordering, not timing: poll both sides and record what happened in which order. The old
        # leader's lease must have ended before the follower can win (its session expired).
        order: list[str] = []

        def step() -> bool:
            valid = lease.valid()
            if not valid and "lease ended" not in order:
                order.append("lease ended")
            promoted = b.run_cycle(healthy()).promoted
            if promoted:
                order.append("b promoted")
                assert not lease.valid(), "the old lease was still valid when b promoted"
            return promoted

        wait_until(step, timeout=SESSION * 5, step=0.05)
        assert order == ["lease ended", "b promoted"]
        proxy.restore()
        # Healed, the old leader learns it lost and demotes; it never writes again at epoch 1.
        wait_until(lambda: a.run_cycle(healthy()).role == "staging", timeout=SESSION * 5, step=0.1)
        with pytest.raises(Fenced):
            lease.ensure()
        assert b.coord.read().leader.node == "b"  # type: ignore[union-attr]
    finally:
        proxy.close()


def test_pause_stops_automatic_promotion_but_not_failover(make_node: Callable[..., HaLoop]) -> None:
    a, b = make_node("a"), make_node("b")
    a.run_cycle(healthy())
    a.coord.set_pause(PauseRecord(by="ops", at=time.time()))
    a.coord.stop()  # the leader dies during maintenance
    assert b.run_cycle(healthy()).sentence == "staging: no leader, paused: no automatic promotion"
    b.coord.request_failover(FailoverRequest(to="b", by="ops", at=time.time()))
    assert b.run_cycle(healthy()).sentence.startswith("promoted: epoch 2, forced by failover")
    assert b.run_cycle(healthy()).sentence == "leader at epoch 2: paused by ops, exports held"


def test_a_zookeeper_restart_within_the_session_keeps_the_leader(
    spawn: Callable[[str], Any], zk_chroot: str
) -> None:
    zk = spawn("zookeeper")
    settings = ZkSettings(hosts=zk.hosts, session_timeout=4.0, retry_timeout=0.5)
    ha: HaLoop
    coord = Coordinator(settings, "test", "a", on_state=lambda s: ha.on_state(s))
    ha = HaLoop(coord, Timing(session_timeout=4.0, loop_interval=0.5, request_timeout=0.2))
    coord.start(timeout=5)
    try:
        assert ha.run_cycle(healthy()).promoted
        zk.stop()
        wait_until(lambda: not coord.connected, timeout=5)
        # The lease keeper, between cycles: hold, do not give up.
        renewal = ha.refresh()
        assert not renewal.renewed
        assert renewal.sentence.startswith("leader at epoch 1: cannot confirm leadership")
        d = ha.run_cycle(healthy())
        assert d.sentence == "leader at epoch 1: ZooKeeper connection suspended, exports held"
        assert ha.lease is not None and not ha.lease.valid()
        zk.start()
        wait_until(lambda: coord.connected, timeout=10)
        assert ha.run_cycle(healthy()).sentence == "leader at epoch 1: exporting"
        assert ha.lease is not None and ha.lease.valid()
    finally:
        coord.stop()


def test_a_stale_leader_znode_of_my_own_session_is_removed(make_node: Callable[..., HaLoop]) -> None:
    a = make_node("a")
    a.run_cycle(healthy())
    a._demote("test: demoted while the session lives on")
    assert (
        a.run_cycle(healthy()).sentence
        == "staging: removed my stale leader znode (epoch 1), election follows"
    )
    assert a.run_cycle(healthy()).sentence.startswith("promoted: epoch 2")


def test_a_leader_whose_cycles_fail_hands_over_to_a_healthy_standby(make_node: Callable[..., HaLoop]) -> None:
    a, b = make_node("a"), make_node("b")
    a.run_cycle(healthy())
    b.run_cycle(healthy())
    failing = Health(
        cycle_ok=False, last_cycle_ok=time.time(), target_caught_up=True, rules_hash="r1", reason="LDAP down"
    )
    assert a.run_cycle(failing).sentence == "leader at epoch 1: exporting"
    assert a.run_cycle(failing).sentence == "leader at epoch 1: exporting"
    assert a.run_cycle(failing).sentence == (
        "released leadership at epoch 1: unhealthy for 3 cycles (last cycle failed (LDAP down))"
    )
    assert b.run_cycle(healthy()).sentence.startswith("promoted: epoch 2, previous leader a released cleanly")
    assert a.run_cycle(failing).sentence == "staging: leader is b (epoch 2)"


def test_the_lease_is_sized_from_the_session_timeout_the_server_granted(
    zk_hosts: str, zk_chroot: str
) -> None:
    # The harness's ZooKeeper grants at most maxSessionTimeout = 60 s, whatever the client asks.
    settings = ZkSettings(hosts=zk_hosts + zk_chroot, session_timeout=120.0, retry_timeout=0.5)
    ha: HaLoop
    coord = Coordinator(settings, "test", "a", on_state=lambda s: ha.on_state(s))
    ha = HaLoop(coord, Timing(session_timeout=120.0, loop_interval=0.5, request_timeout=0.2))
    assert coord.session_timeout == 120.0  # not connected yet: the configured value
    coord.start(timeout=5)
    try:
        assert coord.session_timeout == 60.0
        assert ha.run_cycle(healthy()).promoted
        assert ha.lease is not None and ha.lease.span == 40.0  # 2/3 of what was granted
    finally:
        coord.stop()


def _script(make: Callable[[str], HaLoop]) -> list[str]:
    """One scenario, as sentences: run against the in-memory fake and against ZooKeeper."""
    a, b = make("a"), make("b")
    said = [a.run_cycle(healthy()).sentence, b.run_cycle(healthy()).sentence, a.run_cycle(healthy()).sentence]
    said.append(a.release("shutdown").sentence)
    said += [b.run_cycle(healthy()).sentence, a.run_cycle(healthy()).sentence]
    b.coord.set_pause(PauseRecord(by="ops", at=time.time()))
    said.append(b.run_cycle(healthy()).sentence)
    b.coord.clear_pause()
    b.coord.stop()  # b's session ends without a release
    said.append(a.run_cycle(healthy()).sentence)
    return said


def test_the_fake_coordination_decides_like_zookeeper(make_node: Callable[..., HaLoop]) -> None:
    from idsync.ha.fake import FakeCoordination, FakeEnsemble

    ensemble = FakeEnsemble(session_timeout=SESSION)

    def fake(name: str) -> HaLoop:
        return HaLoop(
            FakeCoordination(ensemble, name),
            Timing(session_timeout=SESSION, loop_interval=0.5, request_timeout=0.2),
        )

    expected = [
        "promoted: epoch 1, first leader, 0 pending exports",
        "staging: leader is a (epoch 1)",
        "leader at epoch 1: exporting",
        "released leadership at epoch 1: shutdown",
        "promoted: epoch 2, previous leader a released cleanly, 0 pending exports",
        "staging: leader is b (epoch 2)",
        "leader at epoch 2: paused by ops, exports held",
        "promoted: epoch 3, previous leader b was lost; target import catches up first,"
        " then 0.2s lock-delay, 0 pending exports",
    ]
    assert _script(fake) == expected
    assert _script(make_node) == expected
