"""The recycle bin (`/directory/deletedItems`) as Graph documents it, and the one thing it does not
document: whether a soft-deleted user keeps its onPremisesImmutableId taken (`deleted_immutable_id`).

Pages: docs-contrib api-reference/v1.0/api/directory-deleteditems-list.md (cast required, the
cast type's query parameters, 100 per page by default, up to 999 with $top),
directory-deleteditems-restore.md (200 with the object; app-only callers cannot restore an
administrator), user-delete.md (the user "is also restored to any groups they were a member of").
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from idsync.emulator.store import Store
from tests.emulator.conftest import Graph

DELETED_USERS = "/directory/deletedItems/microsoft.graph.user"


def _filter(text: str) -> str:
    return "$filter=" + quote(text, safe="")


async def _deleted_user(graph: Graph, nick: str, **extra: object) -> dict[str, object]:
    u = await graph.create_user(nick, **extra)
    assert (await graph.call("DELETE", f"/users/{u['id']}")).status == 204
    return u


async def test_the_cast_is_required(graph: Graph) -> None:
    await _deleted_user(graph, "ann")
    r = await graph.call("GET", "/directory/deletedItems")
    assert r.status == 400 and "cast" in r.body["error"]["message"]


async def test_filter_by_immutable_id_finds_only_that_deleted_user(graph: Graph) -> None:
    ann = await _deleted_user(graph, "ann", onPremisesImmutableId="imm-ann")
    await _deleted_user(graph, "bob", onPremisesImmutableId="imm-bob")
    live = await graph.create_user("cid", onPremisesImmutableId="imm-cid")
    q = _filter("onPremisesImmutableId eq 'imm-ann'") + "&$select=id,onPremisesImmutableId,deletedDateTime"
    r = await graph.call("GET", f"{DELETED_USERS}?{q}")
    assert r.status == 200, r.body
    [got] = r.body["value"]
    assert got["id"] == ann["id"] and got["onPremisesImmutableId"] == "imm-ann" and got["deletedDateTime"]
    assert "displayName" not in got  # $select is honoured
    # a live user is never in the recycle bin, whatever it carries
    r = await graph.call("GET", DELETED_USERS + "?" + _filter("onPremisesImmutableId eq 'imm-cid'"))
    assert r.body["value"] == [] and live["id"]
    r = await graph.call(
        "GET", DELETED_USERS + "?" + _filter("onPremisesImmutableId in ('imm-ann', 'imm-bob')")
    )
    assert len(r.body["value"]) == 2


@pytest.mark.parametrize(
    "query",
    [
        _filter("jobTitle eq 'x'"),  # not filterable on users
        "$select=nosuchProperty",
        "$orderby=displayName",  # documented, but an advanced query the emulator does not model
        "$count=true",
        "$top=1000",  # at most 999
    ],
)
async def test_what_the_emulator_does_not_know_is_a_400(graph: Graph, query: str) -> None:
    await _deleted_user(graph, "ann")
    r = await graph.call("GET", f"{DELETED_USERS}?{query}")
    assert r.status == 400, (query, r.body)


async def test_paging_with_top_and_next_link(graph: Graph) -> None:
    ids = [(await _deleted_user(graph, f"u{n}"))["id"] for n in range(5)]
    seen: list[str] = []
    url = f"{DELETED_USERS}?$top=2&$select=id"
    pages = 0
    while url:
        r = await graph.call("GET", url)
        assert r.status == 200 and len(r.body["value"]) <= 2
        seen += [v["id"] for v in r.body["value"]]
        url = r.body.get("@odata.nextLink", "")
        pages += 1
    assert seen == ids and pages == 3


async def test_restore_gives_back_the_same_object_and_its_groups(graph: Graph) -> None:
    u = await graph.create_user("dan", department="Sales", onPremisesImmutableId="imm-dan")
    g = await graph.create_group("team")
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{u['id']}"}
    assert (await graph.call("POST", f"/groups/{g['id']}/members/$ref", ref)).status == 204
    await graph.call("DELETE", f"/users/{u['id']}")
    r = await graph.call("POST", f"/directory/deletedItems/{u['id']}/restore")
    assert r.status == 200 and r.body["id"] == u["id"]
    r = await graph.call("GET", f"/users/{u['id']}?$select=department,onPremisesImmutableId")
    assert r.body["department"] == "Sales" and r.body["onPremisesImmutableId"] == "imm-dan"
    members = (await graph.call("GET", f"/groups/{g['id']}/members")).body["value"]
    assert [m["id"] for m in members] == [u["id"]]
    r = await graph.call("GET", DELETED_USERS + "?" + _filter("onPremisesImmutableId eq 'imm-dan'"))
    assert r.body["value"] == []


async def test_an_app_cannot_restore_an_administrator(graph: Graph) -> None:
    u = await graph.create_user("eve")
    graph.em.grant_role("Global Administrator", str(u["id"]))
    graph.em.store.soft_delete(graph.em.store.objects[str(u["id"])])  # as an admin would delete it
    r = await graph.call("POST", f"/directory/deletedItems/{u['id']}/restore")
    assert r.status == 403


async def test_free_a_new_user_may_take_the_immutable_id_and_the_restore_then_conflicts(graph: Graph) -> None:
    assert graph.em.cfg.deleted_immutable_id == "free"
    old = await _deleted_user(graph, "fay", onPremisesImmutableId="imm-fay")
    await graph.create_user("fay2", onPremisesImmutableId="imm-fay")
    r = await graph.call("POST", f"/directory/deletedItems/{old['id']}/restore")
    assert r.status == 400
    assert r.body["error"]["details"][0] == {
        "code": "ObjectConflict",
        "message": "",
        "target": "onPremisesImmutableId",
    }


async def test_reserved_the_deleted_user_keeps_its_immutable_id_until_purged(graph: Graph) -> None:
    graph.em.configure(deleted_immutable_id="reserved")
    old = await _deleted_user(graph, "gus", onPremisesImmutableId="imm-gus")
    body = {
        "accountEnabled": True,
        "displayName": "Gus 2",
        "mailNickname": "gus2",
        "userPrincipalName": "gus2@example.com",
        "onPremisesImmutableId": "imm-gus",
        "passwordProfile": {"password": "Xy7!long-enough"},
    }
    r = await graph.call("POST", "/users", body)
    assert r.status == 400 and r.body["error"]["details"][0]["target"] == "onPremisesImmutableId"
    # the reservation is its own: restoring it is no conflict
    assert (await graph.call("POST", f"/directory/deletedItems/{old['id']}/restore")).status == 200
    await graph.call("DELETE", f"/users/{old['id']}")
    assert (await graph.call("DELETE", f"/directory/deletedItems/{old['id']}")).status == 204
    assert (await graph.call("POST", "/users", body)).status == 201  # purged: free again


async def test_switching_the_setting_applies_to_users_already_deleted(graph: Graph) -> None:
    await _deleted_user(graph, "hal", onPremisesImmutableId="imm-hal")
    graph.em.configure(deleted_immutable_id="reserved")
    r = await graph.call(
        "POST",
        "/users",
        {
            "accountEnabled": True,
            "displayName": "Hal 2",
            "mailNickname": "hal2",
            "userPrincipalName": "hal2@example.com",
            "onPremisesImmutableId": "imm-hal",
            "passwordProfile": {"password": "Xy7!long-enough"},
        },
    )
    assert r.status == 400
    graph.em.configure(deleted_immutable_id="free")
    await graph.create_user("hal3", onPremisesImmutableId="imm-hal")
    with pytest.raises(ValueError, match="free' or 'reserved"):
        graph.em.configure(deleted_immutable_id="maybe")


async def test_the_reservation_and_the_index_survive_a_state_reload(graph: Graph) -> None:
    graph.em.configure(deleted_immutable_id="reserved")
    old = await _deleted_user(graph, "ivy", onPremisesImmutableId="imm-ivy")
    fresh = Store()
    fresh.hold_deleted_immutable_ids(True)
    fresh.load_state(graph.em.store.to_state())
    assert [o.id for o in fresh.deleted_with_immutable_id("imm-ivy")] == [old["id"]]
    assert fresh.by_immutable["imm-ivy"] == old["id"]
