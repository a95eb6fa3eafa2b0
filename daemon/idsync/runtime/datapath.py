"""The real pipeline: LDAP source, Graph target, sync engine and exporter, in one instance.

Source import and sync are blocking (ldap3, psycopg) and run in worker threads; the Graph client
is asyncio and runs on the daemon's loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import structlog

from idsync import metrics
from idsync.config import Config
from idsync.fencing import Fence, Fenced
from idsync.runtime.pipeline import CycleReport, ExportReport, StopFlag
from idsync.runtime.tenant_watch import TenantWatch
from idsync.source.importer import ImportResult as SourceResult
from idsync.source.importer import SourceImporter
from idsync.store import quarantine
from idsync.store.db import Store
from idsync.sync.engine import SyncEngine, SyncResult, engine_from_config
from idsync.sync.signin import InitialPasswords
from idsync.target import duplicates
from idsync.target.delta import ImportResult as TargetResult
from idsync.target.delta import TypeImport
from idsync.target.errors import TargetError
from idsync.target.graph import GraphTarget
from idsync.target.tenant import TenantReader
from idsync.writeback import run as writeback_run

log = structlog.get_logger(__name__)

SLICE_USED = "export time slice used; the rest goes next cycle"


class _Slice:
    """The leader's fence, narrowed to one export slice: it also ends on SIGTERM and when the
    slice is over, so that the HA loop (switchover requests, health) runs between slices."""

    def __init__(self, fence: Fence, stop: StopFlag, seconds: float) -> None:
        self._fence = fence
        self._stop = stop
        self._deadline = time.monotonic() + seconds

    @property
    def epoch(self) -> int:
        return self._fence.epoch

    @property
    def node(self) -> str:
        return self._fence.node

    def remaining(self) -> float:
        return self._fence.remaining()

    def write_deadline(self) -> float:
        # A batch started within the slice finishes: only the lease bounds its writes.
        return self._fence.write_deadline()

    def confirm_now(self) -> None:
        self._fence.confirm_now()

    def ensure(self) -> None:
        self._fence.ensure()
        if self._stop.is_set():
            raise Fenced(self.epoch, "stopping")
        if time.monotonic() > self._deadline:
            raise Fenced(self.epoch, SLICE_USED)


class DataPath:
    """ARCHITECTURE.md's data path for one instance (the `Pipeline` the daemon drives)."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        *,
        approvals: Callable[[], tuple[str, ...]] = tuple,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.approvals = approvals
        self.engine: SyncEngine = engine_from_config(store, cfg)
        self.source = SourceImporter(writeback_run.source_settings(cfg), store)
        # Writeback to AD (`[writeback]`): planned every cycle on every node, written by the leader.
        self.writeback = writeback_run.Writeback.from_config(cfg, store) if cfg.writeback.enabled else None
        self.target = self._target()
        rules = self.engine.rules
        self.tenant = TenantWatch(
            TenantReader(self.target.client),
            store,
            rules.anchor_attribute("group"),
            rules.of("group").enabled,
        )
        self.guard_held = False
        self.last_sync: SyncResult | None = None
        # How long one cycle may export before the HA loop gets its turn again.
        self.export_slice = max(cfg.ha.loop_interval_seconds, 2.0)
        # Called between the phases of import_and_sync: the node counts it as main-loop progress
        # (a leader's lease is renewed only while its cycle moves on; runtime/node.py).
        self.progress: Callable[[], None] = lambda: None

    def _target(self) -> GraphTarget:
        rules = self.engine.rules
        return GraphTarget(
            self.cfg.target.graph,
            node=self.cfg.node.name,
            user_attributes=rules.managed_attributes("user"),
            group_attributes=rules.managed_attributes("group"),
            # One source of truth: the attributes the rules write the anchors to.
            user_anchor=rules.anchor_attribute("user"),
            group_anchor=rules.anchor_attribute("group"),
            manager=rules.user.manager is not None,
        )

    @property
    def rules_hash(self) -> str:
        return self.engine.rules.hash

    async def startup_checks(self) -> list[str]:
        """The tenant checks the daemon runs before its first cycle (raises TenantNotReady or
        GraphAuthError when it cannot run; a missing group extension only holds groups back)."""
        return await self.tenant.startup()

    async def import_and_sync(self, *, full: bool = False) -> CycleReport:
        t0 = time.monotonic()
        src = await asyncio.to_thread(self._source, full)
        self.progress()
        t1 = time.monotonic()
        metrics.PHASE_SECONDS.labels("source_import").observe(t1 - t0)
        metrics.LAST_SUCCESS.labels("source_import").set(time.time())
        await self.tenant.refresh()
        self.engine.blocked = dict(self.tenant.blocked)  # e.g. groups without their extension
        tgt = await self._import_target()
        self.progress()
        t2 = time.monotonic()
        metrics.PHASE_SECONDS.labels("target_import").observe(t2 - t1)
        metrics.LAST_SUCCESS.labels("target_import").set(time.time())
        caught_up = all(t.complete for t in tgt.types.values())
        for t in tgt.types.values():
            for result in ("added", "updated", "deleted", "unchanged"):
                metrics.IMPORTED.labels("target", result).inc(getattr(t.counts, result))
        # Before the sync: its deletion guard then counts the writeback deletes too.
        wb = None
        if self.writeback is not None:
            groups_done = "group" in tgt.types and tgt.types["group"].complete
            wb = await asyncio.to_thread(partial(self.writeback.plan, groups_complete=groups_done))
        approved = await asyncio.to_thread(self.approvals)
        res = await asyncio.to_thread(self.engine.run, full=full, approved_fingerprints=approved)
        self.progress()
        metrics.PHASE_SECONDS.labels("sync").observe(time.monotonic() - t2)
        metrics.LAST_SUCCESS.labels("sync").set(time.time())
        self.last_sync = res
        self.guard_held = res.guard.held
        metrics.GUARD_HOLDING.set(1 if res.guard.held else 0)
        metrics.GUARD_DELETES.set(res.guard.deletes)
        metrics.UNEQUAL_QUARANTINED.inc(res.unequal)
        privileged = await asyncio.to_thread(self._quarantine_metrics)
        changed = f"source +{src.added} ~{src.updated} -{src.deleted}"
        if src.kind == "full":
            changed = f"source full import ({src.added + src.updated + src.unchanged} objects)"
        target = f"target {tgt.objects} changes" if caught_up else "target import incomplete"
        pending = sum(res.pending.values())
        guard = "; deletion guard holds exports" if res.guard.held else ""
        if wb is not None:
            guard += f"; {wb.sentence()}"
        return CycleReport(
            ok=True,
            summary=f"{changed}, {target}, {pending} pending{guard}",
            rules_hash=self.rules_hash,
            target_caught_up=caught_up,
            pending=dict(res.pending),
            duration=time.monotonic() - t0,
            privileged=privileged,
        )

    def _source(self, full: bool) -> SourceResult:
        res = self.source.full_import() if full else self.source.delta_import()
        for result in ("added", "updated", "deleted", "unchanged"):
            metrics.IMPORTED.labels("source", result).inc(getattr(res, result))
        metrics.IMPORTED.labels("source", "error").inc(res.errors)
        return res

    def _quarantine_metrics(self) -> int:
        """Set the quarantine gauges; returns how many privileged users are quarantined."""
        with self.store.connection() as conn:
            counts = quarantine.count(conn)
            privileged = quarantine.privileged(conn)
        for phase in ("import", "sync", "export"):
            metrics.QUARANTINED.labels(phase).set(counts.get(phase, 0))
        metrics.PRIVILEGED_QUARANTINED.set(privileged)
        return privileged

    async def _import_target(self) -> TargetResult:
        """The target import, each type on its own: a type whose import fails (Graph refuses its
        `$select`, keeps answering 5xx) is held back this cycle with the reason, and the other
        type is imported, diffed and exported as usual. Only when every type fails does the
        cycle fail."""
        t0 = time.monotonic()
        types = self.tenant.import_types
        runs = [self.target.importer.run_type(self.store, t) for t in types]
        got = await asyncio.gather(*runs, return_exceptions=True)
        done: dict[str, TypeImport] = {}
        failed: dict[str, TargetError] = {}
        for t, r in zip(types, got, strict=True):
            if isinstance(r, TargetError):
                failed[t] = r
            elif isinstance(r, BaseException):
                raise r  # not Graph's doing (the store, a bug): the cycle fails as before
            else:
                done[t] = r
        if failed and not done:
            raise next(iter(failed.values()))
        for name, e in failed.items():
            log.error("target.import_failed", type=name, error=str(e), held=f"{name} diffs this cycle")
            self.engine.blocked[name] = f"its target import failed: {e}"
        return TargetResult(done, time.monotonic() - t0)

    async def catch_up_target(self) -> None:
        """A new leader's first step: read what the previous leader wrote."""
        for _ in range(10):
            res = await self.target.import_delta(self.store, self.tenant.import_types)
            if all(t.complete for t in res.types.values()):
                return
        log.warning("target.catch_up_incomplete")

    async def export(self, fence: Fence, stop: StopFlag) -> ExportReport:
        if self.guard_held:
            return ExportReport("deletion guard holds all exports", held="deletion guard")
        fenced_slice = _Slice(fence, stop, self.export_slice)
        # User creates get their initial password from the rules, computed now (never stored).
        passwords = InitialPasswords(self.store, self.engine.rules)
        exporter = self.target.exporter(self.store, fenced_slice, passwords)
        t0 = time.monotonic()
        # Duplicate groups the target import found (target/duplicates.py) go before any export.
        dups = await duplicates.resolve(self.target.client, self.store, fenced_slice, self.target.schema)
        # In-flight batches finish; no new one starts once the slice is over or on SIGTERM.
        rep = await exporter.export(held=self.guard_held)
        # Then AD, under the same fence with a slice of its own (half the Graph one), so that a
        # Graph backlog does not starve it (ldap3 blocks: a worker thread).
        ad = None
        if self.writeback is not None:
            ad_slice = _Slice(fence, stop, self.export_slice / 2)
            ad = await asyncio.to_thread(self.writeback.export, ad_slice)
        attempted = len(rep.results)
        ok = rep.count("ok", "adopted")
        failed = rep.count("error")
        throttled = rep.throttled
        for r in rep.results:
            metrics.EXPORTED.labels(r.kind, r.outcome).inc()
            if r.final and r.kind in ("update", "delete"):
                # a privileged user Graph will not let this app change: a security event (a final
                # create is a refused restore, target/recycle.py, or a refused initial password:
                # quarantined, not alerted)
                metrics.PRIVILEGED_REFUSALS.labels(r.kind).inc()
        metrics.GRAPH_THROTTLED.inc(rep.throttled)
        metrics.USERS_RESTORED.inc(rep.restored)
        fenced = rep.fenced or ""
        more = ""
        if fenced in (SLICE_USED, "stopping"):
            more, fenced = f"; {fenced}", ""
        seconds = time.monotonic() - t0
        if dups.found:
            more += f"; {dups.sentence()}"
        if ad is not None:
            attempted, ok, failed = attempted + ad.attempted, ok + ad.ok, failed + ad.failed
            if ad.attempted or ad.fenced:
                more += f"; {ad.sentence()}"
            if ad.fenced and ad.fenced not in (SLICE_USED, "stopping") and not fenced:
                fenced = ad.fenced
        if not attempted and not fenced:
            return ExportReport(f"nothing to export{more}", duration=seconds)
        counts = f"{ok} ok, {failed} rejected, {throttled} throttled"
        if rep.restored:
            counts += f", {rep.restored} restored from the recycle bin"
        summary = f"exported {attempted} ({counts}) in {seconds:.1f}s{more}"
        if fenced:
            summary += f"; stopped: {fenced}"
        return ExportReport(summary, attempted, ok, failed, fenced=bool(fenced), duration=seconds)

    def reload(self) -> str:
        old = self.rules_hash
        self._install(engine_from_config(self.store, self.cfg))
        return "rules unchanged" if old == self.rules_hash else f"rules {old[:12]} -> {self.rules_hash[:12]}"

    def use_rules(self, text: str, origin: str) -> str:
        """Run the rules `text` (a cluster version or a trial, runtime/cluster_rules.py) instead of
        the file's; raises RulesError naming every problem, and then keeps the rules it had. The
        engine's stored rules hash makes the next sync a full one."""
        from idsync.runtime.cluster_rules import parse_rules

        old = self.rules_hash
        rules = parse_rules(text, origin, self.cfg)
        # The same engine settings as the file's rules get (thresholds, soft match, confirmation).
        self._install(engine_from_config(self.store, self.cfg, rules))
        return "rules unchanged" if old == self.rules_hash else f"rules {old[:12]} -> {self.rules_hash[:12]}"

    def _install(self, engine: SyncEngine) -> None:
        self.engine = engine
        rules = self.engine.rules
        schema = replace(
            self.target.schema,
            user_attributes=rules.managed_attributes("user"),
            group_attributes=rules.managed_attributes("group"),
            manager=rules.user.manager is not None,
        )
        self.target.schema = self.target.importer.schema = schema

    def close(self) -> None:
        self.source.close()
        if self.writeback is not None:
            self.writeback.close()

    async def aclose(self) -> None:
        await self.target.close()
