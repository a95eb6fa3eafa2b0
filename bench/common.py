"""What every benchmark returns: figures measured against a baseline from the same run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

SAME_RUN = "same run"  # the baseline was measured in the same run, on the same machine
CONFIGURED = "configured"  # the baseline is a configured value (a timeout, an interval, a quota)


@dataclass(frozen=True)
class Figure:
    """One measured figure.

    `value` is idsync's number, `baseline` the reference measured in the same run on the same
    machine (None when the figure is absolute, e.g. peak RSS), `target` the goal as text
    ("ratio >= 0.5", "<= 300 MB") and `ok` whether the goal was met. `basis` says what the
    baseline is: SAME_RUN (the default when there is one) or CONFIGURED (a configured value, not a
    measurement: BENCHMARKS.md says so in its own column).
    """

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    ok: bool | None = None
    note: str = ""
    basis: str = ""

    @property
    def baseline_basis(self) -> str:
        """SAME_RUN, CONFIGURED, or "" when the figure has no baseline (only a target)."""
        if self.baseline is None:
            return ""
        return self.basis or SAME_RUN

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Figure:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline
