"""The client-side write budget: a token bucket shaped like Graph's write quota, adapting to 429s.

Graph allows an app 3,000 writes per 150 s in a tenant (a token bucket); above that every write
is answered 429 and, worse, keeps counting. idsync spends its writes from its own bucket of the
same shape, so it runs close to the limit without crossing it. A 429 means the real quota is
smaller than configured (other apps of the tenant, a tenant-wide limit, a busy service): writes
stop until Retry-After has passed and the rate drops by a factor; quiet periods win it back
slowly (AIMD), never above the configured rate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

DECREASE = 0.8  # multiplicative decrease on a 429
FLOOR = 0.05  # never below 5% of the configured rate
RECOVER = 0.5  # quiet time wins back half the configured rate per window


class WriteBudget:
    """Tokens for Graph writes; `acquire(n)` waits until `n` writes may be sent."""

    def __init__(self, budget: int, window: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(budget)
        self.window = float(window)
        self.max_rate = budget / window
        self.rate = self.max_rate
        self.tokens = self.capacity
        self._clock = clock
        self._stamp = clock()
        self._paused_until = 0.0
        self._last_throttle = -1e18
        self._lock = asyncio.Lock()
        self.throttled_total = 0
        self.waited_seconds = 0.0

    def _refill(self, now: float) -> None:
        dt = now - self._stamp
        if dt <= 0:
            return
        if self.rate < self.max_rate and now - self._last_throttle > self.window * 0.1:
            self.rate = min(self.max_rate, self.rate + self.max_rate * RECOVER * dt / self.window)
        self.tokens = min(self.capacity, self.tokens + dt * self.rate)
        self._stamp = now

    def wait_for(self, n: int) -> float:
        """Seconds until `n` writes may go (0 when they may go now)."""
        now = self._clock()
        self._refill(now)
        pause = self._paused_until - now
        short = (n - self.tokens) / self.rate if self.tokens < n else 0.0
        return max(pause, short, 0.0)

    async def acquire(self, n: int, check: Callable[[], None] | None = None) -> None:
        """Wait (first come, first served) until `n` writes fit in the budget, and take them.

        `check` runs at least every quarter second while waiting and may raise to give up (the
        exporter's fence: a leader that lost its lease must not sit out a long throttle).
        """
        n = min(n, int(self.capacity))
        async with self._lock:
            while True:
                if check is not None:
                    check()
                wait = self.wait_for(n)
                if wait <= 0:
                    self.tokens -= n
                    return
                step = min(wait, 0.25)
                self.waited_seconds += step
                await asyncio.sleep(step)

    def refund(self, n: int) -> None:
        """Writes taken but never sent (the batch was not sent after all)."""
        self.tokens = min(self.capacity, self.tokens + n)

    def throttled(self, retry_after: float | None) -> None:
        """Graph answered 429: pause writes until Retry-After, empty the bucket, slow down."""
        now = self._clock()
        self._refill(now)
        self.throttled_total += 1
        wait = retry_after if retry_after is not None else 1.0
        self._paused_until = max(self._paused_until, now + wait)
        self.tokens = min(self.tokens, 0.0)
        if now - self._last_throttle > wait:  # one decrease per throttling episode, not per item
            self.rate = max(self.max_rate * FLOOR, self.rate * DECREASE)
            log.info("export.budget_throttled", retry_after=wait, rate=round(self.rate, 2))
        self._last_throttle = now
