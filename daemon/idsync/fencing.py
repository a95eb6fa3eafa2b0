"""The fencing contract between the HA layer and the exporter.

The exporter knows nothing of ZooKeeper: it receives a `Fence`, calls `ensure()` before every
batch, and hands it to the HTTP transport, which asks `write_deadline()` right before a write's
bytes go out (and again before any re-send) and bounds the whole request by it. Before a hard
delete the exporter calls `confirm_now()`. The HA layer implements it (see idsync.ha.lease).
"""

from __future__ import annotations

from typing import Protocol


class Fenced(Exception):
    """This node may no longer write: its leadership (epoch) ended or its lease ran out."""

    def __init__(self, epoch: int, reason: str) -> None:
        super().__init__(f"fenced at epoch {epoch}: {reason}")
        self.epoch = epoch
        self.reason = reason


class Fence(Protocol):
    """Proof of leadership that the exporter checks before each write."""

    @property
    def epoch(self) -> int: ...

    @property
    def node(self) -> str: ...

    def ensure(self) -> None:
        """Raise Fenced unless this node still holds leadership with time to spare."""
        ...

    def remaining(self) -> float:
        """Seconds of lease left (0 when not leader)."""
        ...

    def write_deadline(self) -> float:
        """Seconds a write starting now may take in all; raises Fenced when it may not start."""
        ...

    def confirm_now(self) -> None:
        """Confirm leadership with a quorum now (before an irreversible write); raises Fenced."""
        ...


class GuardedFence:
    """A fence that runs `guard()` before each write check it hands on to the fence it wraps
    (the cluster's pause gate, the main loop's progress stamp)."""

    guard_confirm = True  # run the guard before confirm_now() too

    def __init__(self, fence: Fence) -> None:
        self._fence = fence

    @property
    def epoch(self) -> int:
        return self._fence.epoch

    @property
    def node(self) -> str:
        return self._fence.node

    def remaining(self) -> float:
        return self._fence.remaining()

    def guard(self) -> None:
        """Raise Fenced (or note something) before the wrapped fence is asked."""

    def ensure(self) -> None:
        self.guard()
        self._fence.ensure()

    def write_deadline(self) -> float:
        # Asked by the HTTP transport right before a write's bytes go out.
        self.guard()
        return self._fence.write_deadline()

    def confirm_now(self) -> None:
        if self.guard_confirm:
            self.guard()
        self._fence.confirm_now()


class Unfenced:
    """A fence that always holds: standalone mode and tests without an HA cluster."""

    def __init__(self, node: str = "standalone", epoch: int = 0) -> None:
        self._node = node
        self._epoch = epoch

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def node(self) -> str:
        return self._node

    def ensure(self) -> None:
        return None

    def remaining(self) -> float:
        return float("inf")

    def write_deadline(self) -> float:
        return float("inf")

    def confirm_now(self) -> None:
        return None
