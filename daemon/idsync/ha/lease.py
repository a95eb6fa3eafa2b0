"""The leader's local lease on the monotonic clock: no write once ZooKeeper may have moved on.

ZooKeeper expires a session `session_timeout` after it last heard from the client. A round trip
that *started* at t proves the session was alive at t, so the server cannot expire it before
t + session_timeout. The lease runs to t + fraction * session_timeout, leaving the rest of the
timeout for a request in flight to finish before any other node can win.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from idsync.fencing import Fenced


class Lease:
    """Leadership at one epoch, valid until a monotonic deadline; revocable from any thread."""

    def __init__(
        self,
        node: str,
        epoch: int,
        session_timeout: float,
        *,
        fraction: float = 2 / 3,
        min_remaining: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._node = node
        self._epoch = epoch
        self._span = session_timeout * fraction
        self._min_remaining = min_remaining
        self._clock = clock
        self._lock = threading.Lock()
        self._deadline = 0.0
        self._revoked: str | None = None

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def node(self) -> str:
        return self._node

    def renew(self, started_at: float) -> None:
        """Extend the lease after a ZooKeeper round trip that began at `started_at` confirmed us."""
        with self._lock:
            if self._revoked is None:
                self._deadline = max(self._deadline, started_at + self._span)

    def hold(self) -> None:
        """Stop writes until the next confirmation (ZooKeeper connection SUSPENDED)."""
        with self._lock:
            self._deadline = 0.0

    def revoke(self, reason: str) -> None:
        """End the lease for good (SUSPENDED, LOST, session change, release)."""
        with self._lock:
            if self._revoked is None:
                self._revoked = reason
            self._deadline = 0.0

    @property
    def revoked(self) -> str | None:
        return self._revoked

    def remaining(self) -> float:
        with self._lock:
            if self._revoked is not None:
                return 0.0
            return max(0.0, self._deadline - self._clock())

    def valid(self) -> bool:
        return self.remaining() > self._min_remaining

    def ensure(self) -> None:
        """Raise Fenced unless the lease is held with more than `min_remaining` seconds left."""
        with self._lock:
            revoked = self._revoked
            left = self._deadline - self._clock()
        if revoked is not None:
            raise Fenced(self._epoch, revoked)
        if left <= self._min_remaining:
            raise Fenced(self._epoch, f"lease expired ({left:.1f}s left, need {self._min_remaining:.1f}s)")
