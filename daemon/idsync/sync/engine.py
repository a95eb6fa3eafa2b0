"""One sync cycle: source space → desired state → links → pending exports, in one transaction.

(Preceded by a brief one that reads the high waters of both spaces once no writer can undercut
them.) A crash rolls the whole cycle back; the watermarks commit with the data they cover.

Incremental by default: only source objects whose changed_seq passed the sync watermark are
evaluated (in pages, CEL in Python, everything else set-based in SQL), plus their dependents
(groups whose member entered or left scope) and objects the target import changed (which is how
pending operations get confirmed). Full when asked, or when the rules hash differs from the one
of the last full sync: every source object is re-evaluated, but only objects whose desired state
or diff actually changed get new operations.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING

import orjson
import psycopg
import structlog

from idsync import progress
from idsync.store import desired, diff, links, pending, quarantine, target_space, upkeep, watermarks
from idsync.store.db import Store
from idsync.sync import defaults, guard
from idsync.sync.evaluate import Evaluator, PilotScope, pilot_scope
from idsync.sync.pages import NOTICE, evaluate_pages, workers_for
from idsync.sync.rules import Rules, load_rules
from idsync.sync.tenant import STORE_KEY as TENANT_KEY
from idsync.sync.tenant import TenantDomains

if TYPE_CHECKING:
    from idsync.config import Config

log = structlog.get_logger(__name__)

SOURCE_WATERMARK = "sync.source_seq"
TARGET_WATERMARK = "sync.target_seq"
RULES_HASH_KEY = "sync.rules_hash"
DIFF_OWED_KEY = "sync.diff_owed"  # a diff was deferred: the next complete one covers everything
TENANT_SEEN_KEY = "sync.tenant_domains"  # fingerprint of the tenant domains the last sync used
PILOT_KEY = "sync.pilot_members"  # the pilot groups' members the last sync used, per type


@dataclass(frozen=True)
class SyncResult:
    """What one cycle did; `sentence()` is what the daemon logs and operators read."""

    full: bool
    reason: str
    evaluated: int
    quarantined: int
    desired_added: int
    desired_updated: int
    desired_removed: int
    ops_written: int
    ops_confirmed: int
    pending: dict[str, int]
    guard: guard.GuardDecision
    duration_seconds: float
    links: dict[str, int] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step, for tuning
    deferred: str | None = None  # why the diff did not run (the target space is incomplete)
    # Types whose diff waits for their target import while the other type's diff ran (a full
    # group round under way must not hold user exports hostage, nor the other way round).
    deferred_types: str | None = None
    # Operations quarantined this cycle because their exports kept not taking (store.diff).
    unequal: int = 0

    def sentence(self) -> str:
        kind = f"full sync ({self.reason})" if self.full else "delta sync"
        if self.deferred:
            return (
                f"{kind}: {self.evaluated} objects evaluated, {self.quarantined} quarantined,"
                f" desired +{self.desired_added} ~{self.desired_updated} -{self.desired_removed};"
                f" diff deferred: {self.deferred} ({self.duration_seconds:.2f}s)"
            )
        queued = ", ".join(f"{k} {v}" for k, v in sorted(self.pending.items())) or "empty"
        partly = f"; {self.deferred_types}" if self.deferred_types else ""
        if self.unequal:
            partly += f"; {self.unequal} quarantined: their exports kept not taking"
        return (
            f"{kind}: {self.evaluated} objects evaluated, {self.quarantined} quarantined,"
            f" desired +{self.desired_added} ~{self.desired_updated} -{self.desired_removed},"
            f" {self.ops_written} operations written, {self.ops_confirmed} confirmed or dropped;"
            f" queue: {queued}; guard {self.guard.sentence()}{partly} ({self.duration_seconds:.2f}s)"
        )


class SyncEngine:
    """The sync step of a cycle. Blocking; the daemon runs `run()` in a worker thread."""

    def __init__(
        self,
        store: Store,
        rules: Rules,
        *,
        thresholds: guard.Thresholds | None = None,
        soft_match: bool = False,
        page_size: int = 2000,
        confirm_timeout: timedelta = timedelta(minutes=30),
        check_target_rounds: bool = False,
        unequal_limit: int = diff.UNEQUAL_LIMIT,
        export_settle: timedelta = timedelta(0),
        evaluate_processes: int | None = None,
    ) -> None:
        self.store = store
        # Worker processes for the rules of a big sync: None = one per CPU, 0 = none (sync.pages).
        self.evaluate_processes = evaluate_processes
        self.rules = rules
        self.thresholds = thresholds or guard.Thresholds()
        self.soft_match = soft_match
        self.page_size = page_size
        self.confirm_timeout = confirm_timeout
        self.unequal_limit = unequal_limit
        self.export_settle = export_settle
        self.check_target_rounds = check_target_rounds
        self._evaluator = Evaluator(rules)
        # Object types whose diff the daemon holds back, with the reason (e.g. groups while the
        # group anchor extension is not registered); the other type goes on.
        self.blocked: dict[str, str] = {}

    def run(self, *, full: bool = False, approved_fingerprints: tuple[str, ...] = ()) -> SyncResult:
        """Run one sync: desired state, links, diff, guard. Commits once, at the end; then the
        tables it changed in bulk are analyzed (and vacuumed where needed: store.upkeep)."""
        t0 = time.monotonic()
        result = self._run(t0, full, approved_fingerprints)
        tended = self._tend(result.ops_confirmed)
        if not tended:
            return result
        return replace(
            result,
            duration_seconds=time.monotonic() - t0,
            phases={**result.phases, "tend": round(tended.seconds, 4)},
        )

    def _run(self, t0: float, full: bool, approved_fingerprints: tuple[str, ...]) -> SyncResult:
        with self.store.transaction() as conn:
            src_upto, tgt_upto = desired.stable_high_waters(conn)
        with self.store.transaction() as conn:
            upkeep.flush_stats(conn)  # its row counts are read by _tend right after the commit
            previous = desired.get_meta(conn, RULES_HASH_KEY)
            reason = "requested" if full else ""
            if not full and previous != self.rules.hash:
                full, reason = True, "first sync" if previous is None else "rules changed"
            tenant_json = desired.get_meta(conn, TENANT_KEY)
            tenant = TenantDomains.from_json(tenant_json) if tenant_json else None
            self._evaluator.tenant = tenant
            seen_tenant = desired.get_meta(conn, TENANT_SEEN_KEY)
            if tenant is not None and seen_tenant != tenant.fingerprint():
                # A domain verified (or removed) changes which UPNs fall back: evaluate everything.
                desired.set_meta(conn, TENANT_SEEN_KEY, tenant.fingerprint())
                if not full:
                    full, reason = True, "tenant domains changed" if seen_tenant else "tenant domains read"
            desired.prepare(conn)
            moved, pilot_reason = self._pilot(conn)
            if pilot_reason and not full:
                full, reason = True, pilot_reason
            src_after = 0 if full else _mark(conn, SOURCE_WATERMARK)
            tgt_after = 0 if full else _mark(conn, TARGET_WATERMARK)
            rounds = self._incomplete_types(conn)
            # Per type, why its diff must wait: its target import, or a block the daemon set
            # (the group anchor extension is not registered).
            waiting = {t: f"target import incomplete ({_why_incomplete({t: s})})" for t, s in rounds.items()}
            waiting.update({t: r for t, r in self.blocked.items() if t not in waiting})
            incomplete = ""
            if len(rounds) == 2:
                incomplete = f"target import incomplete ({_why_incomplete(rounds)})"
            elif len(waiting) == 2:
                incomplete = "; ".join(f"{t}: {r}" for t, r in waiting.items())
            owed = desired.get_meta(conn, DIFF_OWED_KEY) == "1"

            lap = _Laps()
            evaluated, bad = self._evaluate(conn, src_after, src_upto, () if full else moved)
            lap("evaluate")
            changes = desired.apply_staged(conn, self.rules.hash, full=full)
            manages = self.rules.user.manager is not None
            if manages:
                desired.refresh_managers(conn, full=full)
            elif full:
                desired.drop_managers(conn)  # the manager flow is off: idsync leaves managers alone
            lap("desired")
            if incomplete:
                # Diffing against a half-imported target would queue creates for objects that
                # exist: keep the desired state, owe a full diff, leave the target watermark.
                desired.set_meta(conn, DIFF_OWED_KEY, "1")
                watermarks.put(conn, SOURCE_WATERMARK, str(src_upto).encode())
                desired.set_meta(conn, RULES_HASH_KEY, self.rules.hash)
                counts = pending.counts(conn)
                decision = guard.evaluate(conn, self.thresholds, approved_fingerprints)
                return self._result(
                    full,
                    reason,
                    evaluated,
                    bad,
                    changes,
                    {},
                    {},
                    {},
                    counts,
                    decision,
                    t0,
                    lap,
                    deferred=incomplete,
                )
            desired.mark_dependents(conn)
            if full or owed:
                desired.mark_all(conn)
            member_types = [t for t in ("group",) if self.rules.of(t).members]
            desired.refresh_members(conn, member_types)
            lap("members")
            links.mark_changed(conn, tgt_after, tgt_upto)
            desired.analyze(conn)

            soft = {}
            if self.soft_match:
                soft = {t: a for t in ("user", "group") if (a := self.rules.of(t).soft_match)}
            linked = links.link(conn, soft)
            lap("link")
            if waiting:
                # One type's target import is incomplete: diff the other type now, owe this one
                # a full diff (the owed flag stays set until both imports are complete).
                desired.forget_dirty(conn, sorted(waiting))
                desired.set_meta(conn, DIFF_OWED_KEY, "1")
            deprovision = {t: self.rules.of(t).deprovision for t in ("user", "group")}
            anchors = {t: self.rules.anchor_attribute(t) for t in ("user", "group")}
            obj = diff.diff_objects(
                conn, deprovision, self.unequal_limit, anchors, settle=self.export_settle, soft_match=soft
            )
            lap("diff_objects")
            # Group membership lives in the group import: it is diffed only once that is whole.
            mem = (
                diff.diff_members(conn, self.unequal_limit, settle=self.export_settle)
                if "group" not in waiting
                else {}
            )
            lap("diff_members")
            mgr = (
                diff.diff_managers(conn, self.unequal_limit, settle=self.export_settle)
                if manages and "user" not in waiting
                else {}
            )
            mem = {k: mem.get(k, 0) + mgr.get(k, 0) for k in {*mem, *mgr}}
            lap("diff_managers")
            pending.release_waiting(conn)  # operations that waited for a link formed above
            lap("release_waiting")
            rearmed = diff.rearm_settled(conn, self.export_settle, self.unequal_limit)
            rearmed += diff.rearm_unconfirmed(conn, self.confirm_timeout, self.unequal_limit)
            unequal = diff.quarantine_unequal(conn)
            for u in unequal:
                log.warning("sync.export_not_taking", anchor=u.anchor, kind=u.kind, reason=u.reason)

            watermarks.put(conn, SOURCE_WATERMARK, str(src_upto).encode())
            watermarks.put(conn, TARGET_WATERMARK, str(tgt_upto).encode())
            desired.set_meta(conn, RULES_HASH_KEY, self.rules.hash)
            if owed and not waiting:
                desired.set_meta(conn, DIFF_OWED_KEY, "0")
            decision = guard.evaluate(conn, self.thresholds, approved_fingerprints)
            counts = pending.counts(conn)
            lap("guard")
        obj["written"] += rearmed
        partly = None
        if waiting:
            partly = "; ".join(f"{t} diffs deferred: {r}" for t, r in waiting.items())
        return self._result(
            full,
            reason,
            evaluated,
            bad,
            changes,
            linked,
            obj,
            mem,
            counts,
            decision,
            t0,
            lap,
            deferred_types=partly,
            unequal=len(unequal),
        )

    def _tend(self, confirmed: int) -> upkeep.Tended:
        """ANALYZE the tables this sync changed in bulk, VACUUM the queue after a big
        confirmation (store.upkeep): plans made before a first sync filled the link table must
        not outlive it, whether autovacuum runs or not."""
        try:
            with self.store.connection() as conn:
                tended = upkeep.tend(conn, confirmed=confirmed)
        except psycopg.Error as exc:  # autovacuum may do it later: not worth failing a cycle over
            log.warning("sync.tend_failed", error=str(exc).splitlines()[0] if str(exc) else repr(exc))
            return upkeep.Tended()
        if tended:
            log.info(
                "sync.tables_tended",
                analyzed=list(tended.analyzed),
                vacuumed=list(tended.vacuumed),
                seconds=round(tended.seconds, 2),
            )
        return tended

    def _result(
        self,
        full: bool,
        reason: str,
        evaluated: int,
        bad: int,
        changes: desired.DesiredChanges,
        linked: dict[str, int],
        obj: dict[str, int],
        mem: dict[str, int],
        counts: dict[str, int],
        decision: guard.GuardDecision,
        t0: float,
        lap: _Laps,
        deferred: str | None = None,
        deferred_types: str | None = None,
        unequal: int = 0,
    ) -> SyncResult:
        result = SyncResult(
            full=full,
            reason=reason,
            evaluated=evaluated,
            quarantined=bad,
            desired_added=changes.added,
            desired_updated=changes.updated,
            desired_removed=changes.removed,
            ops_written=obj.get("written", 0) + mem.get("written", 0),
            ops_confirmed=obj.get("confirmed", 0) + mem.get("confirmed", 0),
            pending=counts,
            guard=decision,
            duration_seconds=time.monotonic() - t0,
            links={**linked, "left": obj.get("left", 0)},
            phases=lap.phases,
            deferred=deferred,
            deferred_types=deferred_types,
            unequal=unequal,
        )
        log.info("sync.done", sentence=result.sentence())
        if decision.held:
            log.warning("sync.deletes_held", deletes=decision.deletes, fingerprint=decision.fingerprint)
        return result

    def _incomplete_types(self, conn: psycopg.Connection) -> dict[str, str]:
        """The object types whose target space cannot be diffed against now, with their state."""
        if not self.check_target_rounds:
            return {}
        state = target_space.round_state(conn)
        return {t: s for t, s in state.items() if s in ("full", "never")}

    def confirm(self) -> SyncResult:
        """Process only what the target import changed (drops operations that landed).

        The same as a delta `run()` with no source changes; cheap enough to call right after
        a target import.
        """
        return self.run()

    def guard_decision(self, approved_fingerprints: tuple[str, ...] = ()) -> guard.GuardDecision:
        """The deletion guard's decision on the queue as it is now (the exporter asks before a batch)."""
        with self.store.transaction() as conn:
            return guard.evaluate(conn, self.thresholds, approved_fingerprints)

    def _pilot(self, conn: psycopg.Connection) -> tuple[set[str], str]:
        """Load the pilot groups' members (`scope.member_of`) into the evaluator; return the
        objects that entered or left a pilot group since the last sync (to evaluate again), and
        a reason for a full sync when a pilot group appeared or disappeared."""
        self._evaluator.pilot = pilot_scopes(conn, self.rules)
        if not self._evaluator.pilot:
            return set(), ""
        now = {t: scope.fingerprint() for t, scope in self._evaluator.pilot.items()}
        raw = desired.get_meta(conn, PILOT_KEY)
        text = orjson.dumps(now).decode()
        if text != raw:
            desired.set_meta(conn, PILOT_KEY, text)
        before: dict[str, list[str]] = orjson.loads(raw) if raw else {}
        moved: set[str] = set()
        for t, refs in now.items():
            old = before.get(t)
            if old is None:
                continue  # the rules just gained member_of: their hash changed, everything runs
            changed = set(old) ^ set(refs)
            if any(r.startswith("missing:") for r in changed):
                return set(), "pilot group found or lost"
            moved |= {r for r in changed if not r.startswith("dn:")}
        return moved, ""

    def _evaluate(
        self, conn: psycopg.Connection, after: int, upto: int, extra: Iterable[str] = ()
    ) -> tuple[int, int]:
        """Evaluate changed source objects (and the `extra` anchors) page by page; stage
        verdicts, quarantine failures."""
        evaluated = bad = 0
        ok_anchors: list[str] = []
        plain: list[str] = []  # evaluated without a notice: an older notice is cleared
        # Entries this sync may release (its own new ones are never among the released): none
        # held, nothing to release — a first sync of 1,000,000 objects spent 4 s on empty deletes.
        held = quarantine.held_phases(conn, ("sync", NOTICE))
        pages = itertools.chain(
            desired.changed_source(conn, after, upto, self.page_size),
            desired.source_rows(conn, extra, after, upto, self.page_size),
        )
        # A big sync evaluates in worker processes while this thread reads and stages pages.
        todo = desired.count_changed(conn, after, upto) if self.evaluate_processes != 0 else 0
        workers = workers_for(todo, self.evaluate_processes)
        for rows, page in evaluate_pages(self._evaluator, pages, workers):
            progress.beat()
            evaluated += rows
            desired.stage(conn, page.staged)
            quarantine.put(conn, page.notices)
            if page.failed:
                bad += quarantine.put(conn, page.failed)
                log.warning("sync.quarantined", objects=len(page.failed), first=page.failed[0].reason)
            ok_anchors += page.ok
            plain += page.plain
            if len(ok_anchors) >= 10_000:
                if "sync" in held:
                    quarantine.release(conn, "sync", ok_anchors)
                ok_anchors.clear()
            if len(plain) >= 10_000:
                if NOTICE in held:
                    quarantine.release(conn, NOTICE, plain)
                plain.clear()
        if ok_anchors and "sync" in held:
            quarantine.release(conn, "sync", ok_anchors)
        if plain and NOTICE in held:
            quarantine.release(conn, NOTICE, plain)
        return evaluated, bad


def pilot_scopes(conn: psycopg.Connection, rules: Rules) -> dict[str, PilotScope]:
    """The pilot groups' direct members, from the source space, per type with `scope.member_of`."""
    out = {}
    for t in ("user", "group"):
        if dns := rules.of(t).scope.member_of:
            out[t] = pilot_scope(desired.groups_by_dn(conn, dns), dns)
    return out


def _why_incomplete(waiting: dict[str, str]) -> str:
    return ", ".join(
        f"{t}: {'never imported' if s == 'never' else 'full round under way'}" for t, s in waiting.items()
    )


def _mark(conn: psycopg.Connection, name: str) -> int:
    wm = watermarks.get(conn, name)
    return int(wm.value.decode()) if wm else 0


class _Laps:
    """Seconds spent in each step of a cycle."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._t = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.phases[name] = round(now - self._t, 4)
        self._t = now


def group_anchor_of(cfg: Config) -> str | None:
    """The group anchor extension the target configuration names (the target connector's rule):
    `anchor_extension_attribute`, else the extension of the app (`client_id`), else None."""
    graph = cfg.target.graph
    if graph.anchor_extension_attribute:
        return graph.anchor_extension_attribute
    if graph.client_id:
        return defaults.group_anchor_attribute(str(graph.client_id))
    return None


def engine_from_config(store: Store, cfg: Config, rules: Rules | None = None) -> SyncEngine:
    """The engine as `[sync]` and `[source] kind` configure it, running `rules` (else the rules
    file or the kind's preset).

    Raises RulesError listing every problem of the rules.
    """
    if rules is None:
        anchor = group_anchor_of(cfg)
        rules = load_rules(cfg.sync.rules_file, source_kind=cfg.source.kind, group_anchor=anchor)
    thresholds = guard.Thresholds(
        cfg.sync.deletion_threshold_count,
        cfg.sync.deletion_threshold_percent,
        cfg.sync.deletion_window_seconds,
    )
    return SyncEngine(
        store,
        rules,
        thresholds=thresholds,
        soft_match=cfg.sync.soft_match,
        check_target_rounds=True,
        confirm_timeout=timedelta(seconds=cfg.sync.confirm_timeout_seconds),
        unequal_limit=cfg.sync.export_unequal_limit,
        export_settle=timedelta(seconds=cfg.sync.export_settle_seconds),
        evaluate_processes=cfg.sync.evaluate_processes,
    )
