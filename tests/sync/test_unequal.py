"""No endless re-exports: an operation whose export keeps not taking (Graph normalises or ignores
the value) is exported a bounded number of times, then quarantined with the reason."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from idsync.store import pending, quarantine, target_space
from idsync.store.db import Store
from idsync.store.target_space import TargetPage, TargetRow
from tests.sync.conftest import World, ad_user, guid, make_world

HIRED = "2024-03-01T09:00:00+02:00"
HIRED_UTC = "2024-03-01T07:00:00Z"  # how Graph returns a DateTimeOffset (resources/user.md)
RULES = {"user": {"flows": {"employeeHireDate": f"'{HIRED}'"}}}


def _export_normalised(w: World) -> int:
    """Export what is ready the way Graph does: every write lands, DateTimeOffsets read back in
    UTC. Returns how many operations were exported."""
    n = 0
    with w.store.transaction() as conn:
        for op in pending.claim(conn, epoch=1, node="a", limit=100, held=False):
            attrs: dict[str, Any] = dict(op.payload)
            if "employeeHireDate" in attrs:
                attrs["employeeHireDate"] = HIRED_UTC
            tid = op.target_id or f"t-{op.anchor}"
            anchor = attrs.get("onPremisesImmutableId")
            page = TargetPage("user", objects=[TargetRow(tid, attrs, anchor, anchor is not None)])
            target_space.apply_page(conn, page)
            pending.record_result(conn, op.id, "ok", epoch=1, node="a", target_id=tid)
            n += 1
    return n


def test_an_update_graph_normalises_is_quarantined_after_the_limit(store: Store) -> None:
    # Graph already holds the normalised value: the PATCH changes nothing, so no import reports
    # the object and only the confirmation timeout (0 here, 30 minutes by default) re-arms it.
    w = make_world(store, RULES, unequal_limit=3, confirm_timeout=timedelta(0))
    w.source(ad_user(1), ad_user(2))
    w.sync()
    assert _export_normalised(w) == 2  # the creates
    first = w.sync()
    assert first.unequal == 0
    updates = [o for o in w.ops() if o.kind == "update"]
    assert [(o.anchor, dict(o.payload)) for o in updates] == [
        (guid(1), {"employeeHireDate": HIRED}),
        (guid(2), {"employeeHireDate": HIRED}),
    ]
    exports = 0
    results = []
    for _ in range(6):
        exports += _export_normalised(w)
        results.append(w.sync())
    # Exported 3 times each (the update's first export and two re-exports), then set aside.
    assert exports == 2 * 3
    assert [r.unequal for r in results] == [0, 0, 2, 0, 0, 0]
    assert "2 quarantined: their exports kept not taking" in results[2].sentence()
    ops = w.ops()
    assert all(o.quarantined and o.attempts == 3 for o in ops)
    with store.connection() as conn:
        entries = {e.key: e for e in quarantine.entries(conn, "export")}
    reason = entries[guid(1)].reason
    assert reason.startswith("update exported, but no import confirmed it after 3 exports")
    assert f'Graph holds employeeHireDate = "{HIRED_UTC}" where idsync writes "{HIRED}"' in reason
    assert "Graph normalises or ignores the value" in reason
    assert entries[guid(1)].attempts == 3


def test_a_normalised_value_written_the_way_graph_keeps_it_converges(store: Store) -> None:
    w = make_world(store, {"user": {"flows": {"employeeHireDate": f"'{HIRED_UTC}'"}}}, unequal_limit=3)
    w.source(ad_user(1))
    w.sync()
    _export_normalised(w)
    result = w.sync()
    assert w.ops() == [] and result.unequal == 0


def test_a_changed_source_value_starts_a_fresh_operation(store: Store) -> None:
    w = make_world(store, RULES, unequal_limit=2, confirm_timeout=timedelta(0))
    w.source(ad_user(1))
    w.sync()
    for _ in range(4):
        _export_normalised(w)
        w.sync()
    [op] = w.ops()
    assert op.quarantined
    w.source(ad_user(1, department="Finance"))  # a new computation: another payload
    w.sync()
    ops = {o.kind: o for o in w.ops()}
    assert not ops["update"].quarantined and ops["update"].attempts == 0


def test_an_export_no_import_confirms_is_re_exported_a_bounded_number_of_times(world: World) -> None:
    # Graph keeps the value as it was and reports nothing (the object did not change): only the
    # confirmation timeout re-arms the operation; it, too, counts.
    w = make_world(world.store, {}, unequal_limit=2, confirm_timeout=timedelta(0))
    w.source(ad_user(1))
    w.sync()
    w.export_all()
    w.sync()
    assert w.ops() == []
    w.source(ad_user(1, department="Finance"))
    w.sync()
    sent = 0
    for _ in range(4):
        with w.store.transaction() as conn:
            for op in pending.claim(conn, epoch=1, node="a", limit=10, held=False):
                pending.record_result(conn, op.id, "ok", epoch=1, node="a")  # and nothing changes
                sent += 1
        w.sync()
    assert sent == 2
    [op] = w.ops()
    assert op.quarantined and "no import confirmed it after 2 exports" in (op.last_error or "")


def test_a_value_another_writer_keeps_resetting_is_quarantined_after_the_limit(world: World) -> None:
    # Another writer (a cloud admin's script, a second sync tool) resets jobTitle after every
    # export: each import shows the object changed and still differing.
    w = make_world(world.store, {}, unequal_limit=3)
    w.source(ad_user(1, title="Chef"))
    w.sync()
    w.export_all()
    w.sync()
    assert w.ops() == []
    tid = f"t-{guid(1)}"
    w.target("user", TargetRow(tid, {"jobTitle": "Cloud 0"}))
    results = []
    for n in range(1, 6):
        w.sync()
        if w.export_all():
            w.target("user", TargetRow(tid, {"jobTitle": f"Cloud {n}"}))
        results.append(w.engine.run())
    [op] = w.ops()
    assert op.quarantined and op.attempts == 3
    assert op.last_error is not None and op.last_error.startswith(
        'update exported, but the target still differs after 3 exports: Graph holds jobTitle = "Cloud 3"'
        ' where idsync writes "Chef"'
    )
    assert sum(r.unequal for r in results) == 1


def test_a_write_graph_has_not_replicated_yet_waits_instead_of_counting(world: World) -> None:
    # Graph's replication lag: the import after an export still shows the old value. Within
    # export_settle that is no evidence the write did not take: no re-export, no attempt counted
    # (with a 2-s cycle, counting it quarantined legitimate writes within seconds).
    w = make_world(world.store, {}, unequal_limit=2, export_settle=timedelta(hours=1))
    w.source(ad_user(1, title="Chef"))
    w.sync()
    w.export_all()
    w.sync()
    assert w.ops() == []
    w.source(ad_user(1, title="Head chef"))
    w.sync()
    tid = f"t-{guid(1)}"
    with w.store.transaction() as conn:
        [op] = pending.claim(conn, epoch=1, node="a", limit=10, held=False)
        pending.record_result(conn, op.id, "ok", epoch=1, node="a")  # sent; not visible yet
    for _ in range(4):  # lagging delta rounds report the object as it was; every object recomputed
        w.target("user", TargetRow(tid, {"jobTitle": "Chef"}))
        assert w.sync(full=True).unequal == 0
    [op] = w.ops()
    assert op.exported_at is not None and op.attempts == 0 and not op.quarantined
    with w.store.transaction() as conn:
        assert pending.claim(conn, epoch=1, node="a", limit=10, held=False) == []

    # Once the settle window has passed, the evidence already seen counts, with no further
    # import needed (nothing is recomputed in this sync): re-armed, one attempt.
    later = make_world(world.store, {}, unequal_limit=2, export_settle=timedelta(0))
    assert later.sync().evaluated == 0
    [op] = later.ops()
    assert op.exported_at is None and op.attempts == 1 and not op.quarantined


def test_failed_requests_do_not_count_as_exports_that_did_not_take(world: World) -> None:
    # A member add refused while Graph replicates the member counts in `attempts` (request
    # failures, quarantined at their own limit); it must not bring "not taking" closer.
    w = make_world(world.store, {}, unequal_limit=2)
    w.source(ad_user(1, title="Chef"))
    w.sync()
    w.export_all()
    w.sync()
    w.source(ad_user(1, title="Head chef"))
    w.sync()
    with w.store.transaction() as conn:
        conn.execute("UPDATE pending_export SET attempts = 4")  # four refused requests before
        [op] = pending.claim(conn, epoch=1, node="a", limit=10, held=False)
        pending.record_result(conn, op.id, "ok", epoch=1, node="a")  # then sent, not visible
    w.sync(full=True)  # the import still shows the old value: one export that did not take
    [op] = w.ops()
    assert not op.quarantined and op.exported_at is None  # re-armed, not set aside
    with w.store.transaction() as conn:
        [op] = pending.claim(conn, epoch=1, node="a", limit=10, held=False)
        pending.record_result(conn, op.id, "ok", epoch=1, node="a")
    w.sync(full=True)  # the second export that did not take reaches the limit of 2
    [op] = w.ops()
    assert op.quarantined and "after 2 exports" in (op.last_error or "")
