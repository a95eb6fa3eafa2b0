"""Fault injection: forced 429 storms, 5xx bursts, 410 resyncs, latency and dropped connections.

Rules are matched in order; a rule with a `count` stops after that many hits. Tests drive them
in-process (`emulator.faults.add(Fault(...))`) or over HTTP (`POST /_emulator/faults`).
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from idsync.emulator.call import Call

KINDS = ("throttle", "status", "gone", "drop", "latency")
STATUS_CODES = {500: "generalException", 502: "badGateway", 503: "serviceNotAvailable", 504: "gatewayTimeout"}


@dataclass
class Fault:
    """One rule.

    kind: "throttle" (429 + Retry-After), "status" (a 5xx), "gone" (410 + Location, on delta),
    "drop" (close the connection; `after=True` drops the response after the write was applied),
    "latency" (delay `latency` seconds). `count` None means until cleared; `probability` < 1 makes
    it random (seeded). `methods`, `path` (a regex searched in the path, e.g. "^/users") and
    `writes_only` narrow which calls it hits; `in_batch` None hits plain requests and batch items,
    True only items, False only plain requests. A rule hits the `$batch` envelope itself only when
    its `path` matches "/$batch".
    """

    kind: str
    count: int | None = 1
    probability: float = 1.0
    status: int = 503
    retry_after: int | None = 1
    latency: float = 0.0
    after: bool = False
    methods: list[str] | None = None
    path: str | None = None
    writes_only: bool = False
    in_batch: bool | None = None
    id: int = 0
    hits: int = 0
    _rx: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, not {self.kind!r}")
        if self.kind == "status" and not 500 <= self.status <= 599:
            raise ValueError(f"a status fault needs a 5xx status, not {self.status}")
        self._rx = re.compile(self.path) if self.path else None

    def to_dict(self) -> dict[str, Any]:
        """JSON view for the admin API."""
        d = asdict(self)
        d.pop("_rx", None)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fault:
        """Build from admin-API JSON; unknown keys are an error."""
        allowed = {f for f in cls.__dataclass_fields__ if not f.startswith("_") and f not in ("id", "hits")}
        bad = set(d) - allowed
        if bad:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(bad))}")
        return cls(**d)

    def matches(self, call: Call, envelope: bool) -> bool:
        """Whether this rule applies to `call` (before count and probability)."""
        if envelope:
            return bool(self._rx and self._rx.search(call.path))
        if self.in_batch is not None and self.in_batch != call.in_batch:
            return False
        if self.methods and call.method not in self.methods:
            return False
        if self.writes_only and not call.is_write:
            return False
        return not (self._rx and not self._rx.search(call.path))


class Faults:
    """The active rules."""

    def __init__(self, seed: int = 0) -> None:
        self.rules: list[Fault] = []
        self.rng = random.Random(seed)
        self._next = 1

    def add(self, fault: Fault) -> Fault:
        """Activate a rule; returns it with its id."""
        fault.id = self._next
        self._next += 1
        self.rules.append(fault)
        return fault

    def clear(self) -> None:
        """Remove every rule."""
        self.rules.clear()

    def take(self, call: Call, kinds: tuple[str, ...], envelope: bool = False) -> Fault | None:
        """The first rule of `kinds` that hits `call`, counting the hit."""
        for f in self.rules:
            if f.kind not in kinds or not f.matches(call, envelope):
                continue
            if f.probability < 1.0 and self.rng.random() >= f.probability:
                continue
            f.hits += 1
            if f.count is not None:
                f.count -= 1
                if f.count <= 0:
                    self.rules.remove(f)
            return f
        return None
