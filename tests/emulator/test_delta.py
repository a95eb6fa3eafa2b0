"""Delta query: rounds, page sizes, @removed, members@delta, tokens and their errors."""

from __future__ import annotations

from typing import Any

import pytest

from idsync.emulator.faults import Fault
from tests.emulator.conftest import Graph


async def run_round(
    graph: Graph, first: str, headers: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], str, int]:
    """Follow nextLinks to the deltaLink; returns (all items, deltaLink, pages)."""
    r = await graph.call("GET", first, headers=headers)
    items: list[dict[str, Any]] = []
    pages = 0
    while True:
        assert r.status == 200, r.body
        pages += 1
        items += r.body["value"]
        if "@odata.deltaLink" in r.body:
            assert "@odata.nextLink" not in r.body
            return items, r.body["@odata.deltaLink"], pages
        r = await graph.call("GET", r.body["@odata.nextLink"], headers=headers)


@pytest.mark.parametrize("form", ["delta", "delta()", "microsoft.graph.delta()"])
async def test_initial_round_in_every_url_form_with_graph_page_size(graph: Graph, form: str) -> None:
    graph.em.seed_users(450)
    items, link, pages = await run_round(graph, f"/users/{form}?$select=id,userPrincipalName")
    assert pages == 3  # at most 200 objects per page
    assert len({i["id"] for i in items}) == 450
    assert all(set(i) == {"id", "userPrincipalName"} for i in items)
    assert link.startswith(graph.server.graph_url + "/users/delta?$deltatoken=")
    again, _, _ = await run_round(graph, link)
    assert again == []


async def test_changes_round_reports_updates_creates_and_removals(graph: Graph) -> None:
    a = await graph.create_user("ann")
    b = await graph.create_user("ben")
    c = await graph.create_user("cat")
    _, link, _ = await run_round(graph, "/users/delta?$select=id,displayName,jobTitle")
    await graph.call("PATCH", f"/users/{a['id']}", {"jobTitle": "CTO"})
    await graph.call("DELETE", f"/users/{b['id']}")  # soft: "changed"
    await graph.call("DELETE", f"/users/{c['id']}")
    await graph.call("DELETE", f"/directory/deletedItems/{c['id']}")  # purged: "deleted"
    d = await graph.create_user("dan")
    items, link2, _ = await run_round(graph, link)
    by_id = {i["id"]: i for i in items}
    assert by_id[a["id"]]["jobTitle"] == "CTO" and by_id[a["id"]]["displayName"] == "Ann"
    assert by_id[b["id"]] == {"id": b["id"], "@removed": {"reason": "changed"}}
    assert by_id[c["id"]] == {"id": c["id"], "@removed": {"reason": "deleted"}}
    assert by_id[d["id"]]["displayName"] == "Dan"
    assert set(by_id) == {a["id"], b["id"], c["id"], d["id"]}
    await graph.call("POST", f"/directory/deletedItems/{b['id']}/restore")
    items, _, _ = await run_round(graph, link2)
    assert [i["id"] for i in items] == [b["id"]] and "@removed" not in items[0]


async def test_prefer_return_minimal_sends_only_changed_properties(graph: Graph) -> None:
    a = await graph.create_user("eva", jobTitle="Dev", department="R&D")
    _, link, _ = await run_round(graph, "/users/delta?$select=id,displayName,jobTitle,department")
    await graph.call("PATCH", f"/users/{a['id']}", {"jobTitle": "Lead", "department": None})
    await graph.call("PATCH", f"/users/{a['id']}", {"displayName": "Eva"})  # unchanged value: no change
    r = await graph.call("GET", link, headers={"Prefer": "return=minimal"})
    assert r.body["value"] == [{"id": a["id"], "jobTitle": "Lead", "department": None}]
    assert r.headers.get("Preference-Applied") == "return=minimal"


async def test_deltatoken_latest_skips_existing_objects(graph: Graph) -> None:
    graph.em.seed_users(5)
    r = await graph.call("GET", "/users/delta?$deltatoken=latest")
    assert r.body["value"] == [] and "@odata.deltaLink" in r.body
    u = await graph.create_user("fin")
    items, _, _ = await run_round(graph, r.body["@odata.deltaLink"])
    assert [i["id"] for i in items] == [u["id"]]


async def test_group_delta_members_delta_adds_and_removes(graph: Graph) -> None:
    u1, u2 = (await graph.create_user("gil")), (await graph.create_user("hoa"))
    g = await graph.create_group("crew")
    empty = await graph.create_group("empty")
    await graph.call(
        "PATCH",
        f"/groups/{g['id']}",
        {"members@odata.bind": [f"https://graph.microsoft.com/v1.0/directoryObjects/{u1['id']}"]},
    )
    items, link, _ = await run_round(graph, "/groups/delta()?$select=id,displayName,members")
    by_id = {i["id"]: i for i in items}
    assert by_id[g["id"]]["members@delta"] == [{"@odata.type": "#microsoft.graph.user", "id": u1["id"]}]
    assert "members@delta" not in by_id[empty["id"]]  # no members: the annotation is omitted
    await graph.call(
        "POST",
        f"/groups/{g['id']}/members/$ref",
        {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{u2['id']}"},
    )
    await graph.call("DELETE", f"/groups/{g['id']}/members/{u1['id']}/$ref")
    await graph.call("DELETE", f"/groups/{empty['id']}")
    items, _, _ = await run_round(graph, link)
    by_id = {i["id"]: i for i in items}
    assert sorted(by_id[g["id"]]["members@delta"], key=lambda m: m["id"]) == sorted(
        [
            {"@odata.type": "#microsoft.graph.user", "id": u2["id"]},
            {"@odata.type": "#microsoft.graph.user", "id": u1["id"], "@removed": {"reason": "deleted"}},
        ],
        key=lambda m: m["id"],
    )
    assert by_id[empty["id"]] == {"id": empty["id"], "@removed": {"reason": "deleted"}}


async def test_large_group_members_split_across_pages(graph: Graph) -> None:
    graph.em.configure(delta_link_limit=50)
    ids = graph.em.seed_users(120)
    g = await graph.create_group("huge")
    for i in range(0, 120, 20):
        binds = [f"https://graph.microsoft.com/v1.0/directoryObjects/{x}" for x in ids[i : i + 20]]
        await graph.call("PATCH", f"/groups/{g['id']}", {"members@odata.bind": binds})
    items, _, pages = await run_round(graph, "/groups/delta")
    slices = [i["members@delta"] for i in items if i["id"] == g["id"]]
    assert len(slices) == 3 and pages >= 3  # 50 + 50 + 20 links; the client must merge
    assert sorted(m["id"] for s in slices for m in s) == sorted(ids)


async def test_stale_expired_and_garbage_tokens_get_sync_state_not_found(graph: Graph) -> None:
    graph.em.seed_users(3)
    _, link, _ = await run_round(graph, "/users/delta")
    graph.em.advance_clock(8 * 86400)  # tokens last 7 days
    graph.token = graph.em.auth.issue()
    r = await graph.call("GET", link)
    assert r.status == 400 and r.body["error"]["code"] == "syncStateNotFound"
    _, link, _ = await run_round(graph, "/users/delta")
    graph.em.reset()  # a new directory generation: every old token is stale
    r = await graph.call("GET", link)
    assert r.status == 400 and r.body["error"]["code"] == "syncStateNotFound"
    r = await graph.call("GET", "/users/delta?$deltatoken=not-a-token")
    assert r.status == 400 and r.body["error"]["code"] == "syncStateNotFound"
    r = await graph.call("GET", "/groups/delta?$skiptoken=" + link.split("=", 1)[1])
    assert r.status == 400  # a users token is not a groups token


async def test_forced_410_carries_a_location_to_restart_from(graph: Graph) -> None:
    graph.em.seed_users(2)
    _, link, _ = await run_round(graph, "/users/delta")
    graph.em.faults.add(Fault(kind="gone", path="/delta"))
    r = await graph.call("GET", link)
    assert r.status == 410 and r.body["error"]["code"] == "resyncRequired"
    loc = r.headers["Location"]
    assert loc == graph.server.graph_url + "/users/delta?$deltatoken="
    items, _, _ = await run_round(graph, loc)
    assert len(items) == 2


async def test_select_and_filter_validation(graph: Graph) -> None:
    a = await graph.create_user("ivy")
    await graph.create_user("joe")
    r = await graph.call("GET", "/users/delta?$select=id,bogus")
    assert r.status == 400
    r = await graph.call("GET", "/users/delta?$top=5")
    assert r.status == 400
    r = await graph.call("GET", "/users/delta?$filter=mail eq 'ivy@example.com'")
    assert (r.status, r.body["error"]["code"], r.body["error"]["message"]) == (
        400,
        "Request_UnsupportedQuery",
        "Unsupported Query.",
    )
    items, link, _ = await run_round(graph, f"/users/delta?$filter=id eq '{a['id']}'&$select=id,displayName")
    assert [i["id"] for i in items] == [a["id"]]
    r = await graph.call("GET", link + "&$select=id")
    assert r.status == 400


async def test_change_during_a_round_is_not_lost(graph: Graph) -> None:
    ids = graph.em.seed_users(450)
    r = await graph.call("GET", "/users/delta?$select=id,jobTitle")
    first = {i["id"] for i in r.body["value"]}
    # change an object the round has already passed, mid-round
    passed = next(iter(first))
    await graph.call("PATCH", f"/users/{passed}", {"jobTitle": "Changed"})
    items = list(r.body["value"])
    while "@odata.nextLink" in r.body:
        r = await graph.call("GET", r.body["@odata.nextLink"])
        items += r.body["value"]
    latest = {}
    for i in items:
        latest[i["id"]] = i
    assert latest[passed]["jobTitle"] == "Changed"
    assert set(latest) == set(ids)
