"""Throttling outside batches, fault injection (in-process and over HTTP) and the request log."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from idsync.emulator.faults import Fault
from tests.emulator.conftest import Graph


async def test_write_budget_gives_429_with_retry_after_and_throttle_headers(graph: Graph) -> None:
    graph.em.configure(write_budget=3, write_window=150.0)
    u = await graph.create_user("ute")
    for i in range(2):
        assert (await graph.call("PATCH", f"/users/{u['id']}", {"jobTitle": str(i)})).status == 204
    r = await graph.call("PATCH", f"/users/{u['id']}", {"jobTitle": "no"})
    assert r.status == 429
    assert r.body["error"]["code"] == "TooManyRequests"
    assert r.body["error"]["innerError"]["status"] == "429"
    assert int(r.headers["Retry-After"]) == 50  # one write refills every 150/3 s
    assert r.headers["x-ms-throttle-scope"].startswith("Tenant_Application/Write/")
    # reads are not writes: still served, with their resource-unit cost
    r = await graph.call("GET", "/users")
    assert r.status == 200 and r.headers["x-ms-resource-unit"] == "2"
    assert (await graph.call("GET", f"/users/{u['id']}?$select=jobTitle")).body["jobTitle"] == "1"


async def test_the_limit_percentage_comes_only_above_0_8_of_the_limit(graph: Graph) -> None:
    # concepts/throttling-limits.md, "Regular responses": sent only above 0.8 of the limit
    graph.em.configure(write_budget=10, write_window=1000.0, read_budget=0)
    u = await graph.create_user("lim")  # write 1 of 10
    seen = []
    for i in range(9):  # writes 2..10: 0.2 .. 1.0 of the limit used
        r = await graph.call("PATCH", f"/users/{u['id']}", {"jobTitle": str(i)})
        assert r.status == 204 and r.headers["x-ms-resource-unit"] == "1"
        seen.append(r.headers.get("x-ms-throttle-limit-percentage"))
    assert seen[:7] == [None] * 7  # 0.2 .. 0.8 used: nothing
    assert [float(v) for v in seen[7:]] == pytest.approx([0.9, 1.0], abs=0.01)
    r = await graph.call("PATCH", f"/users/{u['id']}", {"jobTitle": "no"})
    assert r.status == 429 and "x-ms-throttle-limit-percentage" not in r.headers  # 429s carry the scope
    graph.em.configure(throttle_warning=False)  # Graph without the early warning
    for _ in range(2):
        r = await graph.call("PATCH", f"/users/{u['id']}", {"jobTitle": "x"})
        assert "x-ms-throttle-limit-percentage" not in r.headers


async def test_forced_429_storm_then_recovery(graph: Graph) -> None:
    graph.em.faults.add(Fault(kind="throttle", count=3, retry_after=7, writes_only=True))
    statuses = []
    for _ in range(4):
        r = await graph.call(
            "POST",
            "/users",
            {
                "accountEnabled": True,
                "displayName": "V",
                "mailNickname": "vic",
                "userPrincipalName": "vic@example.com",
                "passwordProfile": {"password": "Xy7!long-enough"},
            },
        )
        statuses.append(r.status)
        if r.status == 429:
            assert r.headers["Retry-After"] == "7"
    assert statuses == [429, 429, 429, 201]
    assert (await graph.call("GET", "/users")).status == 200  # reads were never hit


async def test_5xx_burst_and_faults_over_http(graph: Graph) -> None:
    url = graph.server.url + "/_emulator/faults"
    async with graph.session.post(
        url, json={"kind": "status", "status": 503, "count": 2, "path": "^/users"}
    ) as r:
        assert r.status == 200
        fid = (await r.json())["faults"][0]["id"]
    async with graph.session.get(url) as r:
        assert [f["id"] for f in (await r.json())["faults"]] == [fid]
    codes = [(await graph.call("GET", "/users")).status for _ in range(3)]
    assert codes == [503, 503, 200]
    async with graph.session.post(url, json={"kind": "status", "status": 404}) as r:
        assert r.status == 400  # only 5xx
    async with graph.session.post(url, json={"kind": "status", "count": None}) as r:
        assert r.status == 200
    assert (await graph.call("GET", "/domains")).status == 503
    async with graph.session.delete(url) as r:
        assert r.status == 200
    assert (await graph.call("GET", "/domains")).status == 200


async def test_dropped_connection_before_and_after_the_write(graph: Graph) -> None:
    graph.em.faults.add(Fault(kind="drop", path="^/users$", methods=["POST"]))
    body = {
        "accountEnabled": True,
        "displayName": "W",
        "mailNickname": "wes",
        "userPrincipalName": "wes@example.com",
        "passwordProfile": {"password": "Xy7!long-enough"},
    }
    with pytest.raises(aiohttp.ClientError):
        await graph.call("POST", "/users", body)
    assert (await graph.call("GET", "/users/wes@example.com")).status == 404
    graph.em.faults.add(Fault(kind="drop", path="^/users$", methods=["POST"], after=True))
    with pytest.raises(aiohttp.ClientError):
        await graph.call("POST", "/users", body)
    # the write happened although the client never saw the answer: a retry conflicts
    assert (await graph.call("GET", "/users/wes@example.com")).status == 200
    r = await graph.call("POST", "/users", body)
    assert r.status == 400 and r.body["error"]["details"][0]["code"] == "ObjectConflict"


async def test_batch_item_faults_and_envelope_faults(graph: Graph) -> None:
    graph.em.faults.add(Fault(kind="throttle", count=1, retry_after=3, in_batch=True))
    reqs = [{"id": str(i), "method": "GET", "url": "/domains"} for i in range(3)]
    r = await graph.call("POST", "/$batch", {"requests": reqs})
    assert r.status == 200
    assert [i["status"] for i in r.body["responses"]] == [429, 200, 200]
    assert r.body["responses"][0]["headers"]["Retry-After"] == "3"
    graph.em.faults.add(Fault(kind="status", status=504, path=r"^/\$batch$"))
    r = await graph.call("POST", "/$batch", {"requests": reqs})
    assert r.status == 504


async def test_request_log_records_writes_with_user_agent_and_client_request_id(graph: Graph) -> None:
    u = await graph.create_user("xia")
    await graph.call(
        "PATCH",
        f"/users/{u['id']}",
        {"jobTitle": "a"},
        headers={"User-Agent": "idsync/0.1 (node=b; epoch=8)", "client-request-id": "crid-1"},
    )
    await graph.call(
        "POST",
        "/$batch",
        {
            "requests": [
                {
                    "id": "1",
                    "method": "PATCH",
                    "url": f"/users/{u['id']}",
                    "headers": {"Content-Type": "application/json"},
                    "body": {"jobTitle": "b"},
                }
            ]
        },
        headers={"User-Agent": "idsync/0.1 (node=b; epoch=9)", "client-request-id": "crid-2"},
    )
    async with graph.session.get(graph.server.url + "/_emulator/requests?writes=1") as r:
        log = (await r.json())["requests"]
    writes = [
        (e["method"], e["path"], e["status"], e["user_agent"], e["client_request_id"], e["item"]) for e in log
    ]
    assert writes == [
        ("POST", "/users", 201, "idsync-test/1 (node=t; epoch=1)", "", None),
        ("PATCH", f"/users/{u['id']}", 204, "idsync/0.1 (node=b; epoch=8)", "crid-1", None),
        ("PATCH", f"/users/{u['id']}", 204, "idsync/0.1 (node=b; epoch=9)", "crid-2", "1"),
    ]
    assert log[-1]["batch"]  # batch items name their envelope
    seqs = [e["seq"] for e in log]
    assert seqs == sorted(seqs)
    async with graph.session.get(graph.server.url + f"/_emulator/requests?since={seqs[-1]}") as r:
        assert [e["path"] for e in (await r.json())["requests"]] == ["/$batch"]


async def test_admin_state_reset_and_clock(graph: Graph) -> None:
    await graph.create_user("yan")
    async with graph.session.get(graph.server.url + "/_emulator/state") as r:
        state = await r.json()
    assert [u["userPrincipalName"] for u in state["users"]] == ["yan@example.com"]
    assert "passwordProfile" not in state["users"][0]
    async with graph.session.post(graph.server.url + "/_emulator/reset") as r:
        assert r.status == 200
    async with graph.session.get(graph.server.url + "/_emulator/state") as r:
        assert (await r.json())["users"] == []
    async with graph.session.post(graph.server.url + "/_emulator/clock", json={"advance": 7200}) as r:
        assert r.status == 200
    after = await graph.call("GET", "/users")
    assert after.status == 401 and "expired" in after.body["error"]["message"]


async def test_resource_unit_budget_throttles_reads_by_cost(graph: Graph) -> None:
    graph.em.configure(read_budget=5, read_window=10.0)
    assert (await graph.call("GET", "/users")).headers["x-ms-resource-unit"] == "2"  # 2 RU
    r = await graph.call("GET", "/users?$select=id")  # $select: 1 RU
    assert r.headers["x-ms-resource-unit"] == "1"
    assert (await graph.call("GET", "/users")).status == 200  # 5 of 5 used
    r = await graph.call("GET", "/domains")
    assert r.status == 429
    assert r.headers["x-ms-throttle-information"] == "ResourceUnitLimitExceeded"
    assert r.headers["x-ms-throttle-scope"].startswith("Tenant_Application/ReadWrite/")


async def test_replication_delay_hides_new_objects_until_it_passes(graph: Graph) -> None:
    graph.em.configure(replication_delay=30.0)
    u = await graph.create_user("zed")
    g = await graph.create_group("zeds")
    assert (await graph.call("GET", f"/users/{u['id']}")).status == 404
    assert (await graph.call("PATCH", f"/users/{u['id']}", {"jobTitle": "x"})).status == 404
    r = await graph.call(
        "POST",
        f"/groups/{g['id']}/members/$ref",
        {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{u['id']}"},
    )
    assert r.status == 400
    assert (
        r.body["error"]["message"]
        == "The source resource object or one of the objects being referenced don't exist."
    )
    # uniqueness is enforced at once: a retried create conflicts even before the object is visible
    r = await graph.call(
        "POST",
        "/users",
        {
            "accountEnabled": True,
            "displayName": "Z",
            "mailNickname": "zed",
            "userPrincipalName": "zed@example.com",
            "passwordProfile": {"password": "Xy7!long-enough"},
        },
    )
    assert r.status == 400 and r.body["error"]["details"][0]["code"] == "ObjectConflict"
    graph.em.advance_clock(31)
    graph.token = graph.em.auth.issue()
    assert (await graph.call("GET", f"/users/{u['id']}")).status == 200
    r = await graph.call(
        "POST",
        f"/groups/{g['id']}/members/$ref",
        {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{u['id']}"},
    )
    assert r.status == 204


async def test_latency_fault_delays_the_answer(graph: Graph) -> None:
    # ordering, not timing: a delayed call is processed after a later undelayed one
    rule = graph.em.faults.add(Fault(kind="latency", latency=0.5, path="^/domains$"))
    seq = graph.em.log.seq
    slow = asyncio.create_task(graph.call("GET", "/domains"))
    await asyncio.sleep(0.05)  # let the slow call reach the emulator first
    assert (await graph.call("GET", "/users")).status == 200
    assert (await slow).status == 200
    assert [e.path for e in graph.em.log.since(seq)] == ["/users", "/domains"]
    assert rule.hits == 1 and graph.em.faults.rules == []  # count 1: spent
    seq = graph.em.log.seq
    assert (await graph.call("GET", "/domains")).status == 200
    assert [e.path for e in graph.em.log.since(seq)] == ["/domains"]


async def test_fencing_check_finds_a_write_from_an_older_epoch(graph: Graph) -> None:
    u = await graph.create_user("ora")
    fencing = graph.server.url + "/_emulator/fencing"

    async def patch(epoch: int, title: str) -> None:
        ua = {"User-Agent": f"idsync/0.1 (node=n{epoch}; epoch={epoch})"}
        assert (await graph.call("PATCH", f"/users/{u['id']}", {"jobTitle": title}, headers=ua)).status == 204

    await patch(6, "a")
    await patch(7, "b")
    await patch(7, "c")
    async with graph.session.get(fencing) as r:
        assert (await r.json())["ok"] is True
    await patch(6, "late")  # the deposed leader writes after the new one did
    async with graph.session.get(fencing) as r:
        verdict = await r.json()
    assert verdict["ok"] is False
    assert [v["user_agent"] for v in verdict["violations"]] == ["idsync/0.1 (node=n6; epoch=6)"]


async def test_a_drop_rule_hitting_a_batch_item_drops_the_whole_batch(graph: Graph) -> None:
    graph.em.faults.add(Fault(kind="drop", in_batch=True, after=True, methods=["PATCH"]))
    u = await graph.create_user("pam")
    reqs = [
        {
            "id": "1",
            "method": "PATCH",
            "url": f"/users/{u['id']}",
            "headers": {"Content-Type": "application/json"},
            "body": {"jobTitle": "applied"},
        },
        {"id": "2", "method": "GET", "url": "/domains"},
    ]
    with pytest.raises(aiohttp.ClientError):
        await graph.call("POST", "/$batch", {"requests": reqs})
    # the item ran before the connection went: the caller cannot know, the log can
    assert (await graph.call("GET", f"/users/{u['id']}?$select=jobTitle")).body["jobTitle"] == "applied"
    notes = [e.note for e in graph.em.log.since(0) if e.item == "1"]
    assert notes == ["response dropped after processing"]
