"""Evaluating the rules over pages of source objects, in this process or in worker processes.

The rules are the CPU-bound part of a sync (~55 µs per user with the AD preset); everything else
is set-based SQL. A big sync (a first or full sync: a million objects) hands the pages to worker
processes, one per CPU: the sync's thread keeps reading pages from PostgreSQL and staging the
verdicts while the workers evaluate. Small syncs evaluate in the thread (starting a worker costs
~0.5 s). The result is the same either way: `evaluate_page` is the one code path.

Workers are spawned (not forked: the daemon has threads) for the duration of one sync and get
the rules in their effective form (`rules_from_effective`: compiled CEL does not pickle), the
tenant's domains and the pilot groups. If they cannot be started or die, the sync evaluates in
its thread instead, with a warning: slower, never different.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from idsync.model import Quarantined
from idsync.store.desired import RawRow, Staged
from idsync.sync.errors import EvaluationError
from idsync.sync.evaluate import Evaluator, PilotScope
from idsync.sync.rules import rules_from_effective
from idsync.sync.tenant import TenantDomains

log = structlog.get_logger(__name__)

NOTICE = "notice"  # quarantine phase of what the rules adjusted (shown by `idsync pending`)
# Objects to evaluate from which worker processes pay off (their start-up is ~0.5 s).
PARALLEL_MIN = 20_000


@dataclass
class PageResult:
    """What the rules said about one page: verdicts to stage, failures and notices to quarantine,
    anchors evaluated cleanly (their old sync quarantine entry goes) and without a notice."""

    staged: list[Staged] = field(default_factory=list)
    failed: list[Quarantined] = field(default_factory=list)
    notices: list[Quarantined] = field(default_factory=list)
    ok: list[str] = field(default_factory=list)
    plain: list[str] = field(default_factory=list)


def evaluate_page(evaluator: Evaluator, rows: Sequence[RawRow]) -> PageResult:
    """Evaluate one page of source rows (see store.desired.RawRow)."""
    out = PageResult()
    for anchor, object_type, dn, attrs_text, deleted, _seq in rows:
        if deleted:
            out.staged.append((anchor, object_type, False, None, None, None))
            out.ok.append(anchor)
            continue
        try:
            verdict = evaluator.evaluate(anchor, object_type, dn, orjson.loads(attrs_text))
        except EvaluationError as exc:
            # The object keeps its previous desired state: an error never deprovisions.
            out.failed.append(Quarantined("sync", anchor, str(exc), object_type, dn))
            continue
        out.ok.append(anchor)
        if verdict.notice:
            out.notices.append(Quarantined(NOTICE, anchor, verdict.notice, object_type, dn))
        else:
            out.plain.append(anchor)
        attrs = (
            orjson.dumps(verdict.attrs, option=orjson.OPT_SORT_KEYS).decode()
            if verdict.attrs is not None
            else None
        )
        out.staged.append(
            (anchor, object_type, verdict.in_scope, verdict.target_anchor, attrs, verdict.manager)
        )
    return out


def workers_for(objects: int, setting: int | None = None) -> int:
    """How many worker processes a sync of `objects` uses: 0 (evaluate in the thread) below
    PARALLEL_MIN or on one CPU; else `setting` ([sync] evaluate_processes) or one per CPU."""
    n = setting if setting is not None else (os.cpu_count() or 1)
    if n <= 1 or objects < PARALLEL_MIN:
        return 0
    return n


# --- worker processes -------------------------------------------------------------------------

_EVALUATOR: Evaluator | None = None


def _init(
    effective: dict[str, Any],
    origin: str,
    rules_hash: str,
    tenant: TenantDomains | None,
    pilot: dict[str, PilotScope],
) -> None:
    global _EVALUATOR
    ev = Evaluator(rules_from_effective(effective, origin=origin, rules_hash=rules_hash))
    ev.tenant = tenant
    ev.pilot = pilot
    _EVALUATOR = ev


def _run(rows: Sequence[RawRow]) -> PageResult:
    assert _EVALUATOR is not None, "worker not initialised"
    return evaluate_page(_EVALUATOR, rows)


def evaluate_pages(
    evaluator: Evaluator, pages: Iterable[Sequence[RawRow]], workers: int
) -> Iterator[tuple[int, PageResult]]:
    """(rows, result) per page, in page order: in this thread when `workers` is 0, else in that
    many worker processes (at most two pages each in flight, so memory stays flat)."""
    if workers <= 0:
        for page in pages:
            yield len(page), evaluate_page(evaluator, page)
        return
    it = iter(pages)
    rules = evaluator.rules
    try:
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init,
            initargs=(dict(rules.effective), rules.origin, rules.hash, evaluator.tenant, evaluator.pilot),
        )
    except (OSError, ValueError) as exc:
        log.warning("sync.workers_unavailable", error=str(exc), fallback="evaluating in the sync thread")
        yield from evaluate_pages(evaluator, it, 0)
        return
    # Pages handed out and not yet yielded, in order; a page whose submit failed has no future.
    window: collections.deque[tuple[Sequence[RawRow], Future[PageResult] | None]] = collections.deque()
    done = 0
    try:
        with pool:
            for page in it:
                window.append((page, None))
                window[-1] = (page, pool.submit(_run, page))
                while len(window) >= 2 * workers or _ready(window):
                    yield _next(window)
                    done += 1
            while window:
                yield _next(window)
                done += 1
    except BrokenProcessPool as exc:
        # A worker died (killed, out of memory): what was not yielded yet is evaluated here.
        log.warning(
            "sync.workers_failed", error=str(exc) or "a worker process died", fallback="the sync thread"
        )
        for page0, _fut in window:
            yield len(page0), evaluate_page(evaluator, page0)
        yield from evaluate_pages(evaluator, it, 0)
        return
    log.info("sync.evaluated_in_workers", workers=workers, pages=done)


def _ready(window: collections.deque[tuple[Sequence[RawRow], Future[PageResult] | None]]) -> bool:
    return bool(window) and (fut := window[0][1]) is not None and fut.done()


def _next(
    window: collections.deque[tuple[Sequence[RawRow], Future[PageResult] | None]],
) -> tuple[int, PageResult]:
    """The oldest page's result; the page leaves the window only once it has one (a failing
    worker leaves it there for the fallback)."""
    page, fut = window[0]
    assert fut is not None
    result = fut.result()
    window.popleft()
    return len(page), result
