"""Every decision sentence of the HA loop (and of its lease keeper), driven through the in-memory
coordination fake in milliseconds. Real ZooKeeper (test_election, test_processes) proves timing.

The sentences, in the order of `idsync.ha.loop`:
 1 staging: ZooKeeper unreachable, waiting
 2 leader at epoch N: ZooKeeper connection suspended, exports held
 3 demoted: ZooKeeper session lost (epoch N)                      (disconnected, session gone)
 4 staging: cannot read ZooKeeper (...)
 5 leader at epoch N: cannot read ZooKeeper (...), exports held
 6 demoted: <why the lease was revoked> (epoch N)                  (LOST reported by kazoo's thread)
 7 leader at epoch N: cannot confirm leadership (...), exports held (no quorum: sync() fails)
 8 demoted: leadership lost: the leader znode is no longer ours (epoch N)
 9 released leadership at epoch N: unhealthy for 3 cycles (...)
10 released leadership at epoch N: switchover to X | to any healthy node (also for a failover)
11 leader at epoch N: paused[ by X], exports held
12 leader at epoch N: waiting Ds lock-delay after an unplanned takeover
13 leader at epoch N: exporting
14 staging: cannot remove my stale leader znode (...)
15 staging: removed my stale leader znode (epoch N), election follows
16 staging: leader is X (epoch N)
17 staging: no leader, failover to X requested
18 staging: no leader, switchover to X in progress
19 staging: no leader, handed over; letting another node take over
20 staging: no leader, paused: no automatic promotion
21 staging: no leader, not taking over: <last cycle failed | last successful cycle Ns ago |
   target import not caught up | rules hash differs>
22 staging: no leader, election failed (...)
23 staging: no leader, another node won the election
24 promoted: epoch N, [forced by failover, ]<first leader | previous leader X released cleanly |
   previous leader X was lost; target import catches up first, then Ds lock-delay>, K pending exports
25 staging: nothing to release
26 released leadership at epoch N: <reason>
27 gave up (release not recorded) leadership at epoch N: <reason>
Lease keeper (`refresh`):
28 not leader
29 leader at epoch N: lease renewed
30 leader at epoch N: cannot confirm leadership (...), exports held
31 demoted: leadership lost: the leader znode is no longer ours (epoch N)
32 leader at epoch N: lease not renewed, main loop made no progress for Ns
33 resigned leadership at epoch N: main loop made no progress for Ns[; leader znode not removed yet, retrying]
34 staging: removed my stale leader znode (epoch N) | staging: cannot remove my stale leader znode (...)
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from idsync.fencing import Fenced
from idsync.ha.fake import FakeCoordination, FakeEnsemble
from idsync.ha.loop import HaLoop, Health, Timing
from idsync.ha.records import ClusterView, FailoverRequest, MemberRecord, PauseRecord, SwitchoverRequest

SESSION = 3.0
TIMING = Timing(session_timeout=SESSION, loop_interval=1.0, request_timeout=0.5, stale_request=60.0)


class Clock:
    """A clock the test moves by hand (the loop's boot clock and wall clock alike)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ensemble() -> FakeEnsemble:
    return FakeEnsemble(session_timeout=SESSION)


@pytest.fixture
def node(ensemble: FakeEnsemble, clock: Clock) -> Callable[..., HaLoop[FakeCoordination]]:
    def make(name: str, timing: Timing = TIMING) -> HaLoop[FakeCoordination]:
        ha: HaLoop[FakeCoordination] = HaLoop(
            FakeCoordination(ensemble, name), timing, clock=clock, wall=clock
        )
        return ha

    return make


def healthy(clock: Clock, pending: int = 0, rules: str = "r1") -> Health:
    return Health(True, clock(), True, rules, {"create": pending})


def lead(ha: HaLoop[FakeCoordination], clock: Clock) -> None:
    """Promote `ha` (first leader, no lock-delay) and check it exports."""
    assert ha.run_cycle(healthy(clock)).promoted
    assert ha.run_cycle(healthy(clock)).export


# -- connection ---------------------------------------------------------------------------------


def test_1_a_follower_without_zookeeper_waits(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock
) -> None:
    a = node("a")
    a.coord.suspend()
    d = a.run_cycle(healthy(clock))
    assert d.sentence == "staging: ZooKeeper unreachable, waiting"
    assert (d.role, d.export) == ("staging", False)


def test_2_suspended_leader_holds_exports_and_resumes_in_the_same_session(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock
) -> None:
    a = node("a")
    lead(a, clock)
    lease = a.lease
    assert lease is not None
    a.on_state("suspended")  # kazoo's thread: stop writes at once
    with pytest.raises(Fenced):
        lease.write_deadline()
    a.coord.suspend()
    d = a.run_cycle(healthy(clock))
    assert d.sentence == "leader at epoch 1: ZooKeeper connection suspended, exports held"
    assert not d.export
    a.coord.reconnect()
    assert a.run_cycle(healthy(clock)).sentence == "leader at epoch 1: exporting"
    assert lease.write_deadline() == pytest.approx(0.5)  # capped by the request timeout


def test_3_a_lost_session_demotes(node: Callable[..., HaLoop[FakeCoordination]], clock: Clock) -> None:
    a = node("a")
    lead(a, clock)
    a.coord.expire()
    assert a.run_cycle(healthy(clock)).sentence == "demoted: ZooKeeper session lost (epoch 1)"
    assert a.leader is None and a.lease is None


def test_4_and_5_unreadable_zookeeper(node: Callable[..., HaLoop[FakeCoordination]], clock: Clock) -> None:
    a, b = node("a"), node("b")
    b.coord.fail("read", "read of /idsync/t/leader timed out")
    assert (
        b.run_cycle(healthy(clock)).sentence
        == "staging: cannot read ZooKeeper (read of /idsync/t/leader timed out)"
    )
    lead(a, clock)
    a.coord.fail("read", "connection loss")
    d = a.run_cycle(healthy(clock))
    assert d.sentence == "leader at epoch 1: cannot read ZooKeeper (connection loss), exports held"
    assert not d.export and a.lease is not None and not a.lease.valid()


def test_6_lost_reported_by_kazoo_demotes_even_after_a_reconnect(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock
) -> None:
    a = node("a")
    lead(a, clock)
    a.coord.expire()
    a.coord.new_session()  # kazoo reconnected with a new session: never re-create the leader znode
    a.on_state("lost")
    assert a.run_cycle(healthy(clock)).sentence == "demoted: ZooKeeper session lost (epoch 1)"


def test_7_a_leader_whose_server_lost_the_quorum_cannot_renew(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock
) -> None:
    a = node("a")
    lead(a, clock)
    a.coord.partition()  # plain reads still answer; sync() does not
    clock.advance(1.0)
    d = a.run_cycle(healthy(clock))
    assert d.sentence.startswith("leader at epoch 1: cannot confirm leadership (ZooKeeper sync failed")
    assert d.sentence.endswith("), exports held")
    assert not d.export
    assert a.lease is not None and not a.lease.valid()
    assert "confirm" in a.coord.calls


def test_8_a_leader_znode_that_is_no_longer_ours_demotes(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock, ensemble: FakeEnsemble
) -> None:
    a = node("a")
    lead(a, clock)
    ensemble.leader = None  # e.g. deleted by hand
    d = a.run_cycle(healthy(clock))
    assert d.sentence == "demoted: leadership lost: the leader znode is no longer ours (epoch 1)"


# -- the leader's decisions ---------------------------------------------------------------------


def test_9_an_unhealthy_leader_hands_over_after_three_cycles_only_to_a_live_standby(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock
) -> None:
    a, b = node("a"), node("b")
    lead(a, clock)
    b.run_cycle(healthy(clock))
    failing = Health(False, clock(), True, "r1", reason="LDAP down")
    assert a.run_cycle(failing).sentence == "leader at epoch 1: exporting"
    assert a.run_cycle(failing).sentence == "leader at epoch 1: exporting"
    b.coord.age_member("b", 60)  # b stopped cycling: no hand-over to a hung standby
    assert a.run_cycle(failing).sentence == "leader at epoch 1: exporting"
    b.run_cycle(healthy(clock))
    assert a.run_cycle(failing).sentence == (
        "released leadership at epoch 1: unhealthy for 3 cycles (last cycle failed (LDAP down))"
    )


def test_10_switchover_and_failover_requests_make_the_leader_release(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock
) -> None:
    a, b = node("a"), node("b")
    lead(a, clock)
    b.run_cycle(healthy(clock))  # b is a member
    a.coord.request_switchover(SwitchoverRequest(to="b", by="ops", at=clock(), leader="a", epoch=1))
    assert a.run_cycle(healthy(clock)).sentence == "released leadership at epoch 1: switchover to b"
    assert b.run_cycle(healthy(clock)).sentence.startswith(
        "promoted: epoch 2, previous leader a released cleanly"
    )
    b.run_cycle(healthy(clock))
    b.coord.request_switchover(SwitchoverRequest(to="", by="ops", at=clock(), leader="b", epoch=2))
    assert (
        b.run_cycle(healthy(clock)).sentence
        == "released leadership at epoch 2: switchover to any healthy node"
    )
    # b handed over to "anyone": b itself stands back and a takes it.
    assert (
        b.run_cycle(healthy(clock)).sentence
        == "staging: no leader, handed over; letting another node take over"
    )
    assert a.run_cycle(healthy(clock)).promoted
    a.coord.request_failover(FailoverRequest(to="b", by="ops", at=clock()))
    assert a.run_cycle(healthy(clock)).sentence == "released leadership at epoch 3: switchover to b"


def test_10_a_request_aimed_at_an_older_leader_is_ignored(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock
) -> None:
    a, b = node("a"), node("b")
    lead(a, clock)
    b.run_cycle(healthy(clock))
    a.coord.request_switchover(SwitchoverRequest(to="b", by="ops", at=clock() - 61, leader="a", epoch=0))
    assert a.run_cycle(healthy(clock)).sentence == "leader at epoch 1: exporting"


def test_11_pause_holds_the_leaders_exports(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock
) -> None:
    a = node("a")
    lead(a, clock)
    a.coord.set_pause(PauseRecord(by="ops", at=clock()))
    d = a.run_cycle(healthy(clock))
    assert (d.sentence, d.export) == ("leader at epoch 1: paused by ops, exports held", False)
    a.coord.set_pause(PauseRecord())
    assert a.run_cycle(healthy(clock)).sentence == "leader at epoch 1: paused, exports held"
    a.coord.clear_pause()
    assert a.run_cycle(healthy(clock)).sentence == "leader at epoch 1: exporting"


def test_12_13_24_an_unplanned_takeover_waits_the_lock_delay(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock
) -> None:
    a, b = node("a"), node("b")
    lead(a, clock)
    a.coord.expire()  # a died: no release recorded
    d = b.run_cycle(healthy(clock, pending=4))
    assert d.sentence == (
        "promoted: epoch 2, previous leader a was lost; target import catches up first,"
        " then 0.5s lock-delay, 4 pending exports"
    )
    assert d.promoted and not d.export
    clock.advance(0.2)
    d = b.run_cycle(healthy(clock))
    assert d.sentence == "leader at epoch 2: waiting 0.3s lock-delay after an unplanned takeover"
    assert not d.export
    clock.advance(0.3)
    d = b.run_cycle(healthy(clock))
    assert (d.sentence, d.export) == ("leader at epoch 2: exporting", True)


def test_24_lock_delay_is_configurable(node: Callable[..., HaLoop[FakeCoordination]], clock: Clock) -> None:
    a = node("a")
    b = node("b", Timing(session_timeout=SESSION, loop_interval=1.0, request_timeout=0.5, lock_delay=7.0))
    lead(a, clock)
    a.coord.expire()
    assert "then 7s lock-delay" in b.run_cycle(healthy(clock)).sentence


# -- the follower's decisions -------------------------------------------------------------------


def test_14_15_a_stale_leader_znode_of_my_own_session(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock
) -> None:
    a = node("a")
    lead(a, clock)
    a._demote("test: demoted while the session lives on")
    a.coord.fail("remove_own_leader_znode", "connection loss")
    assert (
        a.run_cycle(healthy(clock)).sentence
        == "staging: cannot remove my stale leader znode (connection loss)"
    )
    assert (
        a.run_cycle(healthy(clock)).sentence
        == "staging: removed my stale leader znode (epoch 1), election follows"
    )
    assert a.run_cycle(healthy(clock)).sentence.startswith("promoted: epoch 2")


def test_16_23_24_first_leader_and_the_race(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock, ensemble: FakeEnsemble
) -> None:
    a, b = node("a"), node("b")
    view = b.coord.read()
    d = a.run_cycle(healthy(clock, pending=3))
    assert d.sentence == "promoted: epoch 1, first leader, 3 pending exports"
    assert b.run_cycle(healthy(clock)).sentence == "staging: leader is a (epoch 1)"
    # b decided on a view without a leader, then a won first: b's transaction loses.
    assert b.coord.try_acquire(view, "r1") is None
    ensemble.leader = None  # the next read shows no leader, but the epoch CAS still refuses b
    real_read = b.coord.read

    def stale_read() -> ClusterView:
        real_read()
        return view

    b.coord.read = stale_read  # type: ignore[method-assign]  # the read raced a's election
    assert b.run_cycle(healthy(clock)).sentence == "staging: no leader, another node won the election"


def test_17_18_requests_name_another_node(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock
) -> None:
    b, c = node("b"), node("c")
    c.coord.publish_member(MemberRecord(node="c", role="staging"))  # c runs, not (yet) healthy
    b.coord.request_failover(FailoverRequest(to="c", by="ops", at=clock()))
    assert b.run_cycle(healthy(clock)).sentence == "staging: no leader, failover to c requested"
    b.coord.ensemble.failover = None
    b.coord.request_switchover(SwitchoverRequest(to="c", by="ops", at=clock(), leader="a", epoch=1))
    assert b.run_cycle(healthy(clock)).sentence == "staging: no leader, switchover to c in progress"


def test_20_29_pause_stops_automatic_promotion_but_not_a_failover(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock
) -> None:
    b = node("b")
    b.coord.set_pause(PauseRecord(by="ops", at=clock()))
    assert b.run_cycle(healthy(clock)).sentence == "staging: no leader, paused: no automatic promotion"
    b.coord.request_failover(FailoverRequest(to="b", by="ops", at=clock()))
    lagging = Health(True, clock(), False, "r1")
    d = b.run_cycle(lagging)
    assert d.sentence == "promoted: epoch 1, forced by failover, first leader, 0 pending exports"
    assert b.coord.read().failover is None


def test_21_unhealthy_followers_do_not_take_over(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock
) -> None:
    a, b = node("a"), node("b")
    lead(a, clock)
    a.release("test")
    why = "staging: no leader, not taking over: "
    failed = Health(False, clock(), True, "r1", reason="LDAP down")
    assert b.run_cycle(failed).sentence == why + "last cycle failed (LDAP down)"
    assert (
        b.run_cycle(Health(False, clock(), True, "r1")).sentence == why + "last cycle failed (unknown error)"
    )
    old = Health(True, clock() - 100, True, "r1")
    assert b.run_cycle(old).sentence == why + "last successful cycle 100s ago"
    assert b.run_cycle(Health(True, clock(), False, "r1")).sentence == why + "target import not caught up"
    assert (
        b.run_cycle(healthy(clock, rules="r2")).sentence
        == why + "rules hash r2 differs from the cluster's r1"
    )


def test_22_a_failed_election(node: Callable[..., HaLoop[FakeCoordination]], clock: Clock) -> None:
    a = node("a")
    a.coord.fail("try_acquire", "leader election transaction failed: timed out")
    assert a.run_cycle(healthy(clock)).sentence == (
        "staging: no leader, election failed (leader election transaction failed: timed out)"
    )


# -- release ------------------------------------------------------------------------------------


def test_25_26_27_release(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock, ensemble: FakeEnsemble
) -> None:
    a, b = node("a"), node("b")
    assert a.release("shutdown").sentence == "staging: nothing to release"
    lead(a, clock)
    lease = a.lease
    assert lease is not None
    assert a.release("shutdown").sentence == "released leadership at epoch 1: shutdown"
    with pytest.raises(Fenced, match="released: shutdown"):
        lease.write_deadline()
    assert ensemble.release is not None and ensemble.release.epoch == 1
    assert b.run_cycle(healthy(clock)).sentence.startswith(
        "promoted: epoch 2, previous leader a released cleanly"
    )
    b.run_cycle(healthy(clock))
    b.coord.suspend()
    assert b.release("shutdown").sentence == "gave up (release not recorded) leadership at epoch 2: shutdown"


# -- the lease keeper ---------------------------------------------------------------------------


def test_28_29_the_keeper_renews_from_a_quorum_read_only_for_a_leader(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock
) -> None:
    a = node("a")
    assert a.refresh().sentence == "not leader"
    lead(a, clock)
    lease = a.lease
    assert lease is not None
    clock.advance(1.9)  # the lease (2/3 x 3 s) has 0.1 s left
    a.progress()
    r = a.refresh()
    assert (r.sentence, r.renewed) == ("leader at epoch 1: lease renewed", True)
    assert lease.remaining() == pytest.approx(2.0)
    assert a.coord.calls[-1] == "confirm"


def test_30_31_the_keeper_holds_without_a_quorum_and_demotes_when_the_znode_is_gone(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock, ensemble: FakeEnsemble
) -> None:
    a = node("a")
    lead(a, clock)
    a.coord.partition()
    r = a.refresh()
    assert r.sentence == (
        "leader at epoch 1: cannot confirm leadership"
        " (ZooKeeper sync failed: our server lost the quorum), exports held"
    )
    assert a.lease is not None and not a.lease.valid()
    a.coord.partition(False)
    assert a.refresh().renewed
    ensemble.leader = None
    r = a.refresh()
    assert (r.sentence, r.renewed) == (
        "demoted: leadership lost: the leader znode is no longer ours (epoch 1)",
        False,
    )


def test_32_33_a_stalled_main_loop_loses_the_lease_then_resigns(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock, ensemble: FakeEnsemble
) -> None:
    a, b = node("a"), node("b")
    lead(a, clock)
    b.run_cycle(healthy(clock))
    a.run_cycle(healthy(clock))  # a's view now shows b as a healthy standby
    lease = a.lease
    assert lease is not None
    clock.advance(1.6)  # stall > stall/2 (1.5 s): no renewal, the lease runs down
    r = a.refresh()
    assert (r.sentence, r.renewed) == (
        "leader at epoch 1: lease not renewed, main loop made no progress for 2s",
        False,
    )
    clock.advance(0.5)
    with pytest.raises(Fenced, match="lease expired"):
        lease.write_deadline()
    clock.advance(0.9)  # stalled for the session timeout: resign, so that b can take over
    r = a.refresh()
    assert r.sentence == "resigned leadership at epoch 1: main loop made no progress for 3s"
    with pytest.raises(Fenced, match="resigned: main loop made no progress"):
        lease.write_deadline()
    assert ensemble.leader is None and ensemble.release is None  # unplanned: b waits the lock-delay
    assert "then 0.5s lock-delay" in b.run_cycle(healthy(clock)).sentence
    # The hung loop wakes up: it is staging now.
    assert a.run_cycle(healthy(clock)).sentence == "staging: leader is b (epoch 2)"


def test_32_a_stalled_leader_without_a_healthy_standby_keeps_its_znode_but_not_its_lease(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock, ensemble: FakeEnsemble
) -> None:
    a = node("a")
    lead(a, clock)  # alone: e.g. a long first full import with nobody else ready
    clock.advance(5.0)
    r = a.refresh()
    assert r.sentence == "leader at epoch 1: lease not renewed, main loop made no progress for 5s"
    assert ensemble.leader is not None and a.lease is not None and not a.lease.valid()
    a.progress()  # the loop moves on: renewals resume
    assert a.refresh().renewed


def test_33_34_a_resignation_retries_the_znode_removal(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock, ensemble: FakeEnsemble
) -> None:
    a, b = node("a"), node("b")
    lead(a, clock)
    b.run_cycle(healthy(clock))
    a.run_cycle(healthy(clock))  # a's view now shows b as a healthy standby
    clock.advance(3.0)
    a.coord.fail("remove_own_leader_znode", "connection loss")
    r = a.refresh()
    assert r.sentence == (
        "resigned leadership at epoch 1: main loop made no progress for 3s;"
        " leader znode not removed yet, retrying"
    )
    assert ensemble.leader is not None
    a.coord.fail("remove_own_leader_znode", "connection loss")
    assert a.refresh().sentence == "staging: cannot remove my stale leader znode (connection loss)"
    assert a.refresh().sentence == "staging: removed my stale leader znode (epoch 1)"
    assert ensemble.leader is None
    assert a.refresh().sentence == "not leader"


def test_progress_keeps_the_lease(node: Callable[..., HaLoop[FakeCoordination]], clock: Clock) -> None:
    a = node("a")
    lead(a, clock)
    for _ in range(10):  # 10 s of a main loop that keeps moving
        clock.advance(1.0)
        a.progress()
        assert a.refresh().renewed
    assert a.lease is not None and a.lease.valid()


# -- the lease ------------------------------------------------------------------------------------


def test_the_lease_is_sized_from_the_negotiated_session_timeout(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock, ensemble: FakeEnsemble
) -> None:
    ensemble.session_timeout = 1.5  # the server granted less than the configured 3 s
    a = node("a")
    lead(a, clock)
    assert a.lease is not None
    assert a.lease.span == pytest.approx(1.0)
    clock.advance(1.0)
    with pytest.raises(Fenced, match="lease expired"):
        a.lease.write_deadline()


def test_the_write_deadline_never_exceeds_the_lease(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock
) -> None:
    a = node("a")
    lead(a, clock)
    lease = a.lease
    assert lease is not None
    assert lease.write_deadline() == pytest.approx(0.5)  # the request timeout
    clock.advance(1.8)
    assert lease.write_deadline() == pytest.approx(0.2)  # what the lease has left


def test_confirm_now_asks_the_quorum(
    node: Callable[..., HaLoop[FakeCoordination]], clock: Clock, ensemble: FakeEnsemble
) -> None:
    a = node("a")
    lead(a, clock)
    lease = a.lease
    assert lease is not None
    n = a.coord.calls.count("confirm")
    lease.confirm_now()
    assert a.coord.calls.count("confirm") == n + 1
    a.coord.partition()
    with pytest.raises(Fenced, match="not confirmed by a ZooKeeper quorum"):
        lease.confirm_now()
    a.coord.partition(False)
    ensemble.leader = None
    with pytest.raises(Fenced, match="leadership lost"):
        lease.confirm_now()
