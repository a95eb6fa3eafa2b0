"""A node runs the cluster's rules: the current version from ZooKeeper, or the trial placed on it.

Precedence (docs/operations.md, "Changing the sync rules safely"):
1. a trial placed on this node (`idsync rules trial FILE --on NODE`), unless the node leads;
2. the cluster's current version (`rules/current`);
3. the local `[sync] rules_file` (or the source kind's preset) only *seeds* the cluster: the first
   node that finds no version publishes it as version 1. Afterwards a different local file is
   reported (`rules.file_differs`) and not used, unless `[sync] rules_pinned = true`, which makes the
   node publish its file as the next version at start and on SIGHUP (configuration management).

A version this node cannot load (bad CEL for its source kind, say) leaves it on the rules it had,
unhealthy with the reason, so it is never promoted; the failure is logged and in the rules history.
"""

from __future__ import annotations

import time
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from idsync.ha import rules as r
from idsync.ha import rules_zk
from idsync.ha.coordination import CoordinationError
from idsync.sync.errors import RuleProblem, RulesError
from idsync.sync.rules import Rules, rules_from_mapping

if TYPE_CHECKING:
    from idsync.config import Config
    from idsync.ha.loop import HaLoop
    from idsync.ha.zk import Coordinator
    from idsync.runtime.node import CycleOutcome, Node

log = structlog.get_logger(__name__)


def parse_rules(text: str, origin: str, cfg: Config) -> Rules:
    """Rules from a TOML text as this node's configuration builds them; RulesError lists problems."""
    from idsync.sync.engine import group_anchor_of

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(origin, [RuleProblem("file", f"TOML syntax error: {exc}")]) from exc
    return rules_from_mapping(
        data, origin=origin, source_kind=cfg.source.kind, group_anchor=group_anchor_of(cfg)
    )


def local_text(cfg: Config) -> tuple[str, str]:
    """(text, origin) of the local rules: the rules file, or "" for the source kind's preset."""
    path = cfg.sync.rules_file
    if path is None:
        return "", f"preset {cfg.source.kind}"
    try:
        return Path(path).read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        raise RulesError(str(path), [RuleProblem("file", f"cannot be read: {exc.strerror or exc}")]) from exc


class RulesFollower:
    """Keeps one node's pipeline on the cluster's rules; called by the daemon around each cycle."""

    def __init__(self, cfg: Config, coord: Coordinator, node: Node, ha: HaLoop[Any]) -> None:
        self.cfg = cfg
        self.coord = coord
        self.node = node
        self.ha = ha
        self.pipeline: Any = node.pipeline  # DataPath: use_rules, guard_held, last_sync
        self.running: str | None = None  # text hash of the rules the pipeline runs
        self.failed: str | None = None  # text hash whose load failed (reported once)
        self.cycles = 0  # completed cycles since the running rules were loaded

    @property
    def me(self) -> str:
        return self.coord.node

    def start(self) -> None:
        """Seed the cluster with the local rules if it has none; publish them if pinned."""
        rules_zk.ensure(self.coord)
        text, origin = local_text(self.cfg)
        rules_zk.seed(self.coord, text, by=f"node {self.me}", note=f"seeded from {origin}")
        if self.cfg.sync.rules_pinned:
            self.publish_pinned(text, origin)

    def publish_pinned(self, text: str, origin: str) -> None:
        cur, _ = rules_zk.read_summary(self.coord)
        if cur is not None and cur.hash == r.text_hash(text):
            return
        parse_rules(text, origin, self.cfg)  # never publish what this node cannot load itself
        rules_zk.publish(self.coord, text, by=f"node {self.me}", step=r.FILE, note=f"pinned file {origin}")

    def reload_local(self) -> str:
        """SIGHUP: re-read the local file; the cluster's version stays what runs unless pinned."""
        text, origin = local_text(self.cfg)
        if self.cfg.sync.rules_pinned:
            self.publish_pinned(text, origin)
            return f"pinned rules file {origin} published"
        cur, _ = rules_zk.read_summary(self.coord)
        if cur is not None and cur.hash != r.text_hash(text):
            log.warning(
                "rules.file_differs",
                file=origin,
                cluster_version=cur.version,
                hint=f"try it with `idsync rules trial {origin} --on {self.me}`",
            )
            return f"rules file {origin} differs from the cluster's v{cur.version}: not used"
        return "rules unchanged"

    def before_cycle(self) -> None:
        """Load what this node must run (current version or its trial) when it changed."""
        try:
            # Two small reads per cycle; the version's text only when something changed.
            cur, placed = rules_zk.read_summary(self.coord)
        except CoordinationError as exc:
            log.warning("rules.read_failed", error=str(exc))
            return
        mine = placed is not None and placed.node == self.me and self.ha.leader is None
        if mine and placed is not None and placed.hash == self.running and self.node.rules.trial:
            return
        if cur is not None and not mine and cur.hash == self.running:
            self.node.rules = r.RulesRunning(version=cur.version, hash=cur.hash)
            return
        try:
            state = rules_zk.read(self.coord)
            if state.current is None:  # the cluster lost its rules (a wiped ZooKeeper): seed again
                self.start()
                state = rules_zk.read(self.coord)
        except (CoordinationError, rules_zk.RulesConflict, RulesError) as exc:
            log.warning("rules.read_failed", error=str(exc))
            return
        trial = state.trial
        if trial is not None and trial.node == self.me and self.ha.leader is not None:
            # Placed on a node that leads now: a leader never runs candidate rules.
            self._report(
                r.TrialReport(self.me, trial.hash, False, error=f"{self.me} leads; a trial runs on a standby")
            )
            state = replace(state, trial=None)
        want = r.wanted(state, self.me)
        if want is None:
            return
        text, digest, label, is_trial, version = want
        if digest != self.running:
            try:
                change = self.pipeline.use_rules(text, f"cluster rules {label}")
            except RulesError as exc:
                self._load_failed(label, digest, version, is_trial, exc, trial)
                return
            self.running, self.failed, self.cycles = digest, None, 0
            by = trial.by if is_trial and trial else state.current.by if state.current else ""
            log.info("rules.loaded", rules=label, version=version, trial=is_trial, by=by, change=change)
        self.node.rules = r.RulesRunning(version=version, hash=digest, trial=is_trial)

    def _load_failed(
        self,
        label: str,
        digest: str,
        version: int,
        is_trial: bool,
        exc: RulesError,
        trial: r.RulesTrial | None,
    ) -> None:
        error = f"cannot load rules {label}: {exc}"
        prev = self.node.rules
        self.node.rules = r.RulesRunning(version=prev.version, hash=prev.hash, trial=False, error=error)
        if digest == self.failed:
            return
        self.failed = digest
        log.error("rules.load_failed", rules=label, version=version, trial=is_trial, error=str(exc))
        try:
            rules_zk.record_event(
                self.coord,
                r.RulesEvent(r.LOAD_FAILED, version, digest, self.me, f"node {self.me}", note=str(exc)[:500]),
            )
        except (CoordinationError, Exception) as e:  # the log line above already says it
            log.warning("rules.history_failed", error=str(e))
        if is_trial and trial is not None:
            self._report(r.TrialReport(self.me, trial.hash, False, error=str(exc)))

    def after_cycle(self, outcome: CycleOutcome) -> None:
        """A trial node reports what its queue under the trial rules holds."""
        rules = self.node.rules
        if not rules.trial:
            return
        if outcome.report.ok:
            self.cycles += 1
        last = getattr(self.pipeline, "last_sync", None)
        g = last.guard if last is not None else None
        self._report(
            r.TrialReport(
                node=self.me,
                hash=rules.hash,
                loaded=True,
                cycles=self.cycles,
                pending=dict(outcome.report.pending),
                guard_held=bool(g and g.held),
                guard_deletes=g.deletes if g else 0,
                guard_fingerprint=g.fingerprint if g else "",
                threshold=self.cfg.sync.rules_change_threshold,
                at=time.time(),
            )
        )

    def _report(self, report: r.TrialReport) -> None:
        try:
            rules_zk.report_trial(self.coord, report)
        except CoordinationError as exc:
            log.warning("rules.report_failed", error=str(exc))
