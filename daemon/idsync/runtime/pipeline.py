"""What one instance does every cycle, whatever its role: the contract the daemon drives.

The daemon knows the phases only through this protocol; `idsync.runtime.build` assembles the
real one from the source connector, the target connector, the sync engine and the exporter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from idsync.fencing import Fence


@dataclass(frozen=True)
class CycleReport:
    """The outcome of import + sync on this node."""

    ok: bool
    summary: str  # e.g. "source +3 ~1 -0, target ~2, sync 4 pending"
    rules_hash: str
    target_caught_up: bool
    pending: dict[str, int] = field(default_factory=dict)
    error: str = ""
    duration: float = 0.0
    privileged: int = 0  # users quarantined because Graph refused to change an administrator


@dataclass(frozen=True)
class ExportReport:
    """The outcome of one export run by the leader."""

    summary: str  # e.g. "exported 20 (18 ok, 2 failed)"
    attempted: int = 0
    succeeded: int = 0
    failed: int = 0
    held: str = ""  # why nothing was exported (deletion guard), "" when not held
    fenced: bool = False
    duration: float = 0.0


class Pipeline(Protocol):
    """The data path of one instance (ARCHITECTURE.md, steps 1-5)."""

    async def import_and_sync(self, *, full: bool = False) -> CycleReport:
        """Import source and target, run the sync rules, refresh pending exports."""
        ...

    async def catch_up_target(self) -> None:
        """Import the target until caught up (a new leader does this before its first export)."""
        ...

    async def export(self, fence: Fence, stop: StopFlag) -> ExportReport:
        """Export pending operations while `fence` holds, stopping between batches on `stop`."""
        ...

    def reload(self) -> str:
        """Reload the rules (SIGHUP); returns what changed."""
        ...

    def close(self) -> None: ...


class StopFlag(Protocol):
    def is_set(self) -> bool: ...
