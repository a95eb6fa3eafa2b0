"""What the HA loop needs from a coordination service (Patroni's `dcs` idea), as a Protocol.

`HaLoop` depends only on this; `idsync.ha.zk.Coordinator` implements it on ZooKeeper and
`idsync.ha.fake.FakeCoordination` in memory, so every decision of the loop is unit-tested in
milliseconds and real ZooKeeper proves only the timing.
"""

from __future__ import annotations

import threading
from typing import Protocol

from idsync.ha.records import ClusterView, LeaderRecord, MemberRecord


class CoordinationError(Exception):
    """The coordination service could not be reached or answered in time; the message says which."""


class Coordination(Protocol):
    """One node's session with the coordination service."""

    node: str
    wake: threading.Event  # set whenever something the loop decides on changes

    @property
    def state(self) -> str:
        """connected | suspended | lost, as last reported."""
        ...

    @property
    def connected(self) -> bool: ...

    @property
    def session_id(self) -> int | None:
        """The session's id, kept while only suspended, None once lost."""
        ...

    @property
    def session_timeout(self) -> float:
        """The session timeout the server agreed to (seconds), which sizes the lease."""
        ...

    def read(self) -> ClusterView:
        """Every record the loop decides on (plain reads: fine for decisions, not for the lease)."""
        ...

    def publish_member(self, record: MemberRecord) -> None: ...

    def try_acquire(self, view: ClusterView, rules_hash: str) -> LeaderRecord | None:
        """Leadership at view's epoch + 1 in one atomic step, or None if another node won."""
        ...

    def confirm(self, leader: LeaderRecord) -> bool:
        """Quorum-confirmed: still leader at `leader.epoch` in the session that won.

        False is definitive; CoordinationError means "cannot tell now" (the session may survive).
        """
        ...

    def remove_own_leader_znode(self, epoch: int) -> bool:
        """Delete a leader record of our own session that we no longer act on (no release record)."""
        ...

    def release(self, leader: LeaderRecord, reason: str) -> bool:
        """Give up leadership cleanly, recording the release (the successor needs no lock-delay)."""
        ...
