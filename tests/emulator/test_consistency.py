"""Eventual consistency: the replication-lag mode and `$batch` items run in no promised order."""

from __future__ import annotations

from typing import Any

from idsync.emulator.config import EmulatorConfig
from tests.emulator.conftest import Graph

LAG = {"replication_lag_min": 5.0, "replication_lag_max": 10.0, "replication_seed": 7}


async def _delta_round(graph: Graph, url: str) -> tuple[list[dict[str, Any]], str]:
    """Follow nextLinks to the deltaLink; (objects seen, deltaLink)."""
    seen: list[dict[str, Any]] = []
    while True:
        r = await graph.call("GET", url)
        assert r.status == 200, r.body
        seen += r.body["value"]
        if "@odata.deltaLink" in r.body:
            return seen, r.body["@odata.deltaLink"]
        url = r.body["@odata.nextLink"]


async def test_a_new_object_shows_up_in_reads_filter_and_delta_only_after_the_lag(graph: Graph) -> None:
    _, link = await _delta_round(graph, "/users/delta?$select=displayName,jobTitle")
    graph.em.configure(**LAG)
    u = await graph.create_user("lena", jobTitle="Dev")
    assert (await graph.call("GET", f"/users/{u['id']}")).status == 404
    assert (await graph.call("GET", "/users")).body["value"] == []
    r = await graph.call("GET", "/users?$filter=userPrincipalName eq 'lena@example.com'")
    assert r.body["value"] == []
    seen, link = await _delta_round(graph, link)
    assert seen == []
    g = await graph.create_group("team")
    r = await graph.call(
        "POST",
        f"/groups/{g['id']}/members/$ref",
        {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{u['id']}"},
    )
    # group-post-members.md: a just-created object may not be there yet; retry after a delay
    assert r.status == 400
    assert (
        r.body["error"]["message"]
        == "The source resource object or one of the objects being referenced don't exist."
    )

    graph.em.advance_clock(10.5)
    graph.token = graph.em.auth.issue()
    assert (await graph.call("GET", f"/users/{u['id']}")).status == 200
    seen, link = await _delta_round(graph, link)
    assert [o["id"] for o in seen] == [u["id"]]
    r = await graph.call(
        "POST",
        f"/groups/{g['id']}/members/$ref",
        {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{u['id']}"},
    )
    assert r.status == 204


async def test_a_changed_object_shows_its_old_version_until_the_change_replicates(graph: Graph) -> None:
    u = await graph.create_user("mona", jobTitle="Dev")
    _, link = await _delta_round(graph, "/users/delta?$select=displayName,jobTitle")
    graph.em.configure(**LAG)
    assert (await graph.call("PATCH", f"/users/{u['id']}", {"jobTitle": "Lead"})).status == 204
    assert (await graph.call("PATCH", f"/users/{u['id']}", {"jobTitle": "Boss"})).status == 204
    r = await graph.call("GET", f"/users/{u['id']}")
    assert r.body["jobTitle"] == "Dev"
    r = await graph.call("GET", "/users?$filter=displayName eq 'Mona'&$select=jobTitle")
    assert [x["jobTitle"] for x in r.body["value"]] == ["Dev"]
    seen, link = await _delta_round(graph, link)
    assert seen == []

    graph.em.advance_clock(10.5)
    graph.token = graph.em.auth.issue()
    assert (await graph.call("GET", f"/users/{u['id']}")).body["jobTitle"] == "Boss"
    seen, link = await _delta_round(graph, link)
    assert [(o["id"], o["jobTitle"]) for o in seen] == [(u["id"], "Boss")]
    seen, _ = await _delta_round(graph, link)
    assert seen == []


async def test_the_lag_is_random_within_its_bounds_and_seeded(graph: Graph) -> None:
    graph.em.configure(**LAG)
    ids = [(await graph.create_user(f"p{i}"))["id"] for i in range(12)]

    async def visible() -> set[str]:
        return {x["id"] for x in (await graph.call("GET", "/users?$select=id")).body["value"]}

    assert await visible() == set()
    graph.em.advance_clock(7.5)
    graph.token = graph.em.auth.issue()
    some = await visible()
    assert 0 < len(some) < len(ids)  # 12 draws from U(5, 10): some before 7.5 s, some after
    graph.em.advance_clock(3.0)
    graph.token = graph.em.auth.issue()
    assert await visible() == set(ids)


def _batch(n: int, deps: bool = False) -> dict[str, Any]:
    reqs: list[dict[str, Any]] = []
    for i in range(1, n + 1):
        r: dict[str, Any] = {"id": str(i), "method": "GET", "url": f"/domains?n={i}"}
        if deps and i > 1:
            r["dependsOn"] = [str(i - 1)]
        reqs.append(r)
    return {"requests": reqs}


async def _item_order(graph: Graph, body: dict[str, Any]) -> list[str]:
    seq = graph.em.log.seq
    r = await graph.call("POST", "/$batch", body)
    assert r.status == 200 and all(x["status"] == 200 for x in r.body["responses"])
    return [e.item for e in graph.em.log.since(seq) if e.item is not None]


async def test_batch_items_run_in_a_random_order_in_lag_mode_dependencies_first(graph: Graph) -> None:
    in_order = [str(i) for i in range(1, 21)]
    assert await _item_order(graph, _batch(20)) == in_order  # default: request order
    graph.em.configure(**LAG)
    assert graph.em.cfg.random_batch_order()
    order = await _item_order(graph, _batch(20))
    assert sorted(order, key=int) == in_order and order != in_order
    assert await _item_order(graph, _batch(20, deps=True)) == in_order
    graph.em.configure(batch_random_order=False)
    assert await _item_order(graph, _batch(20)) == in_order


def test_replication_delay_is_the_fixed_lag_shorthand() -> None:
    assert EmulatorConfig(replication_delay=3.0).lag_bounds() == (3.0, 3.0)
    assert EmulatorConfig().lag_bounds() == (0.0, 0.0) and not EmulatorConfig().random_batch_order()
    assert EmulatorConfig(batch_random_order=True).random_batch_order()


async def test_member_adds_held_back_by_the_lag_all_reach_the_next_delta_round(graph: Graph) -> None:
    # Three member adds in a row, the group's last change not replicated yet when a round runs:
    # the next round must report all three, not only the last (Graph's "processing delay",
    # concepts/delta-query-overview.md; members@delta, concepts/delta-query-groups.md).
    users = [await graph.create_user(f"m{i}") for i in range(3)]
    g = await graph.create_group("crew")
    _, link = await _delta_round(graph, "/groups/delta?$select=displayName,members")
    graph.em.configure(**LAG)
    for u in users:
        r = await graph.call(
            "POST",
            f"/groups/{g['id']}/members/$ref",
            {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{u['id']}"},
        )
        assert r.status == 204, r.body
    seen, link = await _delta_round(graph, link)
    assert seen == []  # not replicated yet
    graph.em.advance_clock(10.5)
    graph.token = graph.em.auth.issue()
    seen, _ = await _delta_round(graph, link)
    added = {m["id"] for o in seen for m in o.get("members@delta", []) if "@removed" not in m}
    assert added == {u["id"] for u in users}
