"""Application permissions from the token's `roles`, directory roles, and privileged users."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kiota_abstractions.authentication import BaseBearerTokenAuthenticationProvider
from msgraph import GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from idsync.emulator.app import EmulatorServer
from idsync.emulator.auth import _unb64
from idsync.emulator.config import DEFAULT_CLIENT_ID, DEFAULT_ROLES, DEFAULT_TENANT, service_principal_id
from idsync.emulator.roles import TEMPLATES, role_id
from tests.emulator.conftest import Graph
from tests.emulator.test_sdk import StaticToken, new_user, sdk_client

READER = "00000000-0000-4000-8000-0000000000b2"
ROLE_ADMIN = "00000000-0000-4000-8000-0000000000c3"
DIRECTORY_WRITER = "00000000-0000-4000-8000-0000000000d4"
OTHER_APP = "00000000-0000-4000-8000-0000000000e5"


def as_client(graph: Graph, client_id: str, roles: list[str]) -> str:
    """A token for a second app registered with `roles`."""
    graph.em.add_client(client_id, "s3cret-" + client_id[-2:], roles, name=f"app {client_id[-2:]}")
    return graph.em.auth.issue(client_id=client_id)


def denied(r: Any) -> bool:
    return bool(
        r.status == 403
        and r.body["error"]["code"] == "Authorization_RequestDenied"
        and r.body["error"]["message"] == "Insufficient privileges to complete the operation."
    )


async def test_the_token_endpoint_puts_each_clients_roles_in_the_token(graph: Graph) -> None:
    graph.em.add_client(READER, "reader-secret", ["User.Read.All"])
    url = f"{graph.server.url}/{DEFAULT_TENANT}/oauth2/v2.0/token"
    for cid, secret, roles in (
        (DEFAULT_CLIENT_ID, graph.em.cfg.client_secret, sorted(DEFAULT_ROLES)),
        (READER, "reader-secret", ["User.Read.All"]),
    ):
        form = {
            "grant_type": "client_credentials",
            "client_id": cid,
            "client_secret": secret,
            "scope": "https://graph.microsoft.com/.default",
        }
        async with graph.session.post(url, data=form) as r:
            assert r.status == 200
            token = (await r.json())["access_token"]
        import orjson

        claims = orjson.loads(_unb64(token.split(".")[1]))
        assert sorted(claims["roles"]) == roles and claims["appid"] == cid
        assert claims["oid"] == service_principal_id(cid)
    form["client_secret"] = "wrong"
    async with graph.session.post(url, data=form) as r:
        assert r.status == 401


async def test_each_route_needs_a_permission_its_graph_page_lists(graph: Graph) -> None:
    u = await graph.create_user("una")
    g = await graph.create_group("grp")
    reader = as_client(graph, READER, ["User.Read.All"])
    assert (await graph.call("GET", "/users", token=reader)).status == 200
    assert (await graph.call("GET", f"/users/{u['id']}", token=reader)).status == 200
    assert (await graph.call("GET", "/users/delta", token=reader)).status == 200
    assert denied(await graph.call("PATCH", f"/users/{u['id']}", {"jobTitle": "x"}, token=reader))
    assert denied(await graph.call("GET", "/groups", token=reader))
    assert denied(await graph.call("GET", "/domains", token=reader))
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{u['id']}"}
    assert denied(await graph.call("POST", f"/groups/{g['id']}/members/$ref", ref, token=reader))
    # refused calls change nothing
    assert (await graph.call("GET", f"/groups/{g['id']}/members")).body["value"] == []


async def test_directory_readwrite_may_update_but_not_delete_users(graph: Graph) -> None:
    # user-delete.md lists only User.ReadWrite.All ("Higher privileged: Not available")
    u = await graph.create_user("vic")
    tok = as_client(graph, DIRECTORY_WRITER, ["Directory.ReadWrite.All"])
    assert (await graph.call("PATCH", f"/users/{u['id']}", {"jobTitle": "x"}, token=tok)).status == 204
    assert denied(await graph.call("DELETE", f"/users/{u['id']}", token=tok))
    assert (await graph.call("DELETE", f"/users/{u['id']}")).status == 204


async def test_batch_items_are_checked_one_by_one(graph: Graph) -> None:
    reader = as_client(graph, READER, ["User.Read.All"])
    body = {
        "requests": [
            {"id": "1", "method": "GET", "url": "/users"},
            {"id": "2", "method": "GET", "url": "/groups"},
        ]
    }
    r = await graph.call("POST", "/$batch", body, token=reader)
    assert r.status == 200
    by_id = {x["id"]: x for x in r.body["responses"]}
    assert by_id["1"]["status"] == 200
    assert (
        by_id["2"]["status"] == 403 and by_id["2"]["body"]["error"]["code"] == "Authorization_RequestDenied"
    )


async def test_owned_by_lets_an_app_register_extensions_only_on_its_own_application(graph: Graph) -> None:
    other = as_client(graph, OTHER_APP, ["Application.ReadWrite.OwnedBy"])
    body = {"name": "x", "dataType": "String", "targetObjects": ["User"]}
    r = await graph.call(
        "POST", f"/applications(appId='{DEFAULT_CLIENT_ID}')/extensionProperties", body, token=other
    )
    assert denied(r)
    r = await graph.call("POST", f"/applications(appId='{OTHER_APP}')/extensionProperties", body, token=other)
    assert r.status == 201 and r.body["name"] == f"extension_{OTHER_APP.replace('-', '')}_x"
    # the catalogue needs Directory.Read.All, which this app lacks
    assert denied(
        await graph.call("POST", "/directoryObjects/getAvailableExtensionProperties", {}, token=other)
    )
    # the default app holds Directory.Read.All and sees it
    r = await graph.call("POST", "/directoryObjects/getAvailableExtensionProperties", {})
    assert [e["name"] for e in r.body["value"]] == [f"extension_{OTHER_APP.replace('-', '')}_x"]


async def test_directory_roles_are_listed_assigned_and_shown_in_member_of(graph: Graph) -> None:
    u = await graph.create_user("gina")
    g = await graph.create_group("ops")
    await graph.call(
        "POST",
        f"/groups/{g['id']}/members/$ref",
        {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{u['id']}"},
    )
    roles = (await graph.call("GET", "/directoryRoles")).body["value"]
    ga = next(r for r in roles if r["displayName"] == "Global Administrator")
    assert ga["roleTemplateId"] == TEMPLATES["Global Administrator"]
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{u['id']}"}
    # the default app only reads roles (RoleManagement.Read.Directory)
    assert denied(await graph.call("POST", f"/directoryRoles/{ga['id']}/members/$ref", ref))
    admin = as_client(graph, ROLE_ADMIN, ["RoleManagement.ReadWrite.Directory"])
    assert (
        await graph.call("POST", f"/directoryRoles/{ga['id']}/members/$ref", ref, token=admin)
    ).status == 204
    assert (
        await graph.call("POST", f"/directoryRoles/{ga['id']}/members/$ref", ref, token=admin)
    ).status == 400
    members = (await graph.call("GET", f"/directoryRoles/{ga['id']}/members")).body["value"]
    assert [(m["@odata.type"], m["id"]) for m in members] == [("#microsoft.graph.user", u["id"])]
    tid = TEMPLATES["Global Administrator"]
    assert (await graph.call("GET", f"/directoryRoles(roleTemplateId='{tid}')")).body["id"] == ga["id"]
    mo = (await graph.call("GET", f"/users/{u['id']}/memberOf")).body["value"]
    assert {(x["@odata.type"], x["id"]) for x in mo} == {
        ("#microsoft.graph.group", g["id"]),
        ("#microsoft.graph.directoryRole", ga["id"]),
    }
    r = await graph.call("DELETE", f"/directoryRoles/{ga['id']}/members/{u['id']}/$ref", token=admin)
    assert r.status == 204
    assert (await graph.call("GET", f"/directoryRoles/{ga['id']}/members")).body["value"] == []


async def test_a_privileged_user_refuses_sensitive_changes_from_an_app_without_a_higher_role(
    graph: Graph,
) -> None:
    em = graph.em
    admin = await graph.create_user("gadmin")
    helper = await graph.create_user("helper")
    em.grant_role("Global Administrator", admin["id"])
    em.grant_role("Directory Readers", helper["id"])
    for change in (
        {"accountEnabled": False},
        {"mobilePhone": "+1 555 0100"},
        {"businessPhones": ["+1 555 0101"]},
        {"otherMails": ["a@b.example"]},
        {"userPrincipalName": "gadmin2@example.com"},
        {"passwordProfile": {"password": "Xy7!another-one", "forceChangePasswordNextSignIn": False}},
    ):
        assert denied(await graph.call("PATCH", f"/users/{admin['id']}", change)), change
    assert (await graph.call("GET", f"/users/{admin['id']}?$select=accountEnabled")).body["accountEnabled"]
    # other properties, and users without a privileged role, are fine
    assert (await graph.call("PATCH", f"/users/{admin['id']}", {"jobTitle": "CISO"})).status == 204
    assert (await graph.call("PATCH", f"/users/{helper['id']}", {"accountEnabled": False})).status == 204
    assert denied(await graph.call("DELETE", f"/users/{admin['id']}"))
    # the app's service principal gets a higher role: now it may
    em.grant_role("Privileged Authentication Administrator", service_principal_id(DEFAULT_CLIENT_ID))
    assert (await graph.call("PATCH", f"/users/{admin['id']}", {"accountEnabled": False})).status == 204
    assert (await graph.call("DELETE", f"/users/{admin['id']}")).status == 204


async def test_a_user_administrator_app_manages_limited_admins_but_not_global_ones(graph: Graph) -> None:
    em = graph.em
    ua = await graph.create_user("uadmin")
    ga = await graph.create_user("gadmin")
    em.grant_role("User Administrator", ua["id"])
    em.grant_role("Global Administrator", ga["id"])
    async with aiohttp.ClientSession() as s:
        r = await s.post(
            f"{graph.server.url}/_emulator/roles",
            json={"role": "User Administrator", "principal": service_principal_id(DEFAULT_CLIENT_ID)},
        )
        assert r.status == 200
        held = (await r.json())["roles"]
    assert held["User Administrator"] == [ua["id"], service_principal_id(DEFAULT_CLIENT_ID)]
    assert (await graph.call("PATCH", f"/users/{ua['id']}", {"accountEnabled": False})).status == 204
    assert denied(await graph.call("PATCH", f"/users/{ga['id']}", {"accountEnabled": False}))
    # the service principal shows up as a role member, and can be looked up
    rid = role_id(em, "User Administrator")
    members = (await graph.call("GET", f"/directoryRoles/{rid}/members")).body["value"]
    assert "#microsoft.graph.servicePrincipal" in {m["@odata.type"] for m in members}
    sp = await graph.call("GET", f"/servicePrincipals(appId='{DEFAULT_CLIENT_ID}')")
    assert sp.body["id"] == service_principal_id(DEFAULT_CLIENT_ID)


# --- through msgraph-sdk ------------------------------------------------------------------------


@pytest.fixture
async def reader_client(server: EmulatorServer) -> AsyncIterator[GraphServiceClient]:
    server.emulator.add_client(READER, "x", ["User.Read.All"])
    auth = BaseBearerTokenAuthenticationProvider(StaticToken(server.emulator.auth.issue(client_id=READER)))
    c, http = sdk_client(server, auth)
    yield c
    await http.aclose()


async def test_sdk_sees_403_as_odata_error(reader_client: GraphServiceClient) -> None:
    page = await reader_client.users.get()
    assert page is not None and page.value == []
    with pytest.raises(ODataError) as e:
        await reader_client.users.post(new_user("sdk"))
    assert e.value.response_status_code == 403
    assert e.value.error is not None and e.value.error.code == "Authorization_RequestDenied"
    assert e.value.error.message == "Insufficient privileges to complete the operation."


async def test_an_app_finds_its_service_principal_roles_and_the_tenants_domains(graph: Graph) -> None:
    sp = service_principal_id(DEFAULT_CLIENT_ID)
    by_app = f"/servicePrincipals(appId='{DEFAULT_CLIENT_ID}')"
    assert (await graph.call("GET", f"{by_app}/memberOf")).body["value"] == []
    graph.em.grant_role("User Administrator", sp)
    held = (await graph.call("GET", f"{by_app}/memberOf")).body["value"]
    assert [(r["@odata.type"], r["displayName"]) for r in held] == [
        ("#microsoft.graph.directoryRole", "User Administrator")
    ]
    assert (await graph.call("GET", f"/servicePrincipals/{sp}/memberOf")).body["value"] == held
    listed = await graph.call("GET", f"/servicePrincipals?$filter=appId eq '{DEFAULT_CLIENT_ID}'")
    assert [x["id"] for x in listed.body["value"]] == [sp]
    assert (
        await graph.call("GET", "/servicePrincipals(appId='00000000-0000-4000-8000-000000000999')")
    ).status == 404
    org = (await graph.call("GET", "/organization")).body["value"][0]
    assert org["id"] == DEFAULT_TENANT
    assert [d["name"] for d in org["verifiedDomains"]] == ["example.com"]
    reader = as_client(graph, READER, ["User.Read.All"])
    assert denied(await graph.call("GET", "/organization", token=reader))
    assert denied(await graph.call("GET", f"{by_app}/memberOf", token=reader))
