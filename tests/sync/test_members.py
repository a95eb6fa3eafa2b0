"""Group membership: references through anchors, deferred members, nesting, removal."""

from __future__ import annotations

import pytest

from idsync.store import pending
from idsync.store.db import Store
from idsync.store.target_space import TargetPage, TargetRow
from tests.sync.conftest import World, ad_group, ad_user, guid, make_world

G1 = guid(100_001)
G2 = guid(100_002)


def _settle(world: World, rounds: int = 3) -> None:
    for _ in range(rounds):
        world.sync()
        world.export_all()
    world.sync()


def test_members_resolve_through_anchors_to_target_ids(world: World) -> None:
    world.source(ad_user(1), ad_user(2), ad_group(1, [guid(1), guid(2)]))
    world.sync()
    adds = world.ops("member_add")
    assert {o.member_anchor for o in adds} == {guid(1), guid(2)}
    # Nothing exists in the target yet: the member operations wait, they are not dropped.
    assert all(o.waiting_for == G1 for o in adds)
    world.export_all()  # creates only
    world.sync()  # the import confirms the creates; members become ready
    adds = world.ops("member_add")
    assert len(adds) == 2 and all(o.waiting_for is None for o in adds)
    assert {o.member_target_id for o in adds} == {f"t-{guid(1)}", f"t-{guid(2)}"}
    assert {o.target_id for o in adds} == {f"t-{G1}"}
    world.export_all()
    world.sync()
    assert world.ops() == []
    assert world.target_members(G1) == {guid(1), guid(2)}


def test_a_member_whose_target_object_does_not_exist_yet_stays_pending(store: Store) -> None:
    w = make_world(store, {"user": {"flows": {"employeeId": "string(int(source.employeeid))"}}})
    # User 2 cannot be computed (quarantined), so its target object will not exist for a while.
    w.source(ad_user(1), ad_user(2, employeeid="x"), ad_group(1, [guid(1), guid(2)]))
    _settle(w)
    assert w.target_members(G1) == {guid(1)}
    assert w.ops() == []  # user 2 is not desired (yet), so it is no desired member either

    # Now user 2 is in scope but its create has not landed: its member_add waits for it.
    w.source(ad_user(2, employeeid="2"))
    w.sync()
    waiting = [o for o in w.ops("member_add") if o.member_anchor == guid(2)]
    assert [o.waiting_for for o in waiting] == [guid(2)]
    w.export_all()  # exports the create; the member_add is not claimable yet
    assert [o.exported_at for o in w.ops("member_add")] == [None]
    w.sync()  # the confirming import: user 2 exists, so its membership resolves
    w.export_all()
    w.sync()
    assert w.ops() == []
    assert w.target_members(G1) == {guid(1), guid(2)}


def test_a_member_entering_scope_joins_its_groups(store: Store) -> None:
    w = make_world(store, {"user": {"scope": {"include": ["OU=Staff,DC=example,DC=com"]}}})
    w.source(ad_user(1), ad_user(2, ou="OU=Elsewhere"), ad_group(1, [guid(1), guid(2)]))
    _settle(w)
    assert w.target_members(G1) == {guid(1)}
    # Only the user changes (moved into scope); the group is re-resolved as a dependent.
    w.source(ad_user(2))
    _settle(w)
    assert w.target_members(G1) == {guid(1), guid(2)}
    # And leaving scope (deleted in the target) takes it out of the group.
    w.source(ad_user(2, ou="OU=Elsewhere"))
    _settle(w)
    assert w.target_members(G1) == {guid(1)}
    assert w.target_of(guid(2)) is None


def test_nested_groups(world: World) -> None:
    world.source(ad_user(1), ad_user(2), ad_group(2, [guid(2)]), ad_group(1, [guid(1), G2]))
    _settle(world)
    assert world.target_members(G1) == {guid(1), G2}
    assert world.target_members(G2) == {guid(2)}
    assert world.ops() == []


def test_member_removed_in_the_source_is_removed_in_the_target(world: World) -> None:
    world.source(ad_user(1), ad_user(2), ad_group(1, [guid(1), guid(2)]))
    _settle(world)
    world.source(ad_group(1, [guid(1)]))
    world.sync()
    assert world.op_keys() == {("member_remove", G1, guid(2))}
    _settle(world)
    assert world.target_members(G1) == {guid(1)}
    assert world.ops() == []


def test_members_added_in_the_cloud_that_idsync_does_not_know_are_left_alone(world: World) -> None:
    world.source(ad_user(1), ad_group(1, [guid(1)]))
    _settle(world)
    world.target("user", TargetRow("cloud-1", {"displayName": "Guest"}))
    world.target_page(TargetPage("group", members_added=[(f"t-{G1}", "cloud-1")]))
    world.sync(full=True)
    assert world.ops() == []


def test_members_are_not_synced_for_a_group_rule_without_members(store: Store) -> None:
    w = make_world(store, {"group": {"members": False}})
    w.source(ad_user(1), ad_group(1, [guid(1)]))
    w.sync()
    assert w.ops("member_add") == []
    assert {o.anchor for o in w.ops("create")} == {guid(1), G1}


def _waiting(world: World) -> dict[str, bool]:
    """member_anchor -> the `waiting` flag of the member adds (what the claim's index leaves out)."""
    with world.store.connection() as conn:
        rows = conn.execute("SELECT member_anchor, waiting FROM pending_export WHERE kind = 'member_add'")
        return {r[0]: r[1] for r in rows}


@pytest.mark.parametrize("scan", [False, True], ids=["by-link", "scan"])
def test_member_operations_waiting_for_a_link_are_flagged_until_the_sync_that_links_it(
    world: World, monkeypatch: pytest.MonkeyPatch, scan: bool
) -> None:
    if scan:  # the bulk path: every waiting row checked instead of those the new links lead to
        monkeypatch.setattr(pending, "RELEASE_SCAN", 0)
    world.source(ad_user(1), ad_group(1, [guid(1)]))
    world.sync()
    assert _waiting(world) == {guid(1): True}  # neither the group nor the user exists yet
    world.export_all()  # the creates; the member add is not even looked at
    assert _waiting(world) == {guid(1): True}
    world.sync()  # the import shows both: the link forms and releases the operation
    assert _waiting(world) == {guid(1): False}
    # A member whose create has not landed: waits on the member side only.
    world.source(ad_user(2), ad_group(1, [guid(1), guid(2)]))
    world.export_all()
    world.sync()
    assert _waiting(world)[guid(2)] is True
    world.export_all()  # user 2's create
    world.sync()  # linked: released through the desired membership that names it
    assert _waiting(world)[guid(2)] is False
    world.export_all()
    world.sync()
    assert world.ops() == [] and world.target_members(G1) == {guid(1), guid(2)}


def test_a_full_sync_of_many_dirty_objects_confirms_through_a_join(world: World, monkeypatch) -> None:
    # Above sets.BIG dirty anchors the confirmation is a semi-join (a 1,000,000-user sync
    # searched a million-element array per row); the result must be the same as the index walk.
    from idsync.store import sets

    monkeypatch.setattr(sets, "BIG", 1)
    world.source(ad_user(1), ad_user(2), ad_user(3), ad_group(1, [guid(1), guid(2)]))
    _settle(world)
    assert world.ops() == []
    assert world.target_members(G1) == {guid(1), guid(2)}
    world.source(ad_group(1, [guid(2), guid(3)]))
    _settle(world)
    assert world.ops() == [] and world.target_members(G1) == {guid(2), guid(3)}


def test_a_group_leaving_the_desired_state_takes_its_desired_members_along(store: Store) -> None:
    # (Migration 0010 dropped the foreign key that cascaded this; store.desired deletes them.)
    world = make_world(store, {"group": {"scope": {"exclude": ["OU=Gone,DC=example,DC=com"]}}})
    world.source(ad_user(1), ad_user(2), ad_group(1, [guid(1), guid(2)]), ad_group(2, [guid(1)]))
    _settle(world)

    def members() -> set[tuple[str, str]]:
        with world.store.connection() as conn:
            return {
                (r[0], r[1]) for r in conn.execute("SELECT group_anchor, member_anchor FROM desired_member")
            }

    assert members() == {(G1, guid(1)), (G1, guid(2)), (G2, guid(1))}
    world.source(ad_group(1, [guid(1), guid(2)], ou="OU=Gone"))  # out of scope, members unchanged
    world.sync()
    assert members() == {(G2, guid(1))}
    world.delete_source(G2)  # deleted in the source
    world.sync()
    assert members() == set()


def test_a_sync_that_links_many_objects_analyzes_the_link_table(world: World) -> None:
    """Plans made while sync_link was empty must not outlive the first sync (store/upkeep.py)."""

    def analyzed() -> int:
        return world.table_stat("sync_link", "analyze_count + autoanalyze_count")

    world.source(*(ad_user(i) for i in range(1, 61)))
    world.sync()
    world.export_all()
    before = analyzed()
    result = world.sync()  # confirms the 60 creates: 60 links, above autovacuum's 50 + 10 %
    assert analyzed() == before + 1 and "tend" in result.phases
    world.source(ad_user(1, department="Elsewhere"))
    result = world.sync()  # one change: below the threshold of every table, nothing tended
    assert analyzed() == before + 1 and "tend" not in result.phases


def test_a_sync_that_confirms_many_operations_vacuums_the_queue(world: World, monkeypatch) -> None:
    from idsync.store import upkeep

    def vacuums() -> int:
        return world.table_stat("pending_export", "vacuum_count")

    monkeypatch.setattr(upkeep, "VACUUM_AFTER", 3)
    world.source(ad_user(1), ad_user(2), ad_group(1, [guid(1), guid(2)]))
    world.sync()
    world.export_all()
    before = vacuums()
    world.sync()  # confirms the three creates
    assert vacuums() == before + 1
    world.export_all()
    world.sync()  # confirms two member adds: fewer than 3, no vacuum
    assert vacuums() == before + 1
