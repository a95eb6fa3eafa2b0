"""Graph's identity throttling: token buckets for writes and resource units per app+tenant."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from idsync.emulator.call import Call
from idsync.emulator.config import EmulatorConfig


@dataclass
class Bucket:
    """A token bucket: `capacity` tokens refilled evenly over `window` seconds."""

    capacity: float
    window: float
    tokens: float
    stamp: float

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.capacity / self.window)
            self.stamp = now

    def take(self, cost: float, now: float) -> float:
        """Take `cost` tokens; returns 0 on success, else the seconds until they would be there."""
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) * self.window / self.capacity

    def used(self) -> float:
        """The fraction of the quota in use."""
        return 1.0 - self.tokens / self.capacity


@dataclass(frozen=True)
class Verdict:
    """What throttling decided for one call: its RU cost, and a wait when it is refused."""

    ru: int
    retry_after: int = 0
    scope: str = ""
    info: str = ""
    used: float = 0.0


def resource_units(call: Call) -> int:
    """Graph's published cost of a request in resource units (identity and access)."""
    if call.is_write:
        return 1
    segs = call.path.strip("/").split("/")
    cost = 1
    if segs == ["users"]:
        cost = 2
    elif len(segs) == 3 and segs[0] == "groups" and segs[2] == "members":
        cost = 3
    elif len(segs) == 3 and segs[0] == "groups" and segs[2] == "transitiveMembers":
        cost = 5
    q = call.query
    if "$select" in q:
        cost -= 1
    if "$expand" in q:
        cost += 1
    top = q.get("$top")
    if top is not None and top.isdigit() and int(top) < 20:
        cost -= 1
    return max(cost, 1)


class Throttle:
    """Write and resource-unit buckets per app id (one tenant). A budget of 0 disables a bucket."""

    def __init__(self, cfg: EmulatorConfig, clock: object | None = None) -> None:
        self.cfg = cfg
        self.buckets: dict[tuple[str, str], Bucket] = {}

    def reset(self) -> None:
        """Full buckets for everyone."""
        self.buckets.clear()

    def _bucket(self, app: str, kind: str, now: float) -> Bucket | None:
        budget, window = (
            (self.cfg.write_budget, self.cfg.write_window)
            if kind == "Write"
            else (self.cfg.read_budget, self.cfg.read_window)
        )
        if budget <= 0:
            return None
        b = self.buckets.get((app, kind))
        if b is None or b.capacity != budget or b.window != window:
            b = Bucket(float(budget), float(window), float(budget), now)
            self.buckets[(app, kind)] = b
        return b

    def charge(self, call: Call) -> Verdict:
        """Charge a call to its app's buckets, or refuse it (nothing is taken then)."""
        ru = resource_units(call)
        now = time.monotonic()
        app = call.app_id or "anonymous"
        rub = self._bucket(app, "ReadWrite", now)
        wb = self._bucket(app, "Write", now) if call.is_write else None
        if wb is not None:
            wait = wb.take(1, now)
            if wait:
                return self._refuse(ru, wait, app, "Write", "WriteLimitExceeded")
        if rub is not None:
            wait = rub.take(ru, now)
            if wait:
                if wb is not None:
                    wb.tokens += 1  # refused requests take nothing
                return self._refuse(ru, wait, app, "ReadWrite", "ResourceUnitLimitExceeded")
        used = max(wb.used() if wb else 0.0, rub.used() if rub else 0.0)
        return Verdict(ru=ru, used=used)

    def warning(self, used: float) -> str | None:
        """`x-ms-throttle-limit-percentage` for a normal response, None when it is not sent.

        concepts/throttling-limits.md (identity and access, "Regular responses"): returned only
        when the app consumed more than 0.8 of its limit, as a fraction (0.8 to 1.8).
        """
        if not self.cfg.throttle_warning or used <= self.cfg.throttle_warning_at:
            return None
        return f"{used:.{self.cfg.throttle_warning_decimals}f}"

    def _refuse(self, ru: int, wait: float, app: str, kind: str, info: str) -> Verdict:
        scope = f"Tenant_Application/{kind}/{app}/{self.cfg.tenant_id}"
        return Verdict(ru=ru, retry_after=max(1, math.ceil(wait)), scope=scope, info=info)
