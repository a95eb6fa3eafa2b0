"""$batch: Graph's validation of the whole batch, dependsOn and 424, per-item statuses."""

from __future__ import annotations

from typing import Any

from idsync.emulator.config import EmulatorConfig
from tests.emulator.conftest import PASSWORD, Graph

JSON = {"Content-Type": "application/json"}


def new_user(nick: str) -> dict[str, Any]:
    return {
        "accountEnabled": True,
        "displayName": nick,
        "mailNickname": nick,
        "userPrincipalName": f"{nick}@example.com",
        "passwordProfile": {"password": PASSWORD},
    }


async def test_items_answer_with_their_own_status(graph: Graph) -> None:
    u = await graph.create_user("ola")
    reqs = [
        {"id": "1", "method": "POST", "url": "/users", "headers": JSON, "body": new_user("pia")},
        {"id": "2", "method": "GET", "url": f"/users/{u['id']}?$select=id,displayName"},
        {"id": "3", "method": "PATCH", "url": f"users/{u['id']}", "headers": JSON, "body": {"jobTitle": "X"}},
        {"id": "4", "method": "POST", "url": "/users", "headers": JSON, "body": new_user("ola")},
        {"id": "5", "method": "GET", "url": "/users/ghost@example.com"},
    ]
    r = await graph.call("POST", "/$batch", {"requests": reqs})
    assert r.status == 200
    by_id = {i["id"]: i for i in r.body["responses"]}
    assert by_id["1"]["status"] == 201 and by_id["1"]["body"]["userPrincipalName"] == "pia@example.com"
    assert by_id["2"]["status"] == 200 and by_id["2"]["body"]["displayName"] == "Ola"
    assert by_id["3"]["status"] == 204 and "body" not in by_id["3"]
    assert by_id["4"]["status"] == 400
    assert by_id["4"]["body"]["error"]["details"][0]["code"] == "ObjectConflict"
    assert by_id["5"]["status"] == 404
    assert by_id["1"]["headers"]["Content-Type"].startswith("application/json")


async def test_batch_level_validation_runs_nothing(graph: Graph) -> None:
    def get(i: int) -> dict[str, Any]:
        return {"id": str(i), "method": "GET", "url": "/users"}

    bad_batches = {
        "21 requests": [get(i) for i in range(21)],
        "duplicate ids (case-insensitive)": [{**get(1), "id": "a"}, {**get(2), "id": "A"}],
        "absolute url": [{"id": "1", "method": "GET", "url": "https://graph.microsoft.com/v1.0/users"}],
        "write without Content-Type": [
            {"id": "1", "method": "POST", "url": "/users", "body": new_user("q1")}
        ],
        "unknown dependsOn": [{**get(1), "dependsOn": ["9"]}],
        "no requests": [],
    }
    for why, reqs in bad_batches.items():
        r = await graph.call("POST", "/$batch", {"requests": reqs})
        assert r.status == 400, why
        assert r.body["error"]["code"] == "BadRequest", why
    r = await graph.call(
        "POST",
        "/$batch",
        {"requests": [{"id": "1", "method": "POST", "url": "/users", "body": new_user("q2")}]},
    )
    assert r.body["error"]["message"] == "Write request id : 1 does not contain Content-Type header or body."
    # nothing ran, not even valid items in a refused batch
    mixed = [
        {"id": "1", "method": "POST", "url": "/users", "headers": JSON, "body": new_user("q3")},
        {"id": "2", "method": "GET", "url": "https://graph.microsoft.com/v1.0/users"},
    ]
    assert (await graph.call("POST", "/$batch", {"requests": mixed})).status == 400
    assert (await graph.call("GET", "/users/q3@example.com")).status == 404
    r = await graph.call("POST", "/$batch", raw=b"{not json", headers=JSON)
    assert r.status == 400


async def test_depends_on_and_failed_dependency(graph: Graph) -> None:
    reqs = [
        {"id": "1", "method": "POST", "url": "/users", "headers": JSON, "body": new_user("rex")},
        {
            "id": "2",
            "method": "PATCH",
            "url": "/users/rex@example.com",
            "headers": JSON,
            "body": {"jobTitle": "A"},
            "dependsOn": ["1"],
        },
        {
            "id": "3",
            "method": "POST",
            "url": "/users",
            "headers": JSON,
            "body": new_user("rex"),
            "dependsOn": ["2"],
        },
        {
            "id": "4",
            "method": "PATCH",
            "url": "/users/rex@example.com",
            "headers": JSON,
            "body": {"jobTitle": "B"},
            "dependsOn": ["3"],
        },
    ]
    r = await graph.call("POST", "/$batch", {"requests": reqs})
    statuses = {i["id"]: i["status"] for i in r.body["responses"]}
    assert statuses == {"1": 201, "2": 204, "3": 400, "4": 424}
    assert (await graph.call("GET", "/users/rex@example.com?$select=jobTitle")).body["jobTitle"] == "A"
    # a dependency listed later in the array still runs first
    reqs = [
        {"id": "b", "method": "GET", "url": "/users/sue@example.com", "dependsOn": ["a"]},
        {"id": "a", "method": "POST", "url": "/users", "headers": JSON, "body": new_user("sue")},
    ]
    r = await graph.call("POST", "/$batch", {"requests": reqs})
    assert {i["id"]: i["status"] for i in r.body["responses"]} == {"a": 201, "b": 200}


async def test_group_member_refs_in_a_batch(graph: Graph) -> None:
    ids = graph.em.seed_users(3)
    g = await graph.create_group("batchers")
    reqs = [
        {
            "id": str(n),
            "method": "POST",
            "url": f"/groups/{g['id']}/members/$ref",
            "headers": JSON,
            "body": {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{i}"},
        }
        for n, i in enumerate([*ids, ids[0]])
    ]
    r = await graph.call("POST", "/$batch", {"requests": reqs})
    assert sorted(i["status"] for i in r.body["responses"]) == [204, 204, 204, 400]


async def test_responses_are_shuffled_when_asked(graph: Graph) -> None:
    graph.em.configure(shuffle_batch_responses=True)
    reqs = [{"id": str(i), "method": "GET", "url": "/domains"} for i in range(20)]
    orders = set()
    for _ in range(3):
        r = await graph.call("POST", "/$batch", {"requests": reqs})
        orders.add(tuple(i["id"] for i in r.body["responses"]))
    assert any(o != tuple(str(i) for i in range(20)) for o in orders)


async def test_batch_items_are_throttled_individually(graph: Graph, emulator_config: EmulatorConfig) -> None:
    graph.em.configure(write_budget=5, write_window=150.0)
    reqs = [
        {"id": str(i), "method": "POST", "url": "/users", "headers": JSON, "body": new_user(f"t{i}")}
        for i in range(8)
    ]
    r = await graph.call("POST", "/$batch", {"requests": reqs})
    assert r.status == 200
    by_id = {i["id"]: i for i in r.body["responses"]}
    assert [by_id[str(i)]["status"] for i in range(8)] == [201] * 5 + [429] * 3
    throttled = by_id["7"]
    assert int(throttled["headers"]["Retry-After"]) >= 1
    assert throttled["body"]["error"]["code"] == "TooManyRequests"
    assert throttled["headers"]["x-ms-throttle-information"] == "WriteLimitExceeded"


async def test_a_stringified_json_body_is_refused_per_item(graph: Graph) -> None:
    import orjson

    reqs = [
        {
            "id": "1",
            "method": "POST",
            "url": "/users",
            "headers": JSON,
            "body": orjson.dumps(new_user("str")).decode(),
        }
    ]
    r = await graph.call("POST", "/$batch", {"requests": reqs})
    assert r.status == 200 and r.body["responses"][0]["status"] == 400
    assert (await graph.call("GET", "/users/str@example.com")).status == 404
