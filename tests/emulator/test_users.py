"""Users: creation rules, reads, updates, conflicts, soft delete and restore."""

from __future__ import annotations

import pytest

from tests.emulator.conftest import PASSWORD, Graph, make_config


async def test_create_returns_201_with_default_properties(graph: Graph) -> None:
    u = await graph.create_user("ada", givenName="Ada", onPremisesImmutableId="aW1tMQ==")
    assert u["userPrincipalName"] == "ada@example.com"
    assert u["givenName"] == "Ada"
    assert "onPremisesImmutableId" not in u  # returned only on $select, as in Graph
    assert "passwordProfile" not in u
    r = await graph.call("GET", f"/users/{u['id']}?$select=id,onPremisesImmutableId,accountEnabled")
    assert r.body["onPremisesImmutableId"] == "aW1tMQ=="
    assert r.body["accountEnabled"] is True


async def test_required_properties_are_enforced(graph: Graph) -> None:
    base = {
        "accountEnabled": True,
        "displayName": "Bob",
        "mailNickname": "bob",
        "userPrincipalName": "bob@example.com",
        "passwordProfile": {"password": PASSWORD},
    }
    for missing in ("accountEnabled", "displayName", "mailNickname", "userPrincipalName"):
        body = {k: v for k, v in base.items() if k != missing}
        r = await graph.call("POST", "/users", body)
        assert r.status == 400, missing
        assert r.body["error"]["code"] == "Request_BadRequest"
        assert f"'{missing}'" in r.body["error"]["message"]
    r = await graph.call("POST", "/users", {k: v for k, v in base.items() if k != "passwordProfile"})
    assert r.status == 400
    assert "password must be specified" in r.body["error"]["message"]
    r = await graph.call("POST", "/users", {**base, "passwordProfile": {"password": "short"}})
    assert r.status == 400
    assert "complexity" in r.body["error"]["message"]
    assert (await graph.call("POST", "/users", base)).status == 201


async def test_upn_must_use_a_verified_domain_and_valid_characters(graph: Graph) -> None:
    body = {
        "accountEnabled": True,
        "displayName": "Eve",
        "mailNickname": "eve",
        "passwordProfile": {"password": PASSWORD},
    }
    r = await graph.call("POST", "/users", {**body, "userPrincipalName": "eve@contoso.com"})
    assert r.status == 400
    assert r.body["error"]["details"] == [
        {"code": "InvalidValue", "message": "", "target": "userPrincipalName"}
    ]
    assert "verified domain" in r.body["error"]["message"]
    r = await graph.call("POST", "/users", {**body, "userPrincipalName": "évé@example.com"})
    assert r.status == 400
    assert "userPrincipalName" in r.body["error"]["message"]
    r = await graph.call(
        "POST", "/users", {**body, "mailNickname": "x" * 65, "userPrincipalName": "e@example.com"}
    )
    assert r.status == 400
    assert "mailNickname" in r.body["error"]["message"]


async def test_unknown_readonly_and_unregistered_extension_properties_are_refused(graph: Graph) -> None:
    u = await graph.create_user("carl")
    r = await graph.call("PATCH", f"/users/{u['id']}", {"favouriteColour": "red"})
    assert r.status == 400
    assert r.body["error"]["code"] == "BadRequest"
    assert "favouriteColour" in r.body["error"]["message"]
    r = await graph.call("PATCH", f"/users/{u['id']}", {"proxyAddresses": ["SMTP:x@example.com"]})
    assert r.status == 400
    assert "read-only" in r.body["error"]["message"]
    r = await graph.call("PATCH", f"/users/{u['id']}", {"extension_0123456789abcdef0123456789abcdef_x": "1"})
    assert r.status == 400
    assert r.body["error"]["message"] == (
        "The following extension properties are not available: extension_0123456789abcdef0123456789abcdef_x."
    )


async def test_extension_property_is_written_and_selected(graph: Graph) -> None:
    ext = await graph.register_extension("idsyncAnchor")
    u = await graph.create_user("dora", **{ext: "guid-1"})
    r = await graph.call("GET", f"/users/{u['id']}")
    assert ext not in r.body  # directory extensions only on $select
    r = await graph.call("GET", f"/users/{u['id']}?$select=id,{ext}")
    assert r.body[ext] == "guid-1"
    r = await graph.call("GET", f"/users?$filter={ext} eq 'guid-1'&$select=id")
    assert [x["id"] for x in r.body["value"]] == [u["id"]]


async def test_get_by_id_or_upn_and_404_body(graph: Graph) -> None:
    u = await graph.create_user("fay")
    assert (await graph.call("GET", "/users/FAY@example.com")).body["id"] == u["id"]
    r = await graph.call("GET", "/users/nobody@example.com", headers={"client-request-id": "abc-1"})
    assert r.status == 404
    err = r.body["error"]
    assert err["code"] == "Request_ResourceNotFound"
    assert "nobody@example.com" in err["message"]
    assert err["innerError"]["client-request-id"] == "abc-1"
    assert err["innerError"]["request-id"] and err["innerError"]["date"]


async def test_list_select_filter_top_and_next_link(graph: Graph) -> None:
    graph.em.seed_users(25)
    r = await graph.call("GET", "/users?$top=10&$select=id,userPrincipalName")
    seen = []
    pages = 0
    while True:
        assert r.status == 200
        pages += 1
        for v in r.body["value"]:
            assert set(v) == {"id", "userPrincipalName"}
            seen.append(v["userPrincipalName"])
        nxt = r.body.get("@odata.nextLink")
        if not nxt:
            break
        assert nxt.startswith(graph.server.graph_url + "/users?")
        r = await graph.call("GET", nxt)
    assert pages == 3 and len(set(seen)) == 25
    r = await graph.call("GET", "/users?$filter=userPrincipalName eq 'USER3@example.com'")
    assert [v["userPrincipalName"] for v in r.body["value"]] == ["user3@example.com"]
    r = await graph.call(
        "GET", "/users?$filter=onPremisesImmutableId eq 'immuser4' or mail eq 'user5@example.com'"
    )
    assert sorted(v["userPrincipalName"] for v in r.body["value"]) == [
        "user4@example.com",
        "user5@example.com",
    ]
    ids = [v["id"] for v in (await graph.call("GET", "/users?$top=2")).body["value"]]
    r = await graph.call("GET", f"/users?$filter=id in ('{ids[0]}', '{ids[1]}')")
    assert sorted(v["id"] for v in r.body["value"]) == sorted(ids)
    r = await graph.call("GET", "/users?$top=1000")
    assert r.status == 400
    r = await graph.call("GET", "/users?$filter=city eq 'Paris'")
    assert r.status == 400
    assert r.body["error"]["code"] == "Request_UnsupportedQuery"
    r = await graph.call("GET", "/users?$select=id,nonsense")
    assert r.status == 400
    assert "nonsense" in r.body["error"]["message"]


async def test_patch_is_204_and_keeps_other_properties(graph: Graph) -> None:
    u = await graph.create_user("gus", jobTitle="Dev", department="R&D")
    r = await graph.call(
        "PATCH", f"/users/{u['id']}", {"jobTitle": "Lead", "@odata.type": "#microsoft.graph.user"}
    )
    assert r.status == 204 and r.body is None
    r = await graph.call("GET", f"/users/{u['id']}?$select=jobTitle,department")
    assert r.body["jobTitle"] == "Lead" and r.body["department"] == "R&D"
    r = await graph.call("PATCH", f"/users/{u['id']}", {"displayName": None})
    assert r.status == 400


async def test_uniqueness_conflicts_have_graphs_body(graph: Graph) -> None:
    a = await graph.create_user("hal", onPremisesImmutableId="aW1tLWhhbA==", mail="hal@example.com")
    body = {
        "accountEnabled": True,
        "displayName": "Hal 2",
        "mailNickname": "hal2",
        "passwordProfile": {"password": PASSWORD},
    }
    cases = [
        ({"userPrincipalName": "HAL@example.com"}, "userPrincipalName"),
        (
            {"userPrincipalName": "hal2@example.com", "onPremisesImmutableId": "aW1tLWhhbA=="},
            "onPremisesImmutableId",
        ),
        ({"userPrincipalName": "hal2@example.com", "mail": "Hal@example.com"}, "proxyAddresses"),
    ]
    for extra, prop in cases:
        r = await graph.call("POST", "/users", {**body, **extra})
        assert r.status == 400, prop
        err = r.body["error"]
        assert err["code"] == "Request_BadRequest"
        assert err["message"] == f"Another object with the same value for property {prop} already exists."
        assert err["details"][0]["code"] == "ObjectConflict" and err["details"][0]["target"] == prop
    b = await graph.create_user("ida")
    r = await graph.call("PATCH", f"/users/{b['id']}", {"userPrincipalName": "hal@example.com"})
    assert r.status == 400 and r.body["error"]["details"][0]["target"] == "userPrincipalName"
    # patching an object with its own values is not a conflict
    r = await graph.call("PATCH", f"/users/{a['id']}", {"onPremisesImmutableId": "aW1tLWhhbA=="})
    assert r.status == 204


async def test_soft_delete_restore_and_purge(graph: Graph) -> None:
    u = await graph.create_user("jon")
    g = await graph.create_group("team")
    r = await graph.call(
        "POST",
        f"/groups/{g['id']}/members/$ref",
        {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{u['id']}"},
    )
    assert r.status == 204
    assert (await graph.call("DELETE", f"/users/{u['id']}")).status == 204
    assert (await graph.call("GET", f"/users/{u['id']}")).status == 404
    r = await graph.call("GET", "/directory/deletedItems/microsoft.graph.user")
    assert [(v["id"], v["@odata.type"]) for v in r.body["value"]] == [(u["id"], "#microsoft.graph.user")]
    assert r.body["value"][0]["deletedDateTime"]
    assert (await graph.call("GET", f"/groups/{g['id']}/members")).body["value"] == []
    # the UPN is free while the user is deleted; restoring into a taken UPN conflicts
    other = await graph.create_user("jon")
    r = await graph.call("POST", f"/directory/deletedItems/{u['id']}/restore")
    assert r.status == 400 and r.body["error"]["details"][0]["code"] == "ObjectConflict"
    assert (await graph.call("DELETE", f"/users/{other['id']}")).status == 204
    assert (await graph.call("DELETE", f"/directory/deletedItems/{other['id']}")).status == 204
    r = await graph.call("POST", f"/directory/deletedItems/{u['id']}/restore")
    assert r.status == 200 and r.body["id"] == u["id"] and r.body["@odata.type"] == "#microsoft.graph.user"
    assert (await graph.call("GET", f"/users/{u['id']}")).status == 200
    members = (await graph.call("GET", f"/groups/{g['id']}/members")).body["value"]
    assert [m["id"] for m in members] == [u["id"]]
    r = await graph.call("POST", f"/directory/deletedItems/{other['id']}/restore")
    assert r.status == 404


async def test_deleted_users_are_purged_after_30_days(graph: Graph) -> None:
    u = await graph.create_user("kim")
    await graph.call("DELETE", f"/users/{u['id']}")
    assert graph.em.advance_clock(29 * 86400) == 0
    graph.token = graph.em.auth.issue()  # the old token expired with the clock
    assert (await graph.call("GET", f"/directory/deletedItems/{u['id']}")).status == 200
    assert graph.em.advance_clock(2 * 86400) == 1
    graph.token = graph.em.auth.issue()
    assert (await graph.call("GET", f"/directory/deletedItems/{u['id']}")).status == 404


async def test_restore_with_auto_reconcile_proxy_conflict(graph: Graph) -> None:
    u = await graph.create_user("lou", mail="lou@example.com")
    await graph.call("DELETE", f"/users/{u['id']}")
    await graph.create_user("lou2", mail="lou@example.com")  # takes the address meanwhile
    r = await graph.call("POST", f"/directory/deletedItems/{u['id']}/restore")
    assert r.status == 400 and r.body["error"]["details"][0]["target"] == "proxyAddresses"
    r = await graph.call(
        "POST", f"/directory/deletedItems/{u['id']}/restore", {"autoReconcileProxyConflict": True}
    )
    assert r.status == 200
    r = await graph.call("GET", f"/users/{u['id']}?$select=proxyAddresses")
    assert r.body["proxyAddresses"] == []


async def test_startswith_filter(graph: Graph) -> None:
    graph.em.seed_users(12)
    r = await graph.call(
        "GET", "/users?$filter=startswith(userPrincipalName,'USER1')&$select=userPrincipalName"
    )
    got = {v["userPrincipalName"] for v in r.body["value"]}
    assert got == {"user1@example.com", "user10@example.com", "user11@example.com"}
    r = await graph.call("GET", "/users?$filter=startswith(jobTitle,'Eng')")
    assert r.status == 400 and r.body["error"]["code"] == "Request_UnsupportedQuery"


async def test_objects_synced_by_entra_connect_are_read_only(graph: Graph) -> None:
    u = await graph.create_user("ned")
    g = await graph.create_group("synced")
    async with graph.session.post(
        graph.server.url + "/_emulator/synced", json={"ids": [u["id"], g["id"]]}
    ) as mark:
        assert (await mark.json())["marked"] == 2
    message = (
        "Unable to update the specified properties for on-premises mastered Directory Sync objects or "
        "objects currently undergoing migration."
    )
    r = await graph.call("PATCH", f"/users/{u['id']}", {"jobTitle": "x"})
    assert r.status == 400 and r.body["error"]["message"] == message
    assert (await graph.call("PATCH", f"/users/{u['id']}", {"usageLocation": "FR"})).status == 204
    assert (await graph.call("DELETE", f"/users/{u['id']}")).status == 400
    other = await graph.create_user("nel")
    r = await graph.call(
        "POST",
        f"/groups/{g['id']}/members/$ref",
        {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{other['id']}"},
    )
    assert r.status == 400 and r.body["error"]["message"] == message
    r = await graph.call("GET", f"/users/{u['id']}?$select=onPremisesSyncEnabled")
    assert r.body["onPremisesSyncEnabled"] is True


async def test_business_phones_holds_at_most_one_number(graph: Graph) -> None:
    # user.md: "Although this is a string collection, only one number can be set for this property."
    u = await graph.create_user("phil", businessPhones=["+1 555 0100"])
    r = await graph.call("PATCH", f"/users/{u['id']}", {"businessPhones": ["+1 555 0100", "+1 555 0101"]})
    assert r.status == 400 and "businessPhones" in r.body["error"]["message"]
    assert (await graph.call("GET", f"/users/{u['id']}")).body["businessPhones"] == ["+1 555 0100"]
    r = await graph.call("POST", "/users", {**_body("phyl"), "businessPhones": ["1", "2"]})
    assert r.status == 400
    assert (await graph.call("PATCH", f"/users/{u['id']}", {"businessPhones": []})).status == 204


async def test_formerly_synced_objects_keep_on_premises_extension_attributes_read_only(graph: Graph) -> None:
    was = await graph.create_user("olga")
    cloud = await graph.create_user("otto")
    async with graph.session.post(
        graph.server.url + "/_emulator/synced",
        json={
            "ids": [was["id"]],
            "synced": False,
            "props": {
                "onPremisesSamAccountName": "olga",
                "onPremisesExtensionAttributes": {"extensionAttribute1": "a"},
            },
        },
    ) as mark:
        assert (await mark.json())["marked"] == 1
    attrs = {"onPremisesExtensionAttributes": {"extensionAttribute1": "b"}}
    r = await graph.call("PATCH", f"/users/{was['id']}", attrs)
    assert r.status == 400 and r.body["error"]["code"] == "Request_BadRequest"
    assert (await graph.call("PATCH", f"/users/{was['id']}", {"jobTitle": "x"})).status == 204
    assert (await graph.call("PATCH", f"/users/{cloud['id']}", attrs)).status == 204
    r = await graph.call(
        "GET",
        f"/users/{was['id']}?$select=onPremisesSyncEnabled,onPremisesSamAccountName,onPremisesExtensionAttributes",
    )
    assert r.body["onPremisesSyncEnabled"] is False and r.body["onPremisesSamAccountName"] == "olga"
    assert r.body["onPremisesExtensionAttributes"] == {"extensionAttribute1": "a"}
    async with graph.session.post(
        graph.server.url + "/_emulator/synced", json={"ids": [was["id"]], "props": {"jobTitle": "x"}}
    ) as bad:
        assert bad.status == 400  # only on-premises properties can be seeded this way


async def test_user_mail_nickname_is_ascii_without_exchange_specials(graph: Graph) -> None:
    for nick in ("a@b", "a b", "jürgen", "x" * 65, "a;b"):
        r = await graph.call("POST", "/users", {**_body("ok"), "mailNickname": nick})
        assert r.status == 400 and "mailNickname" in r.body["error"]["message"], nick
    assert (await graph.call("POST", "/users", {**_body("dot.ted")})).status == 201


def _body(nick: str) -> dict[str, object]:
    return {
        "accountEnabled": True,
        "displayName": nick.title(),
        "mailNickname": nick,
        "userPrincipalName": f"{nick}@example.com",
        "passwordProfile": {"password": PASSWORD, "forceChangePasswordNextSignIn": False},
    }


@pytest.mark.parametrize("emulator_config", [make_config(domains=["contoso.com", "contoso.onmicrosoft.com"])])
async def test_the_onmicrosoft_domain_is_the_initial_one(graph: Graph) -> None:
    # resources/domain.md: isInitial marks the domain Microsoft created with the tenant.
    r = await graph.call("GET", "/domains")
    assert r.status == 200
    initial = {d["id"]: d["isInitial"] for d in r.body["value"]}
    assert initial == {"contoso.com": False, "contoso.onmicrosoft.com": True}
    org = (await graph.call("GET", "/organization")).body["value"][0]
    assert [d["name"] for d in org["verifiedDomains"] if d["isInitial"]] == ["contoso.onmicrosoft.com"]


async def test_date_time_offsets_read_back_in_utc(graph: Graph) -> None:
    # resources/user.md: a DateTimeOffset "is always in UTC time", e.g. 2014-01-01T00:00:00Z.
    u = await graph.create_user("hire", employeeHireDate="2024-03-01T09:00:00+02:00")
    r = await graph.call("GET", f"/users/{u['id']}?$select=employeeHireDate")
    assert r.body["employeeHireDate"] == "2024-03-01T07:00:00Z"
    r = await graph.call("PATCH", f"/users/{u['id']}", {"employeeHireDate": "2024-04-01T00:00:00.000Z"})
    assert r.status == 204
    r = await graph.call("GET", f"/users/{u['id']}?$select=employeeHireDate")
    assert r.body["employeeHireDate"] == "2024-04-01T00:00:00Z"
    for bad in ("2024-04-01", "next monday", 7):
        r = await graph.call("PATCH", f"/users/{u['id']}", {"employeeHireDate": bad})
        assert r.status == 400, bad
        assert "'employeeHireDate'" in r.body["error"]["message"]
