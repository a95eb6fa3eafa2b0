"""The writeback planner (pure): which operations make AD equal to the cloud groups in scope."""

from __future__ import annotations

from idsync.store.writeback import CloudGroup, UnstampedUser
from idsync.writeback.directory import AdGroup, guid_bytes
from idsync.writeback.plan import group_ops, guid_ops

OU = "OU=Cloud,DC=x"
ANN = "CN=Ann,OU=Users,DC=x"
BOB = "CN=Bob,OU=Users,DC=x"


def ad_group(gid: str, name: str, members: tuple[str, ...], desc: str | None = None) -> AdGroup:
    return AdGroup(gid, f"CN=Group_{gid},{OU}", name, desc, members)


def test_create_update_delete_and_nothing_when_equal() -> None:
    cloud = [
        CloudGroup("g1", "New", None, (ANN,)),
        CloudGroup("g2", "Renamed", None, (ANN,)),
        CloudGroup("g3", "Same", "d", (ANN, BOB)),
    ]
    ad = {
        "g2": ad_group("g2", "Old name", (ANN,)),
        # Same members, other case and spacing in the DNs: equal.
        "g3": ad_group("g3", "Same", ("cn=bob, ou=users, dc=x", ANN.upper()), "d"),
        "g4": ad_group("g4", "Gone", (BOB,)),
    }
    ops = {(o.anchor, o.kind): o.payload for o in group_ops(cloud, ad, lambda n: True)}
    assert set(ops) == {("ad:Group_g1", "create"), ("ad:Group_g2", "update"), ("ad:Group_g4", "delete")}
    assert ops[("ad:Group_g1", "create")]["member"] == [ANN]
    assert ops[("ad:Group_g2", "update")]["displayName"] == "Renamed"
    assert ops[("ad:Group_g2", "update")]["dn"] == f"CN=Group_g2,{OU}"
    assert ops[("ad:Group_g4", "delete")]["dn"] == f"CN=Group_g4,{OU}"


def test_out_of_scope_groups_are_not_written_and_leave_ad() -> None:
    cloud = [CloudGroup("g1", "WB-Sales", None, ()), CloudGroup("g2", "Other", None, ())]
    ad = {"g2": ad_group("g2", "Other", ())}
    ops = [(o.anchor, o.kind) for o in group_ops(cloud, ad, lambda n: n.startswith("WB-"))]
    assert ops == [("ad:Group_g1", "create"), ("ad:Group_g2", "delete")]


def test_membership_change_is_an_update_with_the_exact_list() -> None:
    cloud = [CloudGroup("g1", "G", None, (BOB,))]
    ops = group_ops(cloud, {"g1": ad_group("g1", "G", (ANN,))}, lambda n: True)
    assert [(o.kind, o.payload["member"]) for o in ops] == [("update", [BOB])]


def test_consistency_guid_value_is_the_objectguid_bytes() -> None:
    anchor = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    ops = guid_ops([UnstampedUser(anchor, ANN)])
    assert [(o.object_type, o.anchor, o.kind) for o in ops] == [("user", f"ad:guid:{anchor}", "update")]
    # AD's byte order (little-endian first three fields), as objectGUID holds it.
    assert guid_bytes(anchor).hex() == "3c2d1e0f5a4b7869" + "8796a5b4c3d2e1f0"
