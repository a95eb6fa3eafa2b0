"""Rule evaluation in worker processes (idsync.sync.pages): the same verdicts as in the thread."""

from __future__ import annotations

import orjson
import pytest

from idsync.store.db import Store
from idsync.sync import pages
from idsync.sync.evaluate import Evaluator, PilotScope
from idsync.sync.rules import rules_from_mapping
from idsync.sync.tenant import TenantDomains
from tests.sync.conftest import ad_group, ad_user, guid, make_world

RULES = {"user": {"flows": {"employeeId": "string(int(source.employeeid))"}}}
TENANT = TenantDomains(frozenset({"example.com"}), "contoso.onmicrosoft.com")


def _raw(i: int) -> tuple[str, str, str, str, bool, int]:
    """A page row: users of every kind of verdict, by i % 5."""
    kind = i % 5
    if kind == 0:
        obj = ad_user(i, employeeid=str(i))  # in scope
    elif kind == 1:
        obj = ad_user(i, employeeid="not a number")  # quarantined
    elif kind == 2:
        obj = ad_user(i, employeeid=str(i), userprincipalname=f"u{i}@corp.local")  # UPN fallback notice
    elif kind == 3:
        obj = ad_group(i, [guid(1)], grouptype="2")  # a distribution group: out of scope
    else:
        obj = ad_user(i)
        return (obj.anchor, obj.object_type, obj.dn, "{}", True, i)  # deleted
    attrs = {k: list(v) for k, v in obj.attrs.items()}
    return (obj.anchor, obj.object_type, obj.dn, orjson.dumps(attrs).decode(), False, i)


def _evaluator() -> Evaluator:
    ev = Evaluator(rules_from_mapping(RULES, origin="test rules", source_kind="ad"))
    ev.tenant = TENANT
    ev.pilot = {"group": PilotScope(frozenset({guid(1)}))}
    return ev


def _flatten(results: list[tuple[int, pages.PageResult]]) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {k: [] for k in ("rows", "staged", "failed", "notices", "ok", "plain")}
    for rows, r in results:
        out["rows"].append(rows)
        out["staged"] += r.staged
        out["failed"] += r.failed
        out["notices"] += r.notices
        out["ok"] += r.ok
        out["plain"] += r.plain
    return out


def test_worker_processes_give_the_verdicts_the_thread_gives() -> None:
    page_list = [[_raw(i) for i in range(p * 40, p * 40 + 40)] for p in range(9)]
    serial = _flatten(list(pages.evaluate_pages(_evaluator(), page_list, 0)))
    parallel = _flatten(list(pages.evaluate_pages(_evaluator(), iter(page_list), 2)))
    assert parallel == serial
    # Every kind of verdict is among them, in page order.
    assert serial["rows"] == [40] * 9
    assert len(serial["failed"]) == 72 and "employeeId" in serial["failed"][0].reason
    assert len(serial["notices"]) == 72 and "contoso.onmicrosoft.com" in serial["notices"][0].reason
    assert sum(1 for s in serial["staged"] if s[2]) == 144  # in scope: kinds 0 and 2
    assert sum(1 for s in serial["staged"] if not s[2]) == 144  # out of scope or deleted


def test_without_worker_processes_the_thread_evaluates(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("no processes here")

    monkeypatch.setattr(pages, "ProcessPoolExecutor", refuse)
    page_list = [[_raw(i) for i in range(10)]]
    got = _flatten(list(pages.evaluate_pages(_evaluator(), page_list, 2)))
    assert got == _flatten(list(pages.evaluate_pages(_evaluator(), page_list, 0)))


def test_workers_only_for_big_syncs() -> None:
    assert pages.workers_for(pages.PARALLEL_MIN - 1, 4) == 0
    assert pages.workers_for(pages.PARALLEL_MIN, 4) == 4
    assert pages.workers_for(10**6, 1) == 0
    assert pages.workers_for(10**6, 0) == 0


def test_a_sync_with_worker_processes_writes_what_a_sync_without_writes(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "PARALLEL_MIN", 1)
    results = {}
    for processes in (0, 2):
        with store.transaction() as conn:
            for t in ("pending_export", "desired_object", "desired_member", "quarantine", "meta"):
                conn.execute(f"DELETE FROM {t}")
            conn.execute("DELETE FROM watermark")
        w = make_world(store, RULES, evaluate_processes=processes)
        w.source(*(ad_user(i, employeeid=str(i) if i % 7 else "x") for i in range(1, 60)))
        w.source(ad_group(1, [guid(i) for i in range(1, 30)]))
        res = w.sync()
        with store.connection() as conn:
            desired = conn.execute("SELECT anchor, attrs FROM desired_object ORDER BY anchor").fetchall()
            ops = conn.execute(
                "SELECT object_type, anchor, kind, member_anchor, payload FROM pending_export"
                " ORDER BY 1, 2, 3, 4"
            ).fetchall()
            quarantined = conn.execute("SELECT key, reason FROM quarantine ORDER BY key").fetchall()
        results[processes] = (res.evaluated, res.quarantined, desired, ops, quarantined)
    assert results[2] == results[0]
    assert results[0][1] == 8 and len(results[0][2]) == 52
