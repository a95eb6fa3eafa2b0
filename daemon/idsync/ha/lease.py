"""The leader's local lease on CLOCK_BOOTTIME: no write once ZooKeeper may have moved on.

ZooKeeper expires a session `session_timeout` after it last heard from the client. A
quorum-confirmed round trip (`sync()` then a read) that *started* at t proves the session was
alive on the quorum at t, so no other node can be elected before t + session_timeout. The
lease runs to t + fraction * session_timeout, sized from the timeout the server *negotiated*.

CLOCK_BOOTTIME keeps counting while the machine is suspended (a VM paused, a laptop lid), which
CLOCK_MONOTONIC does not: a lease measured on it cannot survive a suspend unnoticed.

Each write asks `write_deadline()` and must be over (or abandoned) by then; hard deletes call
`confirm_now()` first, a fresh quorum confirmation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from idsync.fencing import Fenced


def boottime() -> float:
    """Seconds on CLOCK_BOOTTIME (counts through suspend); CLOCK_MONOTONIC where there is none."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class Lease:
    """Leadership at one epoch, valid until a deadline on the boot clock; revocable from any thread."""

    def __init__(
        self,
        node: str,
        epoch: int,
        session_timeout: float,
        *,
        fraction: float = 2 / 3,
        max_write: float = float("inf"),
        confirmer: Callable[[], bool] | None = None,
        clock: Callable[[], float] = boottime,
    ) -> None:
        self._node = node
        self._epoch = epoch
        self._session_timeout = session_timeout
        self._fraction = fraction
        self._max_write = max_write
        self._confirmer = confirmer
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

    @property
    def span(self) -> float:
        """How long one confirmation keeps the lease: fraction x the negotiated session timeout."""
        return self._session_timeout * self._fraction

    def resize(self, session_timeout: float) -> None:
        """The server negotiated another timeout (a reconnect): later renewals use it."""
        with self._lock:
            self._session_timeout = session_timeout

    def renew(self, started_at: float) -> None:
        """Extend the lease after a quorum-confirmed round trip that began at `started_at`."""
        with self._lock:
            if self._revoked is None:
                self._deadline = max(self._deadline, started_at + self._session_timeout * self._fraction)

    def hold(self) -> None:
        """Stop writes until the next confirmation (ZooKeeper connection SUSPENDED)."""
        with self._lock:
            self._deadline = 0.0

    def revoke(self, reason: str) -> None:
        """End the lease for good (LOST, session change, release, hung main loop)."""
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
        return self.remaining() > 0.0

    def ensure(self) -> None:
        """Raise Fenced unless the lease is held."""
        self.write_deadline()

    def write_deadline(self) -> float:
        """Seconds a write starting now may take in all (token, pool, connect, send, answer).

        Never more than the lease has left, nor than the longest write (the request timeout,
        which is also the successor's lock-delay); raises Fenced when the lease is not held.
        """
        with self._lock:
            revoked = self._revoked
            left = self._deadline - self._clock()
        if revoked is not None:
            raise Fenced(self._epoch, revoked)
        if left <= 0.0:
            raise Fenced(self._epoch, "lease expired (not confirmed by a ZooKeeper quorum in time)")
        return min(left, self._max_write)

    def confirm_now(self) -> None:
        """A fresh quorum confirmation, for irreversible writes (hard deletes); raises Fenced."""
        started = self._clock()
        if self._confirmer is not None and not self._confirmer():
            raise Fenced(self._epoch, self._revoked or "leadership not confirmed by a ZooKeeper quorum")
        if self._confirmer is not None:
            self.renew(started)
        self.ensure()
