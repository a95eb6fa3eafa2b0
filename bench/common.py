"""What every benchmark returns: figures measured against a baseline from the same run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One measured figure.

    `value` is idsync's number, `baseline` the reference measured in the same run on the same
    machine (None when the figure is absolute, e.g. peak RSS), `target` the goal as text
    ("ratio >= 0.5", "<= 300 MB") and `ok` whether the goal was met.
    """

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    ok: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline
