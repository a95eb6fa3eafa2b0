"""The cluster's sync rules as versioned records, like Patroni's dynamic configuration in its DCS.

Every node runs the cluster's *current* version; one standby at a time may run a *trial* of
candidate rules (`idsync rules trial`), which makes it report but never lead, until the trial is
applied (it becomes the next version) or aborted. This module holds the records and the pure
decisions; `idsync.ha.rules_zk` keeps them in ZooKeeper. It imports no kazoo, so the HA loop and
its in-memory tests can use it.

A version is identified by the SHA-256 of its *text* (`text_hash`): the effective-rules hash a
node computes also depends on its own configuration (source kind, group anchor), the text does not.
"""

from __future__ import annotations

import difflib
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# history steps
SEED = "seed"  # the first node published its local rules (file or preset) as version 1
FILE = "file"  # a node pinned to its rules file published it (configuration management)
TRIAL = "trial"  # an operator started a trial on a standby
ABORT = "abort"  # an operator ended a trial without applying it
APPLY = "apply"  # the trial became the next version
ROLLBACK = "rollback"  # an earlier version's text became the next version
LOAD_FAILED = "load-failed"  # a node could not load a version (it is then unhealthy)

# Above this many pending operations on the trial node, `rules apply` wants the fingerprint that
# `rules impact` prints ([sync] rules_change_threshold overrides it).
DEFAULT_CHANGE_THRESHOLD = 100


def text_hash(text: str) -> str:
    """The identity of a rules text (what versions, trials and members are compared on)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else "-"


@dataclass(frozen=True)
class RulesVersion:
    """`rules/versions/v-N`: one version's text and who made it."""

    version: int
    text: str
    hash: str
    by: str = ""
    at: float = 0.0
    note: str = ""  # "seeded from /etc/idsync/rules.toml", "trial on b", "rollback to v2"

    def when(self) -> str:
        return _when(self.at)


@dataclass(frozen=True)
class RulesCurrent:
    """`rules/current`: which version every node must run (the text is in the version znode)."""

    version: int
    hash: str
    by: str = ""
    at: float = 0.0


@dataclass(frozen=True)
class RulesTrial:
    """`rules/trial`: candidate rules one standby runs instead of the current version."""

    node: str
    text: str
    hash: str
    base: int  # the version the trial was started against
    by: str = ""
    at: float = 0.0
    origin: str = ""  # the file it came from


@dataclass(frozen=True)
class TrialReport:
    """`rules/trial-report`: what the trial node says after each cycle under the trial rules."""

    node: str
    hash: str
    loaded: bool
    error: str = ""
    cycles: int = 0  # completed cycles under the trial rules (the first one is a full sync)
    pending: dict[str, int] = field(default_factory=dict)
    guard_held: bool = False
    guard_deletes: int = 0
    guard_fingerprint: str = ""
    # The trial node's [sync] rules_change_threshold: the node that would export sets the policy.
    threshold: int = DEFAULT_CHANGE_THRESHOLD
    at: float = 0.0

    @property
    def changes(self) -> int:
        return sum(self.pending.values())


@dataclass(frozen=True)
class RulesEvent:
    """`rules/history/entry-N`: one step (seed, trial, abort, apply, rollback, load-failed)."""

    step: str
    version: int = 0
    hash: str = ""
    node: str = ""
    by: str = ""
    at: float = field(default_factory=time.time)
    note: str = ""

    def when(self) -> str:
        return _when(self.at)


@dataclass(frozen=True)
class ClusterRules:
    """One read of the rules records."""

    current: RulesVersion | None
    trial: RulesTrial | None
    report: TrialReport | None


@dataclass(frozen=True)
class RulesRunning:
    """What rules this node runs, as the HA loop needs to know for its health."""

    version: int = 0  # the cluster version loaded, 0 when the cluster has none (or standalone)
    hash: str = ""  # text hash of what runs
    trial: bool = False  # running the cluster's trial rules
    error: str = ""  # why the wanted version could not be loaded ("" when it was)


def wanted(state: ClusterRules, node: str) -> tuple[str, str, str, bool, int] | None:
    """(text, hash, label, is_trial, version) this node must run, or None when the cluster has no
    version yet."""
    trial = state.trial
    if trial is not None and trial.node == node:
        return (
            trial.text,
            trial.hash,
            f"trial {trial.hash[:12]}",
            True,
            state.current.version if state.current else 0,
        )
    cur = state.current
    if cur is None:
        return None
    return cur.text, cur.hash, f"v{cur.version}", False, cur.version


def impact_fingerprint(trial: RulesTrial, report: TrialReport) -> str:
    """What `rules apply` must be given when the trial's impact exceeds the threshold: it names the
    candidate rules and the queue they produced, so a changed queue needs a fresh review."""
    counts = ",".join(f"{k}={v}" for k, v in sorted(report.pending.items()))
    raw = f"{trial.hash}|{counts}|{report.guard_deletes}|{report.guard_fingerprint}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def unified_diff(old: str, new: str, old_name: str, new_name: str) -> str:
    """The rules diff as operators read it (empty when equal)."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), old_name, new_name
    )
    out = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return out


def render_history(events: list[RulesEvent]) -> str:
    """The table of `idsync rules history`."""
    lines = [f"{'TIME':<23}  {'STEP':<11} {'VERSION':>7}  {'HASH':<12}  {'NODE':<12} {'BY':<20} NOTE"]
    for e in events:
        v = f"v{e.version}" if e.version else "-"
        lines.append(
            f"{e.when():<23}  {e.step:<11} {v:>7}  {e.hash[:12]:<12}  {e.node or '-':<12} "
            f"{e.by or '-':<20} {e.note}".rstrip()
        )
    if not events:
        lines.append("(no rules changes recorded)")
    return "\n".join(lines)


def as_dict(obj: Any) -> dict[str, Any]:
    from dataclasses import asdict

    d = asdict(obj)
    if "at" in d:
        d["time"] = _when(d["at"])
    return d


def counts_line(pending: Mapping[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(pending.items()) if v) or "no pending operations"
