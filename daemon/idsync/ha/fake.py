"""An in-memory coordination service with ZooKeeper's semantics, for driving `HaLoop` in tests.

`FakeEnsemble` holds the cluster's records; each `FakeCoordination` is one node's session on
it. Faults are explicit: `suspend()` (connection down, session alive), `expire()` (session
lost), `partition()` (the node's server answers plain reads but not the quorum), `fail(...)`
(the next call of an operation raises). Nothing sleeps: a test runs every decision in
milliseconds. Time is whatever the HaLoop's clock says.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field, replace

from idsync.ha.coordination import CoordinationError
from idsync.ha.records import (
    ClusterView,
    EpochRecord,
    FailoverRequest,
    LeaderRecord,
    MemberRecord,
    PauseRecord,
    ReleaseRecord,
    SwitchoverRequest,
)

_sessions = itertools.count(0x1000)


@dataclass
class FakeEnsemble:
    """The records one ZooKeeper ensemble would hold for a cluster."""

    leader: LeaderRecord | None = None
    epoch: EpochRecord = field(default_factory=EpochRecord)
    epoch_version: int = 0
    members: dict[str, MemberRecord] = field(default_factory=dict)
    switchover: SwitchoverRequest | None = None
    failover: FailoverRequest | None = None
    pause: PauseRecord | None = None
    release: ReleaseRecord | None = None
    rules_version: int = 0  # the cluster's rules (ha/rules.py): current version, its hash, the trial
    rules_hash: str = ""
    trial_node: str = ""
    trial_hash: str = ""
    session_timeout: float = 2.0  # what the "server" negotiates
    lock: threading.Lock = field(default_factory=threading.Lock)

    def drop_session(self, session: int, node: str) -> None:
        """Ephemeral records of a lost session vanish."""
        if self.leader is not None and self.leader.session == session:
            self.leader = None
        self.members.pop(node, None)

    def view(self) -> ClusterView:
        return ClusterView(
            leader=self.leader,
            epoch=self.epoch,
            epoch_version=self.epoch_version,
            members=dict(self.members),
            switchover=self.switchover,
            failover=self.failover,
            pause=self.pause,
            release=self.release,
            rules_version=self.rules_version,
            rules_hash=self.rules_hash,
            trial_node=self.trial_node,
            trial_hash=self.trial_hash,
        )


class FakeCoordination:
    """One node's session on a `FakeEnsemble` (implements `idsync.ha.coordination.Coordination`)."""

    def __init__(self, ensemble: FakeEnsemble, node: str) -> None:
        self.ensemble = ensemble
        self.node = node
        self.wake = threading.Event()
        self._state = "connected"
        self._session: int | None = next(_sessions)
        self._partitioned = False
        self._failing: dict[str, CoordinationError] = {}
        self.calls: list[str] = []  # operations in call order (tests assert on quorum checks)

    # -- faults -------------------------------------------------------------------------------

    def suspend(self) -> None:
        """The connection is down; the session may survive (kazoo SUSPENDED)."""
        self._state = "suspended"

    def reconnect(self) -> None:
        """Back within the session timeout: same session."""
        self._state = "connected"

    def expire(self) -> None:
        """The quorum expired the session: ephemeral records go (kazoo LOST on reconnect)."""
        with self.ensemble.lock:
            if self._session is not None:
                self.ensemble.drop_session(self._session, self.node)
        self._state = "lost"
        self._session = None

    def new_session(self) -> None:
        """kazoo reconnected with a fresh session after LOST."""
        self._state = "connected"
        self._session = next(_sessions)

    def partition(self, on: bool = True) -> None:
        """Our server is cut off from the quorum: plain reads answer, sync() does not."""
        self._partitioned = on

    def fail(self, operation: str, error: str = "timed out") -> None:
        """The next call of `operation` raises CoordinationError(error)."""
        self._failing[operation] = CoordinationError(error)

    def _call(self, operation: str) -> None:
        self.calls.append(operation)
        err = self._failing.pop(operation, None)
        if err is not None:
            raise err

    # -- Coordination ---------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def connected(self) -> bool:
        return self._state == "connected"

    @property
    def session_id(self) -> int | None:
        return self._session

    @property
    def session_timeout(self) -> float:
        return self.ensemble.session_timeout

    def start(self, timeout: float | None = None) -> None:
        return None

    def stop(self) -> None:
        """Close the session: ephemeral records vanish at once."""
        self.expire()

    def read(self) -> ClusterView:
        self._call("read")
        with self.ensemble.lock:
            return self.ensemble.view()

    def publish_member(self, record: MemberRecord) -> None:
        self._call("publish_member")
        with self.ensemble.lock:
            self.ensemble.members[self.node] = record

    def try_acquire(self, view: ClusterView, rules_hash: str) -> LeaderRecord | None:
        self._call("try_acquire")
        if self._session is None or not self.connected:
            return None
        if self._partitioned:
            raise CoordinationError("leader election transaction failed: no quorum")
        e = self.ensemble
        with e.lock:
            if e.leader is not None or e.epoch_version != view.epoch_version:
                return None
            record = LeaderRecord(node=self.node, epoch=view.epoch.epoch + 1, session=self._session)
            e.leader = record
            e.epoch = EpochRecord(epoch=record.epoch, node=self.node, rules_hash=rules_hash, at=time.time())
            e.epoch_version += 1
            if view.switchover is not None:
                e.switchover = None
            if view.failover is not None and view.failover.to == self.node:
                e.failover = None
            return record

    def confirm(self, leader: LeaderRecord) -> bool:
        self._call("confirm")
        if self._session != leader.session:
            return False
        if not self.connected:
            raise CoordinationError("ZooKeeper connection is down")
        if self._partitioned:
            raise CoordinationError("ZooKeeper sync failed: our server lost the quorum")
        with self.ensemble.lock:
            cur = self.ensemble.leader
            return (
                cur is not None
                and cur.session == leader.session
                and cur.epoch == leader.epoch
                and self.ensemble.epoch.epoch == leader.epoch
            )

    def remove_own_leader_znode(self, epoch: int) -> bool:
        self._call("remove_own_leader_znode")
        with self.ensemble.lock:
            cur = self.ensemble.leader
            if cur is None or cur.session != self._session:
                return False
            self.ensemble.leader = None
            return True

    def release(self, leader: LeaderRecord, reason: str) -> bool:
        self._call("release")
        if not self.connected:
            return False
        with self.ensemble.lock:
            cur = self.ensemble.leader
            if cur is None or cur.session != leader.session:
                return False
            self.ensemble.leader = None
            self.ensemble.release = ReleaseRecord(
                node=self.node, epoch=leader.epoch, at=time.time(), reason=reason
            )
            return True

    # -- operator requests (what `idsync switchover|failover|pause` write) -----------------------

    def request_switchover(self, req: SwitchoverRequest) -> None:
        with self.ensemble.lock:
            self.ensemble.switchover = req

    def request_failover(self, req: FailoverRequest) -> None:
        with self.ensemble.lock:
            self.ensemble.failover = req

    def set_pause(self, rec: PauseRecord) -> None:
        with self.ensemble.lock:
            self.ensemble.pause = rec

    def clear_pause(self) -> bool:
        with self.ensemble.lock:
            had, self.ensemble.pause = self.ensemble.pause is not None, None
            return had

    def age_member(self, node: str, seconds: float) -> None:
        """Make `node`'s member record look `seconds` older (a hung member)."""
        with self.ensemble.lock:
            m = self.ensemble.members[node]
            self.ensemble.members[node] = replace(m, last_cycle=m.last_cycle - seconds)
