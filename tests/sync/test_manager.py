"""A user's manager: a reference flow resolved through anchors, deferred until both users exist,
changed by a new PUT, cleared by a DELETE when the source clears it or the manager leaves scope."""

from __future__ import annotations

from typing import Any

import pytest

from idsync.store import links, pending, target_space
from idsync.store.db import Store
from idsync.store.target_space import TargetPage, TargetRow
from idsync.sync import explain, preview
from idsync.sync.errors import RulesError
from idsync.sync.rules import rules_from_mapping
from idsync.target.delta import parse_page
from tests.sync.conftest import World, ad_user, guid, make_world


def dn(i: int, ou: str = "OU=Staff") -> str:
    return f"CN=User {i},{ou},DC=example,DC=com"


def _settle(world: World, rounds: int = 3) -> None:
    for _ in range(rounds):
        world.sync()
        world.export_all()
    world.sync()


def _target_manager(world: World, anchor: str) -> str | None:
    """The source anchor of the target manager of `anchor`'s target user (via the links)."""
    with world.store.connection() as conn:
        uid = links.target_id(conn, anchor)
        assert uid is not None
        mid = target_space.manager(conn, uid)
        if mid is None:
            return None
        row = conn.execute("SELECT anchor FROM sync_link WHERE target_id = %s", (mid,)).fetchone()
        return None if row is None else str(row[0])


def _states(world: World) -> dict[tuple[str, str, str], int]:
    with world.store.connection() as conn:
        return pending.status_counts(conn)


def test_a_manager_created_in_the_same_cycle_waits_then_lands(world: World) -> None:
    world.source(ad_user(1, manager=dn(2)), ad_user(2))
    world.sync()
    (op,) = world.ops("manager_set")
    assert (op.anchor, op.member_anchor) == (guid(1), guid(2))
    assert op.priority == 4  # with member adds: the same export order and fair-sharing lane
    # Neither user exists in the target: the operation waits, it is not dropped or failed.
    assert op.waiting_for == guid(1)
    assert _states(world)[("manager_set", "user", "waiting")] == 1
    world.export_all()  # the creates only
    assert [o.exported_at for o in world.ops("manager_set")] == [None]
    world.sync()  # the import shows both users: the reference resolves to target ids
    (op,) = world.ops("manager_set")
    assert op.waiting_for is None
    assert (op.target_id, op.member_target_id) == (f"t-{guid(1)}", f"t-{guid(2)}")
    world.export_all()
    world.sync()  # the import shows the manager: confirmed, the queue is empty
    assert world.ops() == []
    assert _target_manager(world, guid(1)) == guid(2)


def test_a_changed_manager_is_put_again_and_a_cleared_one_removed(world: World) -> None:
    world.source(ad_user(1, manager=dn(2)), ad_user(2), ad_user(3))
    _settle(world)
    assert _target_manager(world, guid(1)) == guid(2)

    world.source(ad_user(1, manager=dn(3)))
    world.sync()
    # One PUT replaces the manager: no remove of the old one.
    assert world.op_keys() == {("manager_set", guid(1), guid(3))}
    world.export_all()
    world.sync()
    assert world.ops() == []
    assert _target_manager(world, guid(1)) == guid(3)

    world.source(ad_user(1))  # AD cleared the manager
    world.sync()
    assert world.op_keys() == {("manager_remove", guid(1), "")}
    (op,) = world.ops("manager_remove")
    assert op.target_id == f"t-{guid(1)}" and op.waiting_for is None
    assert op.priority == 6  # with member removes
    world.export_all()
    world.sync()
    assert world.ops() == []
    assert _target_manager(world, guid(1)) is None


def test_a_manager_out_of_scope_is_no_manager(store: Store) -> None:
    w = make_world(store, {"user": {"scope": {"exclude": ["OU=Gone,DC=example,DC=com"]}}})
    gone = dn(5, "OU=Gone")
    w.source(ad_user(1, manager=dn(2)), ad_user(2), ad_user(4, manager=gone), ad_user(5, "OU=Gone"))
    _settle(w)
    assert _target_manager(w, guid(1)) == guid(2)
    # User 4's manager was never in scope: no manager, nothing queued for it.
    assert _target_manager(w, guid(4)) is None

    # The manager moves out of scope (user 1's row still names the old DN, as AD would not
    # report user 1): it is deprovisioned, and user 1's manager is cleared.
    w.source(ad_user(2, "OU=Gone"))
    w.sync()
    assert w.op_keys() == {("delete", guid(2), ""), ("manager_remove", guid(1), "")}


def test_a_renamed_manager_stays_the_manager(world: World) -> None:
    world.source(ad_user(1, manager=dn(2)), ad_user(2))
    _settle(world)
    # AD rewrites user 1's manager value on read, but DirSync reports only the renamed manager:
    # user 1's stored value still names the old DN. The resolved reference follows the anchor.
    world.source(ad_user(2, "OU=Moved"))
    world.sync()
    assert world.ops() == []
    world.sync(full=True)
    assert world.ops() == []
    assert _target_manager(world, guid(1)) == guid(2)


def test_a_dn_naming_nothing_clears_a_manager_set_in_the_cloud(world: World) -> None:
    world.source(ad_user(1), ad_user(2))
    _settle(world)
    with world.store.connection() as conn:
        uid, mid = links.target_id(conn, guid(1)), links.target_id(conn, guid(2))
    assert uid and mid
    world.target_page(TargetPage("user", managers=[(uid, mid)]))  # someone set it in the cloud
    world.sync()
    assert world.op_keys() == {("manager_remove", guid(1), "")}
    world.source(ad_user(1, manager=dn(99)))  # a DN no object in the directory has
    world.sync()
    assert world.op_keys() == {("manager_remove", guid(1), "")}
    # The manager appears later: the reference resolves, and the remove becomes a set.
    world.source(ad_user(99))
    world.sync()
    assert world.op_keys() == {("create", guid(99), ""), ("manager_set", guid(1), guid(99))}


def test_without_the_manager_flow_managers_are_left_alone(store: Store) -> None:
    w = make_world(store, {"user": {"manager": False}})
    w.source(ad_user(1, manager=dn(2)), ad_user(2))
    _settle(w)
    assert w.ops() == []
    with store.connection() as conn:
        uid, mid = links.target_id(conn, guid(1)), links.target_id(conn, guid(2))
    w.target_page(TargetPage("user", objects=[TargetRow(str(uid), {"jobTitle": "x"})], managers=[(uid, mid)]))
    w.sync(full=True)
    assert w.ops("manager_set", "manager_remove") == []


def test_the_manager_rule_must_give_a_dn(store: Store) -> None:
    w = make_world(store, {"user": {"manager": "size(values.manager)"}})
    w.source(ad_user(1, manager=dn(2)), ad_user(2))
    result = w.sync()
    assert result.quarantined == 2  # a number, for both users: neither is desired
    with store.connection() as conn:
        row = conn.execute("SELECT reason FROM quarantine WHERE key = %s", (guid(1),)).fetchone()
    assert row is not None and row[0] == "user.manager: must give a DN (a string) or null, gave 1"


def test_groups_have_no_manager() -> None:
    with pytest.raises(RulesError) as err:
        rules_from_mapping({"group": {"manager": "source.managedby"}}, origin="t", source_kind="ad")
    assert "group.manager: only users have a manager" in str(err.value)


@pytest.mark.parametrize(
    "removal",
    [[{"@odata.type": "#microsoft.graph.user", "id": "m1", "@removed": {"reason": "deleted"}}], []],
    ids=["removed-entry", "empty-list"],
)
def test_the_import_reads_manager_delta_in_both_shapes(world: World, removal: list[dict[str, Any]]) -> None:
    anchor = "onPremisesImmutableId"
    page = parse_page("user", [{"id": "u1", "manager@delta": [{"id": "m1"}]}, {"id": "m1"}], anchor)
    assert list(page.managers) == [("u1", "m1")]  # m1 carries no annotation: nothing said about it
    world.target_page(page)
    with world.store.connection() as conn:
        seq = conn.execute("SELECT changed_seq FROM target_object WHERE id = 'u1'").fetchone()
        assert target_space.manager(conn, "u1") == "m1"
    world.target_page(parse_page("user", [{"id": "u1", "manager@delta": removal}], anchor))
    with world.store.connection() as conn:
        assert target_space.manager(conn, "u1") is None
        # The user's row moved although none of its attributes did: the sync re-diffs it.
        after = conn.execute("SELECT changed_seq FROM target_object WHERE id = 'u1'").fetchone()
        assert seq is not None and after is not None and after[0] > seq[0]


def test_a_deleted_manager_leaves_its_reports_without_one(world: World) -> None:
    users = [TargetRow("u1", {}), TargetRow("m1", {})]
    world.target_page(TargetPage("user", objects=users, managers=[("u1", "m1")]))
    world.target_page(TargetPage("user", removed=["m1"]))
    with world.store.connection() as conn:
        assert target_space.manager(conn, "u1") is None


def test_pending_shows_manager_operations_and_what_they_wait_for(world: World) -> None:
    world.source(ad_user(1, manager=dn(2)), ad_user(2))
    world.sync()
    [item] = preview.collect(world.store, op="manager")
    assert (item.kind, item.name, item.member_name) == ("manager_set", "u1@example.com", "u2@example.com")
    assert item.status == "waiting for u1@example.com to exist in the target"
    text = preview.render([item], "table")
    assert "manager_set   user  u1@example.com → manager u2@example.com  (waiting for u1@" in text
    summary = preview.summary(preview.status_counts(world.store))
    assert "1  manager_set user" in summary and "waiting 1" in summary


def test_preview_of_a_user_shows_its_manager_operation(world: World) -> None:
    world.source(ad_user(1, manager=dn(2)), ad_user(2), ad_user(3))
    _settle(world)
    e = explain.explain(world.store, world.rules, guid(1))
    assert [o.kind for o in e.operations] == []
    assert ("user.manager", dn(2)) in [(s.rule, s.result) for s in e.steps]
    world.source(ad_user(1, manager=dn(3)))
    world.sync()  # queued: the preview shows it beside what the next sync would do
    e = explain.explain(world.store, world.rules, guid(1))
    assert [(o.kind, o.member) for o in e.operations] == [("manager_set", "u3@example.com")]
    assert [(q.kind, q.member_name) for q in e.queued] == [("manager_set", "u3@example.com")]
    world.export_all()
    world.sync()
    world.source(ad_user(1))
    world.sync()
    e = explain.explain(world.store, world.rules, guid(1))
    assert [(o.kind, o.member) for o in e.operations] == [("manager_remove", "u3@example.com")]
    assert "manager_remove u3@example.com" in explain.render(e)
