"""The sync engine on real PostgreSQL: desired state, diff, confirmation, deprovisioning, quarantine."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from idsync.store import pending, quarantine
from idsync.store.db import Store
from idsync.store.target_space import TargetRow
from tests.sync.conftest import World, ad_user, guid, make_world, node_config


def test_create_export_confirm_leaves_an_empty_queue(world: World) -> None:
    world.source(ad_user(1), ad_user(2, title="Chef"))
    first = world.sync()
    assert first.full and first.reason == "first sync"
    creates = world.ops("create")
    assert {o.anchor for o in creates} == {guid(1), guid(2)}
    payload = next(o.payload for o in creates if o.anchor == guid(2))
    assert payload["jobTitle"] == "Chef" and payload["accountEnabled"] is True
    assert "city" not in payload  # a create carries no nulls

    assert world.export_all() == 2
    # Exported is not done: the operations wait for the target import to confirm them.
    assert {o.kind for o in world.ops()} == {"create"}
    assert all(o.exported_at is not None for o in world.ops())
    confirm = world.sync()
    assert not confirm.full and confirm.evaluated == 0
    assert confirm.ops_confirmed == 2
    assert world.ops() == []
    target = world.target_of(guid(2))
    assert target is not None and target.attrs["jobTitle"] == "Chef"


def test_an_unchanged_source_is_not_evaluated_again(world: World) -> None:
    world.source(*(ad_user(i) for i in range(5)))
    assert world.sync().evaluated == 5
    world.source(*(ad_user(i) for i in range(5)))  # the same data imported again
    again = world.sync()
    assert again.evaluated == 0 and again.ops_written == 0


def test_an_update_carries_only_the_changed_attributes(world: World) -> None:
    world.source(ad_user(1), ad_user(2))
    world.sync()
    world.export_all()
    world.sync()
    world.source(ad_user(1, department="Finance", title="Analyst"))
    result = world.sync()
    assert result.evaluated == 1
    [update] = world.ops()
    assert update.kind == "update" and update.anchor == guid(1)
    assert update.payload == {"department": "Finance", "jobTitle": "Analyst"}
    assert update.target_id == f"t-{guid(1)}"
    world.export_all()
    world.sync()
    assert world.ops() == []

    # Clearing a source attribute clears the target attribute (null), nothing else.
    world.source(ad_user(1, department="", title="Analyst"))
    world.sync()
    assert [o.payload for o in world.ops()] == [{"department": None}]


def test_a_newer_computation_replaces_the_older_one(world: World) -> None:
    world.source(ad_user(1))
    world.sync()
    world.export_all()
    world.sync()
    world.source(ad_user(1, title="A"))
    world.sync()
    world.source(ad_user(1, title="B"))
    world.sync()
    [op] = world.ops()
    assert op.payload == {"jobTitle": "B"}


def test_a_change_made_in_the_cloud_is_reverted(world: World) -> None:
    world.source(ad_user(1, title="Chef"))
    world.sync()
    world.export_all()
    world.sync()
    target = world.target_of(guid(1))
    assert target is not None
    world.target("user", TargetRow(target.id, {"jobTitle": "Boss"}))
    world.sync()
    assert [(o.kind, o.payload) for o in world.ops()] == [("update", {"jobTitle": "Chef"})]


@pytest.mark.parametrize("how", ["moved out of scope", "deleted in the source"])
@pytest.mark.parametrize("mode", ["delete", "disable", "leave"])
def test_deprovisioning_follows_the_rule(store: Store, mode: str, how: str) -> None:
    w = make_world(
        store, {"user": {"deprovision": mode, "scope": {"include": ["OU=Staff,DC=example,DC=com"]}}}
    )
    w.source(ad_user(1), ad_user(2))
    w.sync()
    w.export_all()
    w.sync()
    if how == "moved out of scope":
        w.source(ad_user(1, ou="OU=Leavers"))
    else:
        w.delete_source(guid(1))
    w.sync()
    ops = w.ops()
    if mode == "delete":
        assert [(o.kind, o.anchor) for o in ops] == [("delete", guid(1))]
    elif mode == "disable":
        assert [(o.kind, o.anchor, dict(o.payload)) for o in ops] == [
            ("update", guid(1), {"accountEnabled": False})
        ]
    else:
        assert ops == []
    w.export_all()
    w.sync()
    assert w.ops() == []
    if mode == "delete":
        assert w.target_of(guid(1)) is None  # deleted and unlinked
    elif mode == "disable":
        t = w.target_of(guid(1))
        assert t is not None and t.attrs["accountEnabled"] is False
        # Back in scope: enabled again by an ordinary update.
        w.source(ad_user(1))
        w.sync()
        assert [(o.kind, dict(o.payload)) for o in w.ops()] == [("update", {"accountEnabled": True})]
    else:
        assert w.target_of(guid(1)) is None  # no longer linked: idsync will never touch it again
    assert w.target_of(guid(2)) is not None  # the other user is untouched


def test_idsync_never_deletes_what_it_does_not_own(world: World) -> None:
    # Cloud-only objects: one without any anchor, one carrying an anchor no source object has
    # (e.g. synced by someone else). Neither is ever linked, so neither is ever deleted.
    world.target(
        "user",
        TargetRow("cloud-1", {"userPrincipalName": "ceo@example.com", "displayName": "CEO"}),
        TargetRow("foreign-1", {"userPrincipalName": "x@example.com"}, "Zm9yZWlnbg==", True),
    )
    world.target("group", TargetRow("cloud-g", {"displayName": "All"}))
    world.source(ad_user(1))
    world.sync()
    world.export_all()
    world.sync()
    world.delete_source(guid(1))
    world.sync(full=True)
    deletes = world.ops("delete")
    assert [o.target_id for o in deletes] == [f"t-{guid(1)}"]
    # A source object deleted before it was ever exported produces no delete either.
    world.source(ad_user(2))
    world.sync()
    world.delete_source(guid(2))
    world.sync(full=True)
    assert [o.target_id for o in world.ops("delete")] == [f"t-{guid(1)}"]
    assert world.ops("create") == []


def test_hard_match_adopts_an_object_that_already_carries_the_anchor(world: World) -> None:
    world.source(ad_user(1, title="Chef"))
    world.sync()
    [create] = world.ops("create")
    immutable_id = create.payload["onPremisesImmutableId"]
    # The object exists already (e.g. created by a previous installation): it is joined, not duplicated.
    world.target("user", TargetRow("old-1", {**create.payload, "jobTitle": "Cook"}, immutable_id, True))
    world.sync()
    assert [(o.kind, o.target_id, dict(o.payload)) for o in world.ops()] == [
        ("update", "old-1", {"jobTitle": "Chef"})
    ]


@pytest.mark.parametrize("enabled", [False, True])
def test_soft_match_adopts_a_cloud_object_only_when_enabled(store: Store, enabled: bool) -> None:
    w = make_world(store, {}, soft_match=enabled)
    w.target("user", TargetRow("cloud-1", {"userPrincipalName": "U1@example.com", "displayName": "U"}))
    w.source(ad_user(1))
    w.sync()
    if not enabled:
        assert [o.kind for o in w.ops()] == ["create"]
        return
    [adopt] = w.ops()
    assert adopt.kind == "update" and adopt.target_id == "cloud-1"
    # The update stamps the anchor, which makes the object idsync's from now on.
    assert "onPremisesImmutableId" in adopt.payload and "displayName" in adopt.payload
    w.export_all()
    w.sync()
    assert w.ops() == []
    t = w.target_of(guid(1))
    assert t is not None and t.id == "cloud-1" and t.anchor == adopt.payload["onPremisesImmutableId"]


def test_a_bad_object_is_quarantined_while_the_others_sync(store: Store) -> None:
    w = make_world(store, {"user": {"flows": {"employeeId": "string(int(source.employeeid))"}}})
    w.source(ad_user(1, employeeid="7"), ad_user(2, employeeid="seven"), ad_user(3))
    result = w.sync()
    assert result.quarantined == 1
    assert {o.anchor for o in w.ops("create")} == {guid(1), guid(3)}
    with store.connection() as conn:
        [q] = quarantine.listing(conn, "sync")
    assert (
        q.key == guid(2)
        and "user.flows.employeeId" in q.reason
        and "string(int(source.employeeid))" in q.reason
    )
    w.export_all()
    w.sync()

    # An object that breaks later keeps its last good desired state: an error never deprovisions.
    w.source(ad_user(1, employeeid="x"))
    assert w.sync().quarantined == 1
    assert w.ops() == []
    # Fixed in the source: released from quarantine and synced.
    w.source(ad_user(2, employeeid="8"))
    w.sync()
    assert [(o.kind, o.anchor) for o in w.ops()] == [("create", guid(2))]
    with store.connection() as conn:
        assert [q.key for q in quarantine.listing(conn, "sync")] == [guid(1)]


def test_a_rule_change_runs_a_full_sync_that_updates_only_affected_objects(store: Store) -> None:
    w = make_world(store, {})
    w.source(*(ad_user(i) for i in range(20)), *(ad_user(i, title="dev") for i in range(20, 25)))
    w.sync()
    w.export_all()
    w.sync()
    assert w.ops() == []

    changed = make_world(store, {"user": {"flows": {"jobTitle": "upper(source.title)"}}})
    result = changed.sync()
    assert result.full and result.reason == "rules changed"
    assert result.evaluated == 25
    assert result.desired_updated == 5
    ops = changed.ops()
    assert {o.anchor for o in ops} == {guid(i) for i in range(20, 25)}
    assert {(o.kind, o.payload["jobTitle"]) for o in ops} == {("update", "DEV")}
    # The same rules again: back to delta syncs.
    assert not changed.sync().full


def test_export_errors_count_attempts_then_quarantine_without_blocking_others(world: World) -> None:
    world.source(ad_user(1), ad_user(2))
    world.sync()
    store = world.store
    bad = next(o for o in world.ops() if o.anchor == guid(1))
    for attempt in range(1, 4):
        with store.transaction() as conn:
            claimed = pending.claim(conn, epoch=1, node="a", limit=10, held=False)
            assert bad.id in {o.id for o in claimed}
            rec = pending.record_result(
                conn,
                bad.id,
                "error",
                epoch=1,
                node="a",
                error="400 Request_BadRequest: invalid value",
                max_attempts=3,
            )
            for other in claimed:  # the rest of the batch did not run (e.g. the batch was cut short)
                if other.id != bad.id:
                    pending.record_result(
                        conn, other.id, "retry", epoch=1, node="a", retry_after=timedelta(0)
                    )
        assert rec.attempts == attempt
        with store.connection() as conn:
            conn.execute(
                "UPDATE pending_export SET not_before = NULL WHERE id = %s", (bad.id,)
            )  # skip back-off
    assert rec.quarantined
    with store.connection() as conn:
        errors = pending.listing(conn, errors_only=True)
        q = quarantine.listing(conn, "export")
    assert [(e.anchor, e.attempts, e.quarantined) for e in errors] == [(guid(1), 3, True)]
    assert q[0].key == guid(1) and "create failed 3 times: 400 Request_BadRequest" in q[0].reason
    # The quarantined operation is never claimed; the other one is.
    assert world.export_all() == 1
    world.sync()
    assert [(o.anchor, o.quarantined) for o in world.ops()] == [(guid(1), True)]
    # A corrected source value is a new computation: a fresh operation with zero attempts.
    world.source(ad_user(1, title="fixed"))
    world.sync()
    [op] = world.ops()
    assert op.anchor == guid(1) and not op.quarantined and op.attempts == 0


def test_a_stale_epoch_cannot_claim(world: World) -> None:
    from idsync.store.pending import StaleEpoch

    world.source(ad_user(1))
    world.sync()
    with world.store.transaction() as conn:
        assert len(pending.claim(conn, epoch=7, node="b", limit=10, held=False)) == 1
    with world.store.transaction() as conn, pytest.raises(StaleEpoch, match="epoch 6 is stale"):
        pending.claim(conn, epoch=6, node="a", limit=10, held=False)


def test_a_source_write_still_committing_is_not_skipped_by_the_watermark(world: World) -> None:
    """Sequence values become visible at commit, out of order: the sync must wait for writers."""
    import threading
    import time

    from idsync.store import source_space

    world.source(ad_user(0))
    world.sync()
    with world.store.transaction() as slow:  # takes a sequence value first, commits last
        source_space.upsert(slow, [ad_user(1)])
        world.source(ad_user(2))  # a later value, already committed
        results = []
        worker = threading.Thread(target=lambda: results.append(world.sync()))
        worker.start()
        deadline = time.monotonic() + 10
        with world.store.connection() as probe:
            while time.monotonic() < deadline:  # until the sync waits on the writer's lock
                row = probe.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'source_object'::regclass"
                ).fetchone()
                if row and row[0]:
                    break
            else:
                pytest.fail("the sync did not wait for the uncommitted source write")
    worker.join(timeout=30)
    assert results and results[0].evaluated == 2
    assert {o.anchor for o in world.ops("create")} == {guid(0), guid(1), guid(2)}


def test_engine_from_config_uses_the_rules_file_and_thresholds(store: Store, tmp_path: Path) -> None:
    from idsync.config import load_config
    from idsync.sync.engine import engine_from_config
    from idsync.sync.errors import RulesError

    rules = tmp_path / "rules.toml"
    rules.write_text('[user]\ndeprovision = "disable"\n[user.flows]\njobTitle = "upper(source.title)"\n')
    cfg = node_config(
        tmp_path / "idsync.toml",
        "postgresql://x@127.0.0.1:1/x",
        sync=f'rules_file = "{rules}"\ndeletion_threshold_count = 50\n'
        "deletion_threshold_percent = 5\nsoft_match = true",
    )
    engine = engine_from_config(store, load_config(cfg))
    assert engine.rules.anchor_attribute("group") == "extension_idsync_idsyncSourceAnchor"
    assert engine.rules.user.deprovision == "disable"
    assert engine.thresholds.count == 50 and engine.thresholds.percent == 5
    assert engine.soft_match
    # The group anchor follows the extension the target configuration names.
    text = cfg.read_text()
    cfg.write_text(
        text.replace(
            "anonymous = true",
            'anonymous = true\nanchor_extension_attribute = "extension_0123456789abcdef0123456789abcdef_src"',
        )
    )
    assert (
        engine_from_config(store, load_config(cfg)).rules.anchor_attribute("group")
        == "extension_0123456789abcdef0123456789abcdef_src"
    )
    rules.write_text('[user.flows]\njobTitle = "upper(source.title"\n')
    with pytest.raises(RulesError, match=r"user\.flows\.jobTitle: CEL compile error"):
        engine_from_config(store, load_config(cfg))


def test_absent_null_and_empty_list_are_the_same_value(world: World) -> None:
    world.source(ad_user(1))  # no telephoneNumber: businessPhones = []
    world.sync()
    world.export_all()
    world.sync()
    target = world.target_of(guid(1))
    assert target is not None
    # The import reports businessPhones as null and leaves city out: nothing to update.
    world.target("user", TargetRow(target.id, {"businessPhones": None, "city": None}))
    world.sync()
    assert world.ops() == []
    world.source(ad_user(1, telephonenumber="+1 555"))
    world.sync()
    assert [dict(o.payload) for o in world.ops()] == [{"businessPhones": ["+1 555"]}]


def test_no_diff_against_a_target_space_that_is_not_fully_imported(store: Store) -> None:
    from idsync.store import target_space
    from idsync.store.target_space import DeltaPosition

    w = make_world(store, {}, check_target_rounds=True)
    w.source(ad_user(1), ad_user(2))
    first = w.sync()
    assert first.deferred == "target import incomplete (user: never imported, group: never imported)"
    assert "diff deferred" in first.sentence()
    assert w.ops() == []  # not 2 creates for objects that may well exist
    # A full round under way is no better; a complete one lets the owed diff run for everything.
    with store.transaction() as conn:
        for t in ("user", "group"):
            pos = DeltaPosition(link="next", complete=False, full=True, select="", server="emu")
            target_space.save_position(conn, t, pos)  # type: ignore[arg-type]
    assert (
        w.sync().deferred
        == "target import incomplete (user: full round under way, group: full round under way)"
    )
    with store.transaction() as conn:
        for t in ("user", "group"):
            pos = DeltaPosition(link="delta", complete=True, full=True, select="", server="emu")
            target_space.save_position(conn, t, pos)  # type: ignore[arg-type]
    done = w.sync()
    assert done.deferred is None and done.evaluated == 0
    assert {o.anchor for o in w.ops("create")} == {guid(1), guid(2)}


def test_an_export_no_import_confirms_is_armed_again(store: Store) -> None:
    w = make_world(store, {}, confirm_timeout=timedelta(0))
    w.source(ad_user(1))
    w.sync()
    with store.transaction() as conn:  # the call "succeeded", but nothing reached the target
        [op] = pending.claim(conn, epoch=1, node="a", limit=10, held=False)
        pending.record_result(conn, op.id, "ok", epoch=1, node="a")
    assert w.ops()[0].exported_at is not None
    w.sync()  # no confirming import within the timeout: export it again
    [again] = w.ops()
    assert again.kind == "create" and again.exported_at is None
    assert w.export_all(epoch=1) == 1


def test_a_result_for_an_operation_recomputed_in_flight_does_not_settle_the_new_one(world: World) -> None:
    world.source(ad_user(1))
    world.sync()
    with world.store.transaction() as conn:
        [op] = pending.claim(conn, epoch=1, node="a", limit=10, held=False)
    world.source(ad_user(1, title="Chef"))  # changes while the create is on its way
    world.sync()
    with world.store.transaction() as conn:
        rec = pending.record_result(conn, op.id, "ok", epoch=1, node="a")
    assert rec.superseded
    [new] = world.ops()
    assert new.exported_at is None and new.payload["jobTitle"] == "Chef"
    assert world.export_all() == 1


def test_an_object_created_by_another_node_and_gone_before_the_import_showed_it_is_deprovisioned(
    world: World,
) -> None:
    """Node a created the user, then failed over; the user left scope before b's target import
    showed it. b never exported it (no journal, no link) yet must still deprovision it."""
    world.source(ad_user(1))
    world.sync()
    (create,) = world.ops("create")
    world.delete_source(guid(1))
    world.sync()
    assert world.ops() == []  # nothing to do yet: nothing in the target
    attrs = dict(create.payload)  # what the other node's create put into Entra ID
    world.target("user", TargetRow("t-elsewhere", attrs, attrs["onPremisesImmutableId"], True))
    world.sync()
    assert world.op_keys("delete") == {("delete", guid(1), "")}


def test_desired_changes_are_counted_and_remembered_in_the_database(world: World) -> None:
    """apply_staged keeps what changed in SQL (a full sync of 1M objects must not hold every anchor
    in Python): the counts, desired_gone and the re-diff of what came back must still be right."""

    def gone() -> set[str]:
        with world.store.connection() as conn:
            return {r[0] for r in conn.execute("SELECT anchor FROM desired_gone")}

    world.source(ad_user(1), ad_user(2), ad_user(3))
    first = world.sync()
    assert (first.desired_added, first.desired_updated, first.desired_removed) == (3, 0, 0)
    world.export_all()
    world.sync()

    world.source(ad_user(2, title="Chef"))
    changed = world.sync()
    assert (changed.desired_added, changed.desired_updated, changed.desired_removed) == (0, 1, 0)
    assert {o.anchor for o in world.ops("update")} == {guid(2)}

    world.delete_source(guid(3))
    left = world.sync()
    assert (left.desired_added, left.desired_updated, left.desired_removed) == (0, 0, 1)
    assert gone() == {guid(3)}
    assert {o.anchor for o in world.ops("delete")} == {guid(3)}

    world.source(ad_user(3))  # back before the delete ran: no longer gone, the delete is dropped
    back = world.sync()
    assert (back.desired_added, back.desired_updated, back.desired_removed) == (1, 0, 0)
    assert gone() == set()
    assert world.ops("delete") == []


def test_a_changed_desired_object_is_updated_in_place(world: World) -> None:
    """Migration 0011: no index on a column every change writes, room on each page — so the
    delta sync's desired updates are HOT (no index entry written; at 1,000,000 objects those
    index writes were most of a delta sync's desired step)."""

    def hot_updates() -> int:
        return world.table_stat("desired_object", "n_tup_hot_upd")

    world.source(*(ad_user(i) for i in range(1, 21)))
    world.sync()
    before = hot_updates()
    world.source(*(ad_user(i, department="Research") for i in range(1, 6)))
    result = world.sync()
    assert result.desired_updated == 5
    assert hot_updates() > before  # none at all while desired_object_changed existed
