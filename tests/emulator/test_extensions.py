"""Directory extensions exist only once an application registers them, as in Graph."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kiota_abstractions.authentication import BaseBearerTokenAuthenticationProvider
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.directory_objects.get_available_extension_properties.get_available_extension_properties_post_request_body import (  # noqa: E501
    GetAvailableExtensionPropertiesPostRequestBody,
)
from msgraph.generated.models.extension_property import ExtensionProperty
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.user import User
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

from idsync.emulator.app import EmulatorServer
from idsync.emulator.config import EmulatorConfig, application_object_id, service_principal_id
from tests.emulator.conftest import Graph, make_config
from tests.emulator.test_sdk import StaticToken, new_user, sdk_client

APP = "00000000-0000-4000-8000-0000000000a1"
NODASH = APP.replace("-", "")


async def test_an_unregistered_extension_is_refused_everywhere_until_registered(graph: Graph) -> None:
    ext = f"extension_{NODASH}_idsyncAnchor"
    r = await graph.call("POST", "/users", _user_body("ann", **{ext: "a-1"}))
    assert r.status == 400 and r.body["error"]["code"] == "Request_BadRequest"
    assert r.body["error"]["message"] == f"The following extension properties are not available: {ext}."
    assert (await graph.call("GET", f"/users?$select=id,{ext}")).status == 400
    r = await graph.call("GET", f"/users?$filter={ext} eq 'a-1'")
    assert r.status == 400 and ext in r.body["error"]["message"]
    assert (await graph.call("GET", f"/groups/delta?$select=displayName,{ext}")).status == 400

    name = await graph.register_extension("idsyncAnchor")
    assert name == ext
    u = await graph.create_user("ann", **{ext: "a-1"})
    r = await graph.call("GET", f"/users?$filter={ext} eq 'a-1'&$select=id,{ext}")
    assert r.body["value"] == [{"id": u["id"], ext: "a-1"}]


async def test_registration_has_graphs_shape_and_both_addressings(graph: Graph) -> None:
    app_oid = application_object_id(APP)
    r = await graph.call("GET", f"/applications(appId='{APP}')")
    assert r.status == 200 and r.body["id"] == app_oid and r.body["appId"] == APP
    assert (await graph.call("GET", f"/applications/{app_oid}")).body["appId"] == APP
    r = await graph.call("GET", f"/applications?$filter=appId eq '{APP}'")
    assert [a["id"] for a in r.body["value"]] == [app_oid]

    r = await graph.call(
        "POST",
        f"/applications/{app_oid}/extensionProperties",
        {"name": "costCentre", "dataType": "Integer", "targetObjects": ["User"]},
    )
    assert r.status == 201
    made = r.body
    assert made["name"] == f"extension_{NODASH}_costCentre"
    assert made["dataType"] == "Integer" and made["targetObjects"] == ["User"]
    assert made["isMultiValued"] is False and made["isSyncedFromOnPremises"] is False
    assert made["@odata.context"].endswith(f"applications('{app_oid}')/extensionProperties/$entity")
    listed = (await graph.call("GET", f"/applications(appId='{APP}')/extensionProperties")).body["value"]
    assert [e["id"] for e in listed] == [made["id"]]
    r = await graph.call("POST", "/directoryObjects/getAvailableExtensionProperties", {})
    assert [e["name"] for e in r.body["value"]] == [made["name"]]
    r = await graph.call(
        "POST", "/directoryObjects/getAvailableExtensionProperties", {"isSyncedFromOnPremises": True}
    )
    assert r.body["value"] == []
    # a second registration of the same name is refused
    r = await graph.call(
        "POST",
        f"/applications/{app_oid}/extensionProperties",
        {"name": "costCentre", "dataType": "String", "targetObjects": ["User"]},
    )
    assert r.status == 400 and r.body["error"]["details"][0] == {
        "code": "ObjectConflict",
        "message": "",
        "target": "name",
    }
    assert "already exists" in r.body["error"]["message"]


async def test_data_type_and_target_objects_are_enforced(graph: Graph) -> None:
    num = await graph.register_extension("costCentre", "Integer", ("User",))
    u = await graph.create_user("bob", **{num: 4711})
    assert (await graph.call("PATCH", f"/users/{u['id']}", {num: "4711"})).status == 400
    assert (await graph.call("PATCH", f"/users/{u['id']}", {num: 2**40})).status == 400
    assert (await graph.call("PATCH", f"/users/{u['id']}", {num: None})).status == 204
    # registered for User only: a group does not have it
    r = await graph.call(
        "POST",
        "/groups",
        {"displayName": "G", "mailNickname": "g", "mailEnabled": False, "securityEnabled": True, num: 1},
    )
    assert r.status == 400 and "not available" in r.body["error"]["message"]
    for bad in (
        {"name": "x", "dataType": "Float", "targetObjects": ["User"]},
        {"name": "x", "dataType": "String", "targetObjects": ["Mailbox"]},
        {"name": "has-dash", "dataType": "String", "targetObjects": ["User"]},
        {"dataType": "String", "targetObjects": ["User"]},
    ):
        r = await graph.call("POST", f"/applications(appId='{APP}')/extensionProperties", bad)
        assert r.status == 400, bad


async def test_a_deleted_extension_is_gone(graph: Graph) -> None:
    ext = await graph.register_extension("idsyncAnchor")
    u = await graph.create_user("cid", **{ext: "x"})
    listed = (await graph.call("GET", f"/applications(appId='{APP}')/extensionProperties")).body["value"]
    r = await graph.call("DELETE", f"/applications(appId='{APP}')/extensionProperties/{listed[0]['id']}")
    assert r.status == 204
    assert (await graph.call("GET", f"/users/{u['id']}?$select={ext}")).status == 400
    assert (await graph.call("PATCH", f"/users/{u['id']}", {ext: "y"})).status == 400
    r = await graph.call("DELETE", f"/applications(appId='{APP}')/extensionProperties/{listed[0]['id']}")
    assert r.status == 404


async def test_registration_survives_a_restart_and_reset_keeps_preregistered_ones(tmp_path: object) -> None:
    from pathlib import Path

    state = str(Path(str(tmp_path)) / "state.json")
    async with EmulatorServer(make_config(), state_path=state) as srv:
        from idsync.emulator.applications import register

        register(srv.emulator, srv.emulator.cfg.clients()[0], "kept")
        srv.emulator.grant_role("User Administrator", service_principal_id(APP))
    async with EmulatorServer(make_config(), state_path=state) as srv:
        assert f"extension_{NODASH}_kept" in srv.emulator.store.extensions
        assert srv.emulator.role_holders()["User Administrator"] == [service_principal_id(APP)]
    cfg = make_config(preregister_extensions=["idsyncAnchor"])
    async with EmulatorServer(cfg) as srv:
        assert list(srv.emulator.store.extensions) == [f"extension_{NODASH}_idsyncAnchor"]
        srv.emulator.reset()
        assert list(srv.emulator.store.extensions) == [f"extension_{NODASH}_idsyncAnchor"]


def test_nothing_is_preregistered_by_default() -> None:
    assert EmulatorConfig().preregister_extensions == []


# --- through msgraph-sdk's own request builders and models ------------------------------------


@pytest.fixture
async def client(server: EmulatorServer) -> AsyncIterator[GraphServiceClient]:
    auth = BaseBearerTokenAuthenticationProvider(StaticToken(server.emulator.auth.issue()))
    c, http = sdk_client(server, auth)
    yield c
    await http.aclose()


async def test_register_and_use_an_extension_with_sdk_models(client: GraphServiceClient) -> None:
    ext = f"extension_{NODASH}_idsyncAnchor"
    with pytest.raises(ODataError) as e:
        await client.users.post(new_user("dan", additional_data={ext: "a"}))
    assert e.value.response_status_code == 400 and e.value.error is not None
    assert e.value.error.message == f"The following extension properties are not available: {ext}."

    app = await client.applications_with_app_id(APP).get()
    assert app is not None and app.id == application_object_id(APP)
    made = await client.applications.by_application_id(app.id).extension_properties.post(
        ExtensionProperty(name="idsyncAnchor", data_type="String", target_objects=["User", "Group"])
    )
    assert made is not None and made.name == ext and made.target_objects == ["User", "Group"]
    avail = await client.directory_objects.get_available_extension_properties.post(
        GetAvailableExtensionPropertiesPostRequestBody()
    )
    assert avail is not None and [p.name for p in avail.value or []] == [ext]
    u = await client.users.post(new_user("dan", additional_data={ext: "a"}))
    assert u is not None and u.id
    await client.users.by_user_id(u.id).patch(User(additional_data={ext: "b"}))
    q = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=["id", ext])
    got = await client.users.by_user_id(u.id).get(RequestConfiguration(query_parameters=q))
    assert got is not None and got.additional_data[ext] == "b"


def _user_body(nick: str, **extra: object) -> dict[str, object]:
    return {
        "accountEnabled": True,
        "displayName": nick.title(),
        "mailNickname": nick,
        "userPrincipalName": f"{nick}@example.com",
        "passwordProfile": {"password": "Xy7!long-enough", "forceChangePasswordNextSignIn": False},
        **extra,
    }


async def test_unregistered_extensions_in_queries_can_be_ignored_instead(graph: Graph) -> None:
    # Microsoft documents neither answer: both are configurable, the error is the default
    ext = f"extension_{NODASH}_nothere"
    u = await graph.create_user("eve")
    graph.em.configure(unregistered_extension_query="ignore")
    r = await graph.call("GET", f"/users/{u['id']}?$select=id,displayName,{ext}")
    assert r.status == 200 and ext not in r.body and r.body["displayName"] == "Eve"
    r = await graph.call("GET", f"/users?$filter={ext} eq 'x'")
    assert r.status == 200 and r.body["value"] == []
    r = await graph.call("GET", f"/users?$filter={ext} eq 'x' or displayName eq 'Eve'&$select=id")
    assert [x["id"] for x in r.body["value"]] == [u["id"]]
    # bodies stay strict: a write of an unregistered extension is always refused
    assert (await graph.call("PATCH", f"/users/{u['id']}", {ext: "x"})).status == 400
    graph.em.configure(unregistered_extension_query="error")
    assert (await graph.call("GET", f"/users/{u['id']}?$select={ext}")).status == 400
