"""The HA decision of one cycle, Patroni style: read the cluster, decide, return a sentence.

`HaLoop.run_cycle(health)` never exports; it tells the daemon whether it may (`Decision.export`)
and hands it the lease that fences every write. It depends only on the `Coordination` protocol
(ZooKeeper in production, `idsync.ha.fake` in the unit tests).

Between cycles the daemon's lease keeper calls `refresh()`: it renews the lease from a
quorum-confirmed read, but only while the main loop reports progress (`progress()`); a main loop
that makes none for `Timing.stall` seconds gets its leadership resigned, so a hung leader hands
over instead of holding the leader znode through kazoo's heartbeat forever.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog

from idsync import __version__
from idsync.ha import epochs
from idsync.ha.coordination import Coordination, CoordinationError
from idsync.ha.lease import Lease, boottime
from idsync.ha.records import ClusterView, LeaderRecord, MemberRecord
from idsync.ha.requests import RequestTracker

log = structlog.get_logger(__name__)
C = TypeVar("C", bound=Coordination)


# A leader whose own cycles keep failing (its directory or store unreachable) hands over to a
# healthy standby after this many cycles in a row; one failed cycle is not worth a failover.
UNHEALTHY_CYCLES_BEFORE_HANDOVER = 3


@dataclass(frozen=True)
class Health:
    """What the pipeline reports about this node after its import and sync."""

    cycle_ok: bool
    last_cycle_ok: float  # wall-clock time of the last successful cycle, 0 if never
    target_caught_up: bool
    rules_hash: str
    pending: dict[str, int] = field(default_factory=dict)
    privileged: int = 0  # users quarantined because Graph refused to change an administrator
    reason: str = ""  # why the last cycle failed, if it did
    seen_epoch: int = 0  # the highest epoch this node's store has seen (ha/epochs.py)
    # The cluster rules this node runs (ha/rules.py): version, trial, or why it could not load them.
    rules_version: int = 0
    rules_trial: bool = False
    rules_error: str = ""


@dataclass(frozen=True)
class Decision:
    """The outcome of one HA cycle."""

    sentence: str
    role: str  # leader | staging
    export: bool
    epoch: int
    lease: Lease | None = None
    promoted: bool = False
    released: bool = False


@dataclass(frozen=True)
class Renewal:
    """What the lease keeper did between cycles."""

    sentence: str
    renewed: bool


@dataclass(frozen=True)
class Timing:
    """The HA timing budget (see docs/configuration.md and reference/ha-anchors.md §7)."""

    session_timeout: float = 30.0  # as configured; the lease uses the negotiated one
    loop_interval: float = 10.0
    request_timeout: float = 10.0  # the longest a write to the target may take, all phases together
    # Wait after an unplanned takeover before the first write; None = request_timeout, the old
    # leader's longest write deadline (Chubby's lock-delay).
    lock_delay: float | None = None
    stale_request: float = 60.0  # a switchover/failover request older than this is ignored
    lease_fraction: float = 2 / 3
    # A main loop without progress for this long resigns leadership; None = session_timeout.
    stall_timeout: float | None = None

    @property
    def delay(self) -> float:
        return self.request_timeout if self.lock_delay is None else self.lock_delay

    @property
    def stall(self) -> float:
        return self.session_timeout if self.stall_timeout is None else self.stall_timeout


class HaLoop(Generic[C]):
    """Leader election and demotion for one node, over any `Coordination` implementation."""

    def __init__(
        self,
        coord: C,
        timing: Timing,
        *,
        admin_url: str = "",
        clock: Callable[[], float] = boottime,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.coord = coord
        self.node = coord.node
        self.timing = timing
        self.admin_url = admin_url
        self._clock = clock
        self._wall = wall
        self.leader: LeaderRecord | None = None
        self.lease: Lease | None = None
        self._delay_until = 0.0
        self._unhealthy_cycles = 0
        self._lock = threading.Lock()
        self._progress = clock()
        self._orphan: int | None = None  # epoch of a leader znode a resignation could not delete yet
        self.last_view: ClusterView | None = None
        # Hand-over requests judged by identity and this node's own clock (ha/requests.py): a
        # target that has not taken over within half a session timeout is given up on.
        self.requests = RequestTracker(timing.session_timeout / 2, clock)

    # -- main-loop progress (any thread) -----------------------------------------------------

    def progress(self) -> None:
        """The main loop moved on (a phase ended, a nap ticked): the keeper may renew the lease."""
        self._progress = self._clock()

    def stalled_for(self) -> float:
        """Seconds since the main loop last reported progress."""
        return max(0.0, self._clock() - self._progress)

    # -- connection events (kazoo thread) ---------------------------------------------------

    def on_state(self, state: str) -> None:
        """Called from kazoo's thread: stop writes at once on SUSPENDED, for good on LOST."""
        lease = self.lease
        if lease is None:
            return
        if state == "suspended":
            lease.hold()
        elif state == "lost":
            lease.revoke("ZooKeeper session lost")

    # -- the cycle --------------------------------------------------------------------------

    def run_cycle(self, health: Health) -> Decision:
        """Decide this cycle's role; the sentence says what and why."""
        self.progress()
        with self._lock:
            return self._run_cycle(health)

    def _healthy(self, health: Health, view: ClusterView) -> tuple[bool, str]:
        if not health.cycle_ok:
            return False, f"last cycle failed ({health.reason or 'unknown error'})"
        age = self._wall() - health.last_cycle_ok
        if age > 3 * self.timing.loop_interval:
            return False, f"last successful cycle {age:.0f}s ago"
        if not health.target_caught_up:
            return False, "target import not caught up"
        if health.rules_error:
            return False, health.rules_error
        if health.rules_trial and view.trial_node == self.node:
            # Reported as "trial", not as a failure: it runs candidate rules and never leads.
            return False, f"rules trial {view.trial_hash[:12]}: reports only, never promoted automatically"
        if view.rules_version:
            if health.rules_version != view.rules_version:
                return False, f"runs rules v{health.rules_version}, the cluster's are v{view.rules_version}"
            return True, ""
        cluster_hash = view.epoch.rules_hash
        if cluster_hash and health.rules_hash != cluster_hash:
            return (
                False,
                f"rules hash {health.rules_hash[:12]} differs from the cluster's {cluster_hash[:12]}",
            )
        return True, ""

    def _member(self, health: Health, role: str, healthy: bool, reason: str) -> MemberRecord:
        return MemberRecord(
            node=self.node,
            role=role,
            healthy=healthy,
            reason=reason,
            epoch=self.leader.epoch if self.leader else 0,
            rules_hash=health.rules_hash,
            last_cycle_ok=health.last_cycle_ok,
            last_cycle=self._wall(),
            target_caught_up=health.target_caught_up,
            pending=dict(health.pending),
            privileged=health.privileged,
            admin_url=self.admin_url,
            version=__version__,
            interval=self.timing.loop_interval,
            seen_epoch=max(health.seen_epoch, self.leader.epoch if self.leader else 0),
            host=socket.gethostname(),
            pid=os.getpid(),
            rules_version=health.rules_version,
            trial=health.rules_trial,
        )

    def _demote(self, reason: str) -> Decision:
        epoch = self.leader.epoch if self.leader else 0
        if self.lease:
            self.lease.revoke(reason)
        self.leader = None
        self.lease = None
        log.warning("ha.demoted", epoch=epoch, reason=reason)
        return Decision(f"demoted: {reason} (epoch {epoch})", "staging", False, epoch)

    def _run_cycle(self, health: Health) -> Decision:
        if not self.coord.connected:
            if self.leader is not None:
                if self.coord.state == "lost" or self.coord.session_id != self.leader.session:
                    return self._demote("ZooKeeper session lost")
                # SUSPENDED: the session may well survive (a ZooKeeper restart); hold writes only.
                if self.lease:
                    self.lease.hold()
                return Decision(
                    f"leader at epoch {self.leader.epoch}: ZooKeeper connection suspended, exports held",
                    "leader",
                    False,
                    self.leader.epoch,
                    self.lease,
                )
            return Decision("staging: ZooKeeper unreachable, waiting", "staging", False, 0)

        started = self._clock()
        try:
            view = self.coord.read()
        except CoordinationError as exc:
            if self.leader is not None:
                if self.lease:
                    self.lease.hold()
                return Decision(
                    f"leader at epoch {self.leader.epoch}: cannot read ZooKeeper ({exc}), exports held",
                    "leader",
                    False,
                    self.leader.epoch,
                    self.lease,
                )
            return Decision(f"staging: cannot read ZooKeeper ({exc})", "staging", False, 0)
        self.last_view = view
        healthy, why = self._healthy(health, view)

        if self.leader is not None:
            return self._as_leader(view, health, started, healthy, why)
        return self._as_follower(view, health, healthy, why)

    def _publish(self, health: Health, role: str, healthy: bool, why: str) -> None:
        try:
            self.coord.publish_member(self._member(health, role, healthy, why))
        except CoordinationError as exc:
            log.warning("ha.publish_failed", error=str(exc))

    def _as_leader(
        self, view: ClusterView, health: Health, started: float, healthy: bool, why: str
    ) -> Decision:
        leader = self.leader
        assert leader is not None and self.lease is not None
        if self.lease.revoked is not None:  # e.g. LOST reported from kazoo's thread
            return self._demote(self.lease.revoked)
        try:
            still = self.coord.confirm(leader)
        except CoordinationError as exc:
            self.lease.hold()
            return Decision(
                f"leader at epoch {leader.epoch}: cannot confirm leadership ({exc}), exports held",
                "leader",
                False,
                leader.epoch,
                self.lease,
            )
        if not still:
            return self._demote("leadership lost: the leader znode is no longer ours")
        self.lease.resize(self.coord.session_timeout)
        self.lease.renew(started)
        self._publish(health, "leader", healthy, why)

        self._unhealthy_cycles = 0 if healthy else self._unhealthy_cycles + 1
        if self._unhealthy_cycles >= UNHEALTHY_CYCLES_BEFORE_HANDOVER:
            now = self._wall()
            standby = [
                n
                for n, m in view.members.items()
                if n != self.node and m.healthy and not view.member_stale(n, now)
            ]
            if standby:
                self._unhealthy_cycles = 0
                return self._release(
                    f"unhealthy for {UNHEALTHY_CYCLES_BEFORE_HANDOVER} cycles ({why})", health
                )
        handover = self._handover_target(view)
        if handover is not None:
            return self._release(f"switchover to {handover or 'any healthy node'}", health)
        if view.pause is not None:
            by = f" by {view.pause.by}" if view.pause.by else ""
            return Decision(
                f"leader at epoch {leader.epoch}: paused{by}, exports held",
                "leader",
                False,
                leader.epoch,
                self.lease,
            )
        wait = self._delay_until - self._clock()
        if wait > 0:
            return Decision(
                f"leader at epoch {leader.epoch}: waiting {wait:.1f}s lock-delay after an unplanned takeover",
                "leader",
                False,
                leader.epoch,
                self.lease,
            )
        return Decision(
            f"leader at epoch {leader.epoch}: exporting", "leader", True, leader.epoch, self.lease
        )

    def _handover_target(self, view: ClusterView) -> str | None:
        """The node a pending request asks us to hand over to ('' = any), or None."""
        assert self.leader is not None
        sw = self.requests.for_leader(view, self.leader)  # only a request naming us and our epoch
        if sw is not None:
            return sw.to
        fo = self.requests.failover_for_leader(view, self.leader)
        return fo.to if fo is not None else None

    def _as_follower(self, view: ClusterView, health: Health, healthy: bool, why: str) -> Decision:
        self._publish(health, "staging", healthy, why)
        if (
            view.leader is not None
            and view.leader.node == self.node
            and view.leader.session == self.coord.session_id
        ):
            # A leader znode of our own live session that we no longer act on (we demoted while
            # the session survived): remove it so that a fresh election takes a new epoch.
            try:
                removed = self.coord.remove_own_leader_znode(view.leader.epoch)
            except CoordinationError as exc:
                return Decision(f"staging: cannot remove my stale leader znode ({exc})", "staging", False, 0)
            if removed:
                return Decision(
                    f"staging: removed my stale leader znode (epoch {view.leader.epoch}), election follows",
                    "staging",
                    False,
                    view.leader.epoch,
                )
        if view.leader is not None:
            return Decision(
                f"staging: leader is {view.leader.node} (epoch {view.leader.epoch})",
                "staging",
                False,
                view.leader.epoch,
            )
        if health.rules_trial:
            # A trial node's queue is a preview: it must not export it, not even when forced.
            return Decision(
                "staging: no leader, running a rules trial: never promoted (apply or abort it)",
                "staging",
                False,
                0,
            )
        fo = self.requests.live_failover(view)
        sw = self.requests.live_switchover(view)
        forced = False
        if fo is not None:
            if fo.to != self.node:
                return Decision(f"staging: no leader, failover to {fo.to} requested", "staging", False, 0)
            forced = True
        elif sw is not None:
            if sw.to and sw.to != self.node:
                return Decision(f"staging: no leader, switchover to {sw.to} in progress", "staging", False, 0)
            if not sw.to and sw.leader == self.node:
                return Decision(
                    "staging: no leader, handed over; letting another node take over", "staging", False, 0
                )
        if view.pause is not None and not forced and not (sw is not None and sw.to == self.node):
            # Maintenance mode, as in Patroni: nothing changes leadership by itself.
            return Decision("staging: no leader, paused: no automatic promotion", "staging", False, 0)
        if not healthy and not forced:
            return Decision(f"staging: no leader, not taking over: {why}", "staging", False, 0)

        started = self._clock()
        try:
            # Above every epoch any store saw, even if ZooKeeper lost its data (ha/epochs.py).
            won = self.coord.try_acquire(epochs.with_floor(view, health.seen_epoch), health.rules_hash)
        except CoordinationError as exc:
            return Decision(f"staging: no leader, election failed ({exc})", "staging", False, 0)
        if won is None:
            return Decision("staging: no leader, another node won the election", "staging", False, 0)
        return self._promoted(won, view, health, started, forced)

    def _promoted(
        self, won: LeaderRecord, view: ClusterView, health: Health, started: float, forced: bool
    ) -> Decision:
        t = self.timing
        self.leader = won
        # The creating transaction went through the quorum leader: it confirms like sync()+read.
        self.lease = Lease(
            self.node,
            won.epoch,
            self.coord.session_timeout,
            fraction=t.lease_fraction,
            max_write=t.request_timeout,
            confirmer=self.confirm_now,
            clock=self._clock,
        )
        self.lease.renew(started)
        rel = view.release
        clean = rel is not None and rel.epoch == view.epoch.epoch
        previous = view.epoch.node or "none"
        if clean or view.epoch.epoch == 0:
            self._delay_until = 0.0
            how = f"previous leader {previous} released cleanly" if view.epoch.epoch else "first leader"
        else:
            # The old leader may still have writes in flight, each bounded by its deadline.
            self._delay_until = self._clock() + t.delay
            how = f"previous leader {previous} was lost; target import catches up first"
            if t.delay > 0:
                how += f", then {t.delay:g}s lock-delay"
        self._publish(health, "leader", True, "")
        pending = sum(health.pending.values())
        kind = "forced by failover, " if forced else ""
        log.info("ha.promoted", epoch=won.epoch, clean=clean, forced=forced)
        return Decision(
            f"promoted: epoch {won.epoch}, {kind}{how}, {pending} pending exports",
            "leader",
            False,  # the first export waits for a target import in the next cycle
            won.epoch,
            self.lease,
            promoted=True,
        )

    def refresh(self) -> Renewal:
        """The lease keeper, between cycles: renew the lease only while the main loop progresses.

        A main loop stalled for `Timing.stall` seconds resigns leadership (lease revoked, leader
        znode deleted, no release recorded: the successor waits the lock-delay).
        """
        with self._lock:
            leader, lease = self.leader, self.lease
            if leader is None or lease is None:
                if self._orphan is not None:
                    return self._remove_orphan(self._orphan)
                return Renewal("not leader", False)
            stalled = self.stalled_for()
            if stalled >= self.timing.stall and self._healthy_standby():
                return Renewal(self._resign(f"main loop made no progress for {stalled:.0f}s").sentence, False)
            if stalled > self.timing.stall / 2:
                # Not renewed: the lease runs out unless the loop moves on (cycles renew it too).
                return Renewal(
                    f"leader at epoch {leader.epoch}: lease not renewed, main loop made no progress"
                    f" for {stalled:.0f}s",
                    False,
                )
            return self._confirm(leader, lease)

    def _healthy_standby(self) -> bool:
        """A live, healthy member other than us, as of the last cycle's view: resigning helps only
        if someone can take over (a lone leader in a long first import keeps its znode; its
        lease runs out all the same)."""
        view = self.last_view
        if view is None:
            return False
        now = self._wall()
        return any(
            n != self.node and m.healthy and not view.member_stale(n, now) for n, m in view.members.items()
        )

    def confirm_now(self) -> bool:
        """A fresh quorum confirmation (before a hard delete); renews the lease when it holds."""
        with self._lock:
            leader, lease = self.leader, self.lease
            if leader is None or lease is None:
                return False
            return self._confirm(leader, lease).renewed

    def _confirm(self, leader: LeaderRecord, lease: Lease) -> Renewal:
        started = self._clock()
        try:
            ok = self.coord.confirm(leader)
        except CoordinationError as exc:
            lease.hold()  # maybe only a blip: the next confirmation restores the lease
            return Renewal(
                f"leader at epoch {leader.epoch}: cannot confirm leadership ({exc}), exports held", False
            )
        if not ok:
            demoted = self._demote("leadership lost: the leader znode is no longer ours")
            return Renewal(demoted.sentence, False)
        lease.resize(self.coord.session_timeout)
        lease.renew(started)
        return Renewal(f"leader at epoch {leader.epoch}: lease renewed", True)

    def _resign(self, reason: str) -> Decision:
        leader = self.leader
        assert leader is not None
        if self.lease:
            self.lease.revoke(f"resigned: {reason}")
        self.leader = None
        self.lease = None
        removed = self._remove_orphan(leader.epoch).renewed
        log.warning("ha.resigned", epoch=leader.epoch, reason=reason, removed=removed)
        how = "" if removed else "; leader znode not removed yet, retrying"
        return Decision(
            f"resigned leadership at epoch {leader.epoch}: {reason}{how}", "staging", False, leader.epoch
        )

    def _remove_orphan(self, epoch: int) -> Renewal:
        """Delete the leader znode a resigned leader left (retried by the keeper until it is gone)."""
        self._orphan = epoch
        try:
            self.coord.remove_own_leader_znode(epoch)
        except CoordinationError as exc:
            return Renewal(f"staging: cannot remove my stale leader znode ({exc})", False)
        self._orphan = None
        return Renewal(f"staging: removed my stale leader znode (epoch {epoch})", True)

    def release(self, reason: str, health: Health | None = None) -> Decision:
        """Hand leadership over cleanly (switchover, shutdown)."""
        with self._lock:
            return self._release(reason, health)

    def _release(self, reason: str, health: Health | None) -> Decision:
        leader = self.leader
        if leader is None:
            return Decision("staging: nothing to release", "staging", False, 0)
        if self.lease:
            self.lease.revoke(f"released: {reason}")
        ok = False
        try:
            ok = self.coord.release(leader, reason)
        except CoordinationError as exc:
            log.warning("ha.release_failed", error=str(exc))
        self.leader = None
        self.lease = None
        if health is not None:
            self._publish(health, "staging", False, "handed over")
        log.info("ha.released", epoch=leader.epoch, reason=reason, clean=ok)
        state = "released" if ok else "gave up (release not recorded)"
        return Decision(
            f"{state} leadership at epoch {leader.epoch}: {reason}",
            "staging",
            False,
            leader.epoch,
            released=True,
        )
