"""Security groups: creation, members@odata.bind, $ref links and their exact errors, hard delete."""

from __future__ import annotations

from tests.emulator.conftest import Graph

ALREADY = (
    "One or more added object references already exist for the following modified properties: 'members'."
)
NOT_MEMBER = (
    "One or more removed object references do not exist for the following modified properties: 'members'."
)


def ref(oid: str) -> dict[str, str]:
    return {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{oid}"}


async def test_create_security_group_and_refuse_other_kinds(graph: Graph) -> None:
    g = await graph.create_group("sales", description="Sales")
    assert g["securityEnabled"] is True and g["mailEnabled"] is False and g["groupTypes"] == []
    for bad in (
        {"mailEnabled": True},
        {"groupTypes": ["Unified"], "mailEnabled": True},
        {"securityEnabled": False},
    ):
        r = await graph.call(
            "POST",
            "/groups",
            {"displayName": "X", "mailNickname": "x", "mailEnabled": False, "securityEnabled": True, **bad},
        )
        assert r.status == 400, bad
    r = await graph.call(
        "POST", "/groups", {"displayName": "X", "mailEnabled": False, "securityEnabled": True}
    )
    assert r.status == 400 and "mailNickname" in r.body["error"]["message"]
    r = await graph.call(
        "POST",
        "/groups",
        {"displayName": "X", "mailNickname": "a b", "mailEnabled": False, "securityEnabled": True},
    )
    assert r.status == 400 and "mailNickname" in r.body["error"]["message"]


async def test_non_guid_group_id_is_400_unknown_guid_404(graph: Graph) -> None:
    r = await graph.call("GET", "/groups/sales")
    assert r.status == 400 and r.body["error"]["message"] == "Invalid object identifier 'sales'."
    r = await graph.call("GET", "/groups/6f1c5d0e-0000-4000-8000-000000000000")
    assert r.status == 404 and r.body["error"]["code"] == "Request_ResourceNotFound"


async def test_members_bind_at_most_20_all_or_nothing(graph: Graph) -> None:
    ids = graph.em.seed_users(22)
    g = await graph.create_group("big")
    binds = [f"https://graph.microsoft.com/v1.0/directoryObjects/{i}" for i in ids]
    r = await graph.call("PATCH", f"/groups/{g['id']}", {"members@odata.bind": binds[:21]})
    assert r.status == 400
    assert (await graph.call("GET", f"/groups/{g['id']}/members")).body["value"] == []
    # one bad reference: nothing is added
    bad = [
        *binds[:3],
        "https://graph.microsoft.com/v1.0/directoryObjects/6f1c5d0e-0000-4000-8000-000000000000",
    ]
    r = await graph.call("PATCH", f"/groups/{g['id']}", {"members@odata.bind": bad})
    assert r.status == 404
    assert (await graph.call("GET", f"/groups/{g['id']}/members")).body["value"] == []
    r = await graph.call(
        "PATCH", f"/groups/{g['id']}", {"members@odata.bind": binds[:20], "description": "d"}
    )
    assert r.status == 204
    members = (await graph.call("GET", f"/groups/{g['id']}/members?$top=999")).body["value"]
    assert len(members) == 20 and all(m["@odata.type"] == "#microsoft.graph.user" for m in members)
    r = await graph.call("PATCH", f"/groups/{g['id']}", {"members@odata.bind": binds[19:21]})
    assert r.status == 400 and r.body["error"]["message"] == ALREADY
    r = await graph.call("PATCH", f"/groups/{g['id']}", {"members@odata.bind": ["not-a-url"]})
    assert r.status == 400


async def test_create_with_members_bind(graph: Graph) -> None:
    ids = graph.em.seed_users(3)
    g = await graph.create_group(
        "seeded", **{"members@odata.bind": [f"https://graph.microsoft.com/v1.0/users/{i}" for i in ids]}
    )
    members = (await graph.call("GET", f"/groups/{g['id']}/members")).body["value"]
    assert sorted(m["id"] for m in members) == sorted(ids)


async def test_ref_add_remove_and_their_errors(graph: Graph) -> None:
    u = await graph.create_user("lea")
    g = await graph.create_group("ops")
    sub = await graph.create_group("ops-sub")
    path = f"/groups/{g['id']}/members/$ref"
    assert (await graph.call("POST", path, ref(u["id"]))).status == 204
    assert (await graph.call("POST", path, ref(sub["id"]))).status == 204
    r = await graph.call("POST", path, ref(u["id"]))
    assert r.status == 400 and r.body["error"]["code"] == "Request_BadRequest"
    assert r.body["error"]["message"] == ALREADY
    missing = "6f1c5d0e-0000-4000-8000-000000000000"
    r = await graph.call("POST", path, ref(missing))
    assert r.status == 404 and missing in r.body["error"]["message"]
    types = sorted(
        m["@odata.type"] for m in (await graph.call("GET", f"/groups/{g['id']}/members")).body["value"]
    )
    assert types == ["#microsoft.graph.group", "#microsoft.graph.user"]
    assert (await graph.call("DELETE", f"/groups/{g['id']}/members/{u['id']}/$ref")).status == 204
    r = await graph.call("DELETE", f"/groups/{g['id']}/members/{u['id']}/$ref")
    assert r.status == 404 and r.body["error"]["message"] == NOT_MEMBER
    assert (await graph.call("GET", f"/users/{u['id']}")).status == 200


async def test_delete_member_without_ref_deletes_the_object(graph: Graph) -> None:
    u = await graph.create_user("max")
    g = await graph.create_group("dev")
    await graph.call("POST", f"/groups/{g['id']}/members/$ref", ref(u["id"]))
    assert (await graph.call("DELETE", f"/groups/{g['id']}/members/{u['id']}")).status == 204
    assert (await graph.call("GET", f"/users/{u['id']}")).status == 404


async def test_members_paging(graph: Graph) -> None:
    ids = graph.em.seed_users(45)
    g = await graph.create_group("paged")
    for i in range(0, 45, 20):
        binds = [f"https://graph.microsoft.com/v1.0/directoryObjects/{x}" for x in ids[i : i + 20]]
        assert (await graph.call("PATCH", f"/groups/{g['id']}", {"members@odata.bind": binds})).status == 204
    r = await graph.call("GET", f"/groups/{g['id']}/members?$top=20&$select=id")
    seen = []
    while True:
        seen += [m["id"] for m in r.body["value"]]
        if "@odata.nextLink" not in r.body:
            break
        r = await graph.call("GET", r.body["@odata.nextLink"])
    assert sorted(seen) == sorted(ids)


async def test_security_groups_are_hard_deleted(graph: Graph) -> None:
    g = await graph.create_group("gone")
    assert (await graph.call("DELETE", f"/groups/{g['id']}")).status == 204
    assert (await graph.call("GET", f"/groups/{g['id']}")).status == 404
    assert (await graph.call("GET", "/directory/deletedItems/microsoft.graph.group")).body["value"] == []
    assert (await graph.call("POST", f"/directory/deletedItems/{g['id']}/restore")).status == 404


async def test_group_extension_anchor(graph: Graph) -> None:
    ext = await graph.register_extension("idsyncAnchor")
    g = await graph.create_group("anch", **{ext: "objectguid-1"})
    r = await graph.call("GET", f"/groups?$filter={ext} eq 'objectguid-1'&$select=id,{ext}")
    assert r.body["value"] == [{"id": g["id"], ext: "objectguid-1"}]
    assert (await graph.call("PATCH", f"/groups/{g['id']}", {ext: None})).status == 204
    assert (await graph.call("GET", f"/groups/{g['id']}?$select={ext}")).body[ext] is None


async def test_group_mail_nickname_follows_graphs_character_rules(graph: Graph) -> None:
    # group-post-groups.md: at most 64 characters, ASCII 0-127 except @ () \ [] " ; : . <> , SPACE
    base = {"displayName": "G", "mailEnabled": False, "securityEnabled": True}
    for nick in ("a.b", "a@b", "a(b", 'a"b', "a<b", "a,b", "grüppe", "x" * 65):
        r = await graph.call("POST", "/groups", {**base, "mailNickname": nick})
        assert r.status == 400 and "mailNickname" in r.body["error"]["message"], nick
    assert (await graph.call("POST", "/groups", {**base, "mailNickname": "x" * 64})).status == 201


async def test_bind_naming_a_member_already_there_both_ways(graph: Graph) -> None:
    ids = graph.em.seed_users(3)
    binds = [f"https://graph.microsoft.com/v1.0/directoryObjects/{i}" for i in ids]
    g = await graph.create_group("both", **{"members@odata.bind": binds[:1]})
    # documented: 400, and nothing of the set is added
    r = await graph.call("PATCH", f"/groups/{g['id']}", {"members@odata.bind": binds})
    assert r.status == 400 and r.body["error"]["message"] == ALREADY
    assert len((await graph.call("GET", f"/groups/{g['id']}/members")).body["value"]) == 1
    graph.em.configure(bind_existing_member="ignore")  # the undocumented alternative
    r = await graph.call("PATCH", f"/groups/{g['id']}", {"members@odata.bind": binds})
    assert r.status == 204
    members = (await graph.call("GET", f"/groups/{g['id']}/members")).body["value"]
    assert sorted(m["id"] for m in members) == sorted(ids)


async def test_a_member_not_replicated_yet_is_400_or_404_as_configured(graph: Graph) -> None:
    g = await graph.create_group("lagged")
    graph.em.configure(replication_delay=60.0)
    u = await graph.create_user("fresh")
    bind = {"members@odata.bind": [f"https://graph.microsoft.com/v1.0/directoryObjects/{u['id']}"]}
    r = await graph.call("PATCH", f"/groups/{g['id']}", bind)
    assert r.status == 400 and "objects being referenced don't exist" in r.body["error"]["message"]
    graph.em.configure(unreplicated_member="not_found")
    r = await graph.call("PATCH", f"/groups/{g['id']}", bind)
    assert r.status == 404 and u["id"] in r.body["error"]["message"]
    graph.em.store.clock.advance(61.0)
    assert (await graph.call("PATCH", f"/groups/{g['id']}", bind)).status == 204
