"""The client-side write budget: adaptive pacing that does not need to know Graph's real quota.

Graph allows an app 3,000 writes per 150 s in a tenant (a token bucket; `concepts/throttling-limits.md`,
identity and access), but the quota idsync actually gets can be smaller (other apps of the tenant,
the tenant-wide 18,000 per 5 min, a busy service) or, on another cloud or a future limit, larger.
So the configured `write_budget`/`write_window_seconds` is only where pacing starts:

- **additive increase**: while writes are waiting for tokens and Graph gives no warning, the rate
  creeps up by `increase` configured rates per window, up to `ceiling` times the configured rate;
- **back off before the 429**: Graph sends `x-ms-throttle-limit-percentage` (0.8 to 1.8) on
  normal responses once the app has used more than 0.8 of its limit (`concepts/throttling-limits.md`,
  "Regular responses"). From `near` (0.8) on, the rate stops growing and bursts stop (tokens are
  dropped, writes go at the paced rate); from `slow` (0.9) on, while the figure still rises, the
  rate is multiplied by `decrease`, at most once per `react` windows; from `urgent` on, whatever
  the trend;
- **multiplicative decrease on a 429**: writes stop until Retry-After has passed (always obeyed;
  `concepts/throttling.md`: usage keeps counting while throttled), the bucket empties and the rate
  is multiplied by `backoff`, once per throttling episode.

A token bucket only wastes quota while it is full, so holding Graph's bucket between 0.8 and 1.0
used is running at its full rate without 429s. The bucket's capacity (the burst after a quiet
time) is the current rate times the window, the shape of Graph's own bucket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from idsync import metrics

log = structlog.get_logger(__name__)

LIMIT_HEADER = "x-ms-throttle-limit-percentage"
SCOPE_HEADER = "x-ms-throttle-scope"


@dataclass(frozen=True)
class Pacing:
    """The controller's constants; rates are in configured rates, times in windows."""

    ceiling: float = 3.0  # at most 3x the configured rate (Graph's tenant-wide write limit is 3x an app's)
    floor: float = 0.05  # never below 5 % of the configured rate
    increase: float = 1.0  # configured rates gained per window while writes wait and Graph is quiet
    settled: float = 0.25  # the same, within `memory` windows of a decrease: near the real limit
    memory: float = 10.0
    hold: float = 1 / 30  # windows after a warning or a 429 before creeping up again (5 s of 150 s)
    near: float = 0.8  # Graph's own threshold for sending the header
    slow: float = 0.9  # from here, decrease while the figure still rises
    urgent: float = 0.97  # from here, decrease whatever the trend
    decrease: float = 0.9  # factor per reaction to the header
    react: float = 1 / 150  # windows between two reactions to the header (1 s of 150 s)
    backoff: float = 0.7  # factor on a 429, once per throttling episode
    log_change: float = 0.25  # a structlog event when the rate moved this much since the last one


def parse_limit(raw: str | None) -> float | None:
    """`x-ms-throttle-limit-percentage` as a fraction of the limit (0.8 to 1.8), None when absent.

    Graph documents a fraction ("ranges from 0.8 to 1.8"); a value above 2 is read as a percent.
    """
    if raw is None:
        return None
    try:
        v = float(raw)
    except ValueError:
        return None
    if v != v or v < 0:  # NaN or negative: not a figure
        return None
    return v / 100 if v > 2 else v


class WriteBudget:
    """Tokens for Graph writes; `acquire(n)` waits until `n` writes may be sent."""

    def __init__(
        self,
        budget: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        pacing: Pacing | None = None,
    ) -> None:
        self.p = pacing or Pacing()
        self.window = float(window)
        self.base_rate = budget / window  # the configured rate: where pacing starts
        self.max_rate = self.base_rate * self.p.ceiling
        self.min_rate = self.base_rate * self.p.floor
        self.rate = self.base_rate
        self.capacity = float(budget)
        self.tokens = self.capacity
        self._clock = clock
        self._stamp = clock()
        self._paused_until = 0.0
        self._last_throttle = -1e18
        self._warned_at = -1e18  # the last header at or above `near`
        self._reacted_at = -1e18  # the last decrease on the header
        self._peak = 0.0  # the figure at the last decrease (0: below `slow` since)
        self._demand_at = -1e18  # the last time writes had to wait for tokens
        self._decreased_at = -1e18  # the last decrease (on the header or a 429)
        self._logged_rate = self.rate
        self._lock = asyncio.Lock()
        self.throttled_total = 0
        self.waited_seconds = 0.0
        self.last_limit: float | None = None  # the last x-ms-throttle-limit-percentage seen
        self.warnings = 0  # responses carrying the header
        self._publish()

    # --- the bucket ------------------------------------------------------------------------------
    def _refill(self, now: float) -> None:
        dt = now - self._stamp
        if dt <= 0:
            return
        quiet = self.p.hold * self.window
        if (
            self.rate < self.max_rate
            and now - self._demand_at <= quiet  # writes are waiting: the rate is what limits them
            and now - self._warned_at > quiet
            and now - self._last_throttle > quiet
        ):
            near_limit = now - self._decreased_at < self.p.memory * self.window
            gain = self.p.settled if near_limit else self.p.increase
            step = self.base_rate * gain * min(dt, quiet) / self.window
            self._set_rate(self.rate + step, "quiet")
        self.tokens = min(self.capacity, self.tokens + dt * self.rate)
        self._stamp = now

    def _set_rate(self, rate: float, why: str) -> None:
        if rate < self.rate:
            self._decreased_at = self._clock()
        self.rate = min(self.max_rate, max(self.min_rate, rate))
        self.capacity = max(1.0, self.rate * self.window)
        self.tokens = min(self.tokens, self.capacity)
        self._publish()
        if abs(self.rate - self._logged_rate) >= self.p.log_change * self._logged_rate:
            log.info(
                "export.pacing_rate",
                rate=round(self.rate, 2),
                was=round(self._logged_rate, 2),
                configured=round(self.base_rate, 2),
                reason=why,
                limit=self.last_limit,
            )
            self._logged_rate = self.rate

    def _publish(self) -> None:
        metrics.GRAPH_WRITE_RATE.set(self.rate)
        metrics.GRAPH_THROTTLE_LIMIT.set(self.last_limit or 0.0)

    def wait_for(self, n: int) -> float:
        """Seconds until `n` writes may go (0 when they may go now)."""
        now = self._clock()
        self._refill(now)
        n = min(n, int(self.capacity)) or 1
        pause = self._paused_until - now
        short = (n - self.tokens) / self.rate if self.tokens < n - 1e-9 else 0.0  # float dust
        return max(pause, short, 0.0)

    def take(self, n: int) -> float:
        """Take `n` tokens and return 0, or return the seconds to wait (writes are waiting)."""
        wait = self.wait_for(n)
        if wait > 0:
            self._demand_at = self._clock()
            return wait
        self.tokens -= min(n, int(self.capacity)) or 1
        return 0.0

    async def acquire(self, n: int, check: Callable[[], None] | None = None) -> None:
        """Wait (first come, first served) until `n` writes fit in the budget, and take them.

        `check` runs at least every quarter second while waiting and may raise to give up (the
        exporter's fence: a leader that lost its lease must not sit out a long throttle).
        """
        async with self._lock:
            while True:
                if check is not None:
                    check()
                wait = self.take(n)
                if wait <= 0:
                    return
                step = min(wait, 0.25)
                self.waited_seconds += step
                await asyncio.sleep(step)

    def refund(self, n: int) -> None:
        """Writes taken but never sent (the batch was not sent after all)."""
        self.tokens = min(self.capacity, self.tokens + n)

    # --- what Graph tells ------------------------------------------------------------------------
    def observe(self, headers: Mapping[str, str]) -> None:
        """A write's response (a `$batch` item): its `x-ms-throttle-limit-percentage`, if any."""
        if LIMIT_HEADER not in headers and SCOPE_HEADER in headers:
            return  # a 429 names its scope, not the figure: it says nothing about being under 0.8
        used = parse_limit(headers.get(LIMIT_HEADER))
        self.last_limit = used
        metrics.GRAPH_THROTTLE_LIMIT.set(used or 0.0)
        if used is None or used < self.p.near:
            self._peak = 0.0
            return
        now = self._clock()
        self._refill(now)
        self.warnings += 1
        if now - self._warned_at > self.p.hold * self.window:
            self.tokens = min(self.tokens, 0.0)  # a first warning ends the burst: the paced rate from now
        self._warned_at = now
        if used < self.p.slow:
            if used < (self.p.near + self.p.slow) / 2:  # clearly down: the next rise counts again
                self._peak = 0.0
            return
        if now - self._reacted_at < self.p.react * self.window:
            return
        if used > self._peak or used >= self.p.urgent:  # still rising, or about to be refused
            self._reacted_at = now
            self._peak = used
            self._set_rate(self.rate * self.p.decrease, f"limit {used:.2f}")

    def throttled(self, retry_after: float | None, scope: str | None = None) -> None:
        """Graph answered 429: pause writes until Retry-After, empty the bucket, slow down."""
        now = self._clock()
        self._refill(now)
        self.throttled_total += 1
        wait = retry_after if retry_after is not None else 1.0
        self._paused_until = max(self._paused_until, now + wait)
        self.tokens = min(self.tokens, 0.0)
        if now - self._last_throttle > wait:  # one decrease per throttling episode, not per item
            self._set_rate(self.rate * self.p.backoff, "429")
            log.info("export.budget_throttled", retry_after=wait, rate=round(self.rate, 2), scope=scope)
        self._last_throttle = now
