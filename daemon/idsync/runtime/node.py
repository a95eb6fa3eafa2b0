"""One turn of an instance: import and sync, decide the role, and export only as a fenced leader.

`Node.run_cycle()` returns the sentence operators read in the log (Patroni style), e.g.
"leader at epoch 3: exporting; exported 20 (20 ok); source +1 ~0 -0, 0 pending".
"""

from __future__ import annotations

import asyncio
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog

from idsync import metrics, progress
from idsync.fencing import Fence, GuardedFence, Unfenced
from idsync.ha import upkeep
from idsync.ha.loop import Decision, HaLoop, Health
from idsync.ha.requests import PauseGate
from idsync.ha.rules import RulesRunning
from idsync.log import bind_context
from idsync.model import ExportKind
from idsync.runtime.pipeline import CycleReport, ExportReport, Pipeline
from idsync.store import fence as store_fence
from idsync.store.db import Store

log = structlog.get_logger(__name__)


class _Progressing(GuardedFence):
    """The leader's fence, reporting main-loop progress at each check: an export that keeps
    checking (batch after batch, retry after retry) is a loop at work, not a hung one."""

    guard_confirm = False

    def __init__(self, fence: Fence, progress: Callable[[], None]) -> None:
        super().__init__(fence)
        self._progress = progress

    def guard(self) -> None:
        self._progress()


@dataclass(frozen=True)
class CycleOutcome:
    sentence: str
    role: str
    epoch: int
    report: CycleReport
    export: ExportReport | None
    promoted: bool = False


class Node:
    """Drives the pipeline under the HA loop (or standalone, always exporting)."""

    def __init__(
        self,
        name: str,
        pipeline: Pipeline,
        store: Store,
        ha: HaLoop | None,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        self.name = name
        self.pipeline = pipeline
        self.store = store
        self.ha = ha
        self.stop = stop or threading.Event()
        self.last_ok = 0.0
        self.last: CycleOutcome | None = None
        self._full_next = False
        self._catch_up = False
        self.pause_gate: PauseGate | None = None  # set by the daemon once ZooKeeper is connected
        # The cluster rules this node runs, set by the daemon's rules follower (runtime/cluster_rules.py).
        self.rules = RulesRunning()
        # Also told of progress (the daemon feeds systemd's watchdog from it).
        self.on_progress: Callable[[], None] | None = None
        if ha is not None and hasattr(pipeline, "progress"):
            # The data path reports each finished phase: a long cycle that moves on keeps its lease.
            pipeline.progress = self._progress  # type: ignore[attr-defined]  # an optional hook

    def request_full(self) -> None:
        self._full_next = True

    def _health(self, report: CycleReport) -> Health:
        return Health(
            cycle_ok=report.ok,
            last_cycle_ok=self.last_ok,
            target_caught_up=report.target_caught_up,
            rules_hash=report.rules_hash,
            pending=report.pending,
            privileged=report.privileged,
            reason=report.error,
            rules_version=self.rules.version,
            rules_trial=self.rules.trial,
            rules_error=self.rules.error,
        )

    def _ha_cycle(self, report: CycleReport) -> Decision:
        """The HA decision with the store's highest epoch, then its ZooKeeper upkeep (pause ack,
        stale requests, a structure ZooKeeper lost), all before this cycle's export."""
        assert self.ha is not None
        try:
            with self.store.transaction() as conn:
                seen = store_fence.highest_epoch(conn)
        except Exception as exc:  # the fence renewal below reports the store's state
            log.warning("fence.read_failed", error=str(exc))
            seen = 0
        before, read_at = self.ha.last_view, time.monotonic()
        decision = self.ha.run_cycle(replace(self._health(report), seen_epoch=seen))
        view = self.ha.last_view
        if self.pause_gate is not None and view is not None and view is not before:
            self.pause_gate.sync(view.pause, read_at)
        if view is not None and view.epoch.epoch > seen:
            # Remembered in the store: epochs stay above it even if ZooKeeper loses its data.
            try:
                with self.store.transaction() as conn:
                    store_fence.observe_epoch(conn, view.epoch.epoch)
                seen = view.epoch.epoch
            except Exception as exc:
                log.warning("fence.observe_failed", error=str(exc))
        done = upkeep.after_cycle(self.ha, export=decision.export, seen_epoch=seen)
        return replace(decision, sentence=f"{decision.sentence}; {done}") if done else decision

    def _renew_standalone_fence(self) -> None:
        with self.store.transaction() as conn:
            store_fence.renew(conn, 0, self.name, 3600)

    def _renew_store_fence(self, decision: Decision) -> None:
        """Mirror the lease into the store, where every claim transaction checks it."""
        lease = decision.lease
        with self.store.transaction() as conn:
            if lease is not None and decision.role == "leader" and lease.valid():
                store_fence.renew(conn, lease.epoch, self.name, lease.remaining())
            elif decision.epoch:
                store_fence.revoke(conn, decision.epoch)

    async def run_cycle(self) -> CycleOutcome:
        """One cycle; never raises for a failed phase (the sentence says what failed). The page
        loops of long phases report progress through `idsync.progress` while it runs."""
        with progress.reporting(self._progress):
            return await self._cycle()

    async def _cycle(self) -> CycleOutcome:
        full, self._full_next = self._full_next, False
        report = await self._import_and_sync(full)
        if report.ok:
            self.last_ok = time.time()
        self._progress()

        if self.ha is None:
            decision = Decision("standalone: exporting", "leader", True, 0, None)
            fence: Fence | None = Unfenced(self.name)
            try:
                await asyncio.to_thread(self._renew_standalone_fence)
            except Exception as exc:
                log.warning("fence.renew_failed", error=str(exc))
                decision = replace(decision, export=False, sentence="standalone: store unreachable")
        else:
            decision = await asyncio.to_thread(self._ha_cycle, report)
            fence = decision.lease  # type: ignore[assignment]
            if fence is not None:
                fence = _Progressing(fence, self._progress)  # an export that checks its fence moves on
            if fence is not None and self.pause_gate is not None:
                fence = self.pause_gate.wrap(fence)  # a pause stops the running slice too
            try:
                await asyncio.to_thread(self._renew_store_fence, decision)
            except Exception as exc:  # the store is down: no claim can succeed, so export nothing
                log.warning("fence.renew_failed", error=str(exc))
                decision = replace(decision, export=False, sentence=f"{decision.sentence}; store unreachable")
        bind_context(role=decision.role, epoch=decision.epoch or None)
        self._progress()

        export: ExportReport | None = None
        sentence = decision.sentence
        if decision.promoted:
            self._catch_up = True
        if decision.export and fence is not None and not self.stop.is_set():
            if self._catch_up:
                await self.pipeline.catch_up_target()
                self._catch_up = False
            if not report.ok:
                sentence += "; not exporting after a failed import/sync"
            else:
                export = await self.pipeline.export(fence, self.stop)
                self._progress()
                sentence += f"; {export.summary}"
        sentence += f"; {report.summary}" if report.ok else f"; cycle failed: {report.error}"
        outcome = CycleOutcome(sentence, decision.role, decision.epoch, report, export, decision.promoted)
        self.last = outcome
        self._metrics(outcome, decision)
        return outcome

    def _progress(self) -> None:
        """Tell the lease keeper the cycle moves on (it renews the lease only while it does)."""
        if self.ha is not None:
            self.ha.progress()
        if self.on_progress is not None:
            self.on_progress()

    def _metrics(self, outcome: CycleOutcome, decision: Decision) -> None:
        report = outcome.report
        leading = decision.role == "leader" and (self.ha is None or decision.lease is not None)
        metrics.LEADER.set(1 if leading and decision.export else 0)
        for role in ("leader", "staging"):
            metrics.ROLE.labels(role).set(1 if decision.role == role else 0)
        metrics.EPOCH.set(decision.epoch)
        if decision.promoted:
            metrics.PROMOTIONS.inc()
        metrics.CYCLES.labels("ok" if report.ok else "failed").inc()
        metrics.PHASE_SECONDS.labels("cycle").observe(report.duration)
        if report.ok:
            metrics.LAST_SUCCESS.labels("cycle").set(self.last_ok)
            for op in typing.get_args(ExportKind):
                metrics.PENDING.labels(op).set(report.pending.get(op, 0))
        if outcome.export is not None:
            metrics.PHASE_SECONDS.labels("export").observe(outcome.export.duration)
            if not outcome.export.fenced and not outcome.export.held:
                metrics.LAST_SUCCESS.labels("export").set(time.time())
        if self.ha is not None:
            metrics.ZK_CONNECTED.set(1 if self.ha.coord.connected else 0)
            view = self.ha.last_view
            if view is not None:
                metrics.PAUSED.set(1 if view.pause else 0)
                leader = view.members.get(view.leader.node) if view.leader else None
                mine = sum(report.pending.values())
                drift = (
                    mine if decision.role == "staging" and leader and not sum(leader.pending.values()) else 0
                )
                metrics.STAGING_DRIFT.set(drift)

    async def _import_and_sync(self, full: bool) -> CycleReport:
        started = time.monotonic()
        try:
            return await self.pipeline.import_and_sync(full=full)
        except Exception as exc:  # a failed phase must not kill the loop; the sentence reports it
            log.exception("cycle.failed")
            return CycleReport(
                ok=False,
                summary="",
                rules_hash="",
                target_caught_up=False,
                error=f"{type(exc).__name__}: {exc}",
                duration=time.monotonic() - started,
            )

    def release(self, reason: str) -> str | None:
        """Hand over leadership (SIGTERM, switchover of a stopping node)."""
        if self.ha is None or self.ha.leader is None:
            return None
        decision = self.ha.release(reason)
        if decision.epoch:
            try:
                with self.store.transaction() as conn:
                    store_fence.revoke(conn, decision.epoch)
            except Exception as exc:  # the lease in the store runs out by itself
                log.warning("fence.revoke_failed", error=str(exc))
        return decision.sentence
