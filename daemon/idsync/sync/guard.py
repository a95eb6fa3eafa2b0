"""The deletion guard: too many pending deletes hold *every* export until an operator approves.

Thresholds: a count (default 500, like Entra Connect; 0 switches it off) and optionally a
percentage of the objects idsync owns. The decision is pure over its inputs; the store keeps the
held sets so that an approval (the fingerprint of a held set) releases exactly that set — and the
rest of it as deletes complete — but never a larger or different set. Where approvals live
cluster-wide is the HA layer's business: it passes them in as `approved_fingerprints`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from idsync.store import links, pending


@dataclass(frozen=True)
class Thresholds:
    """`count` and `percent` apply to the deletes pending now *plus* those exported in the last
    `window_seconds`: with cycles of seconds, a mass deletion that trickles in over several
    cycles must trip the guard as surely as one that lands in a single Entra Connect run."""

    count: int = 500
    percent: float | None = None
    window_seconds: float = 1800.0

    def describe(self) -> str:
        parts = [f"{self.count} deletes" if self.count else "no count limit"]
        if self.percent is not None:
            parts.append(f"{self.percent:g}% of owned objects")
        return " or ".join(parts) + f" within {self.window_seconds / 60:g} min"


@dataclass(frozen=True)
class GuardDecision:
    """Whether exports are held, and the delete set the decision is about.

    `fingerprint` is what an operator approves (`idsync approve-deletes <fingerprint>`).
    """

    held: bool
    deletes: int
    threshold: Thresholds
    fingerprint: str
    owned: int = 0
    approved_by: str | None = None

    def sentence(self) -> str:
        if self.held:
            return (
                f"held: {self.deletes} pending deletes exceed the threshold ({self.threshold.describe()});"
                f" approve with `idsync approve-deletes {self.fingerprint}`"
            )
        if self.approved_by:
            return f"released: {self.deletes} deletes approved ({self.approved_by})"
        return f"clear: {self.deletes} pending deletes within the threshold ({self.threshold.describe()})"


def exceeds(deletes: int, owned: int, threshold: Thresholds) -> bool:
    """True when `deletes` is above the count threshold or the percentage of `owned`."""
    if threshold.count and deletes > threshold.count:
        return True
    return bool(threshold.percent is not None and owned and deletes * 100.0 / owned > threshold.percent)


def evaluate(
    conn: psycopg.Connection, threshold: Thresholds, approved_fingerprints: Sequence[str] = ()
) -> GuardDecision:
    """Decide on the current delete set; a held set is recorded so it can be approved later."""
    pending_keys = pending.delete_keys(conn)
    recent = pending.recent_delete_keys(conn, threshold.window_seconds)
    # Deletes an operator approved no longer count: the window then holds only what came after.
    released = pending.approved_keys(conn, approved_fingerprints)
    keys = sorted((set(pending_keys) | set(recent)) - released)
    fp = pending.fingerprint(keys)
    owned = links.owned_count(conn) if threshold.percent is not None else 0
    approved_by = pending.approved_superset(conn, pending_keys, approved_fingerprints) if released else None
    if not exceeds(len(keys), owned, threshold):
        return GuardDecision(False, len(keys), threshold, fp, owned, approved_by=approved_by)
    pending.record_hold(conn, fp, keys)
    return GuardDecision(True, len(keys), threshold, fp, owned)
