"""A user's manager: PUT / DELETE /users/{id}/manager/$ref, GET /users/{id}/manager, and
`manager@delta` in users/delta with `$select=manager`."""

from __future__ import annotations

from typing import Any

import pytest

from tests.emulator.conftest import Graph
from tests.emulator.test_delta import run_round


def ref(graph: Graph, oid: str) -> dict[str, str]:
    return {"@odata.id": f"{graph.server.graph_url}/directoryObjects/{oid}"}


async def test_put_get_replace_and_delete_a_manager(graph: Graph) -> None:
    ada, bob, cy = [await graph.create_user(n) for n in ("ada", "bob", "cy")]
    r = await graph.call("GET", f"/users/{ada['id']}/manager")
    assert r.status == 404 and r.body["error"]["code"] == "Request_ResourceNotFound"

    r = await graph.call("PUT", f"/users/{ada['id']}/manager/$ref", ref(graph, bob["id"]))
    assert r.status == 204
    r = await graph.call("GET", f"/users/{ada['id']}/manager")
    assert r.status == 200
    assert (r.body["id"], r.body["@odata.type"]) == (bob["id"], "#microsoft.graph.user")
    assert r.body["userPrincipalName"] == "bob@example.com"

    # A second PUT replaces the manager (a user has one).
    r = await graph.call("PUT", f"/users/{ada['id']}/manager/$ref", ref(graph, cy["id"]))
    assert r.status == 204
    r = await graph.call("GET", f"/users/{ada['id']}/manager?$select=id,displayName")
    assert r.body["id"] == cy["id"] and "userPrincipalName" not in r.body

    r = await graph.call("DELETE", f"/users/{ada['id']}/manager/$ref")
    assert r.status == 204
    assert (await graph.call("GET", f"/users/{ada['id']}/manager")).status == 404
    r = await graph.call("DELETE", f"/users/{ada['id']}/manager/$ref")  # none left
    assert r.status == 404 and r.body["error"]["code"] == "Request_ResourceNotFound"


async def test_put_manager_refuses_what_graph_refuses(graph: Graph) -> None:
    ada = await graph.create_user("ada")
    nobody = "00000000-0000-0000-0000-000000000000"
    r = await graph.call("PUT", f"/users/{ada['id']}/manager/$ref", ref(graph, nobody))
    assert r.status == 404 and r.body["error"]["code"] == "Request_ResourceNotFound"
    r = await graph.call("PUT", f"/users/{ada['id']}/manager/$ref", {"@odata.id": "not a url"})
    assert r.status == 400
    r = await graph.call("PUT", f"/users/{ada['id']}/manager/$ref", ref(graph, ada["id"]))
    assert r.status == 400
    r = await graph.call("PUT", "/users/nobody@example.com/manager/$ref", ref(graph, ada["id"]))
    assert r.status == 404
    r = await graph.call("POST", f"/users/{ada['id']}/manager/$ref", ref(graph, ada["id"]))
    assert r.status == 405


async def test_put_manager_works_in_a_batch(graph: Graph) -> None:
    ada, bob = await graph.create_user("ada"), await graph.create_user("bob")
    body = {
        "requests": [
            {
                "id": "1",
                "method": "PUT",
                "url": f"/users/{ada['id']}/manager/$ref",
                "body": ref(graph, bob["id"]),
                "headers": {"Content-Type": "application/json"},
            }
        ]
    }
    r = await graph.call("POST", "/$batch", body)
    assert r.status == 200 and r.body["responses"][0]["status"] == 204
    assert (await graph.call("GET", f"/users/{ada['id']}/manager")).body["id"] == bob["id"]


def _by_id(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for i in items:
        out.setdefault(i["id"], {}).update(i)
    return out


@pytest.mark.parametrize("removed", ["removed", "empty"])
async def test_users_delta_tracks_the_manager_when_selected(graph: Graph, removed: str) -> None:
    graph.em.configure(manager_removed_delta=removed)
    ada, bob, cy = [await graph.create_user(n) for n in ("ada", "bob", "cy")]
    await graph.call("PUT", f"/users/{ada['id']}/manager/$ref", ref(graph, bob["id"]))
    items, link, _ = await run_round(graph, "/users/delta?$select=id,displayName,manager")
    by_id = _by_id(items)
    assert by_id[ada["id"]]["manager@delta"] == [{"@odata.type": "#microsoft.graph.user", "id": bob["id"]}]
    assert "manager@delta" not in by_id[bob["id"]]  # no manager: no annotation
    # Without manager in $select the manager is not tracked.
    plain, _, _ = await run_round(graph, "/users/delta?$select=id,displayName")
    assert all("manager@delta" not in i for i in plain)

    await graph.call("PUT", f"/users/{ada['id']}/manager/$ref", ref(graph, cy["id"]))
    items, link, _ = await run_round(graph, link)
    assert [(i["id"], i["manager@delta"]) for i in items] == [
        (ada["id"], [{"@odata.type": "#microsoft.graph.user", "id": cy["id"]}])
    ]

    await graph.call("DELETE", f"/users/{ada['id']}/manager/$ref")
    items, link, _ = await run_round(graph, link)
    expected = (
        [{"@odata.type": "#microsoft.graph.user", "id": cy["id"], "@removed": {"reason": "deleted"}}]
        if removed == "removed"
        else []
    )
    assert [(i["id"], i["manager@delta"]) for i in items] == [(ada["id"], expected)]
    items, _, _ = await run_round(graph, link)
    assert items == []


async def test_the_manager_survives_a_restart_of_a_persistent_emulator(graph: Graph) -> None:
    ada, bob = await graph.create_user("ada"), await graph.create_user("bob")
    await graph.call("PUT", f"/users/{ada['id']}/manager/$ref", ref(graph, bob["id"]))
    state = graph.em.store.to_state()
    graph.em.store.load_state(state)
    assert (await graph.call("GET", f"/users/{ada['id']}/manager")).body["id"] == bob["id"]
