"""msgraph-sdk's own request builders and models, unchanged, against the emulator."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.models.group import Group
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.password_profile import PasswordProfile
from msgraph.generated.models.reference_create import ReferenceCreate
from msgraph.generated.models.user import User
from msgraph.generated.users.delta.delta_request_builder import DeltaRequestBuilder
from msgraph.generated.users.users_request_builder import UsersRequestBuilder
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph_core import GraphClientFactory

from idsync.emulator.app import EmulatorServer
from idsync.emulator.faults import Fault
from tests.emulator.conftest import PASSWORD
from tests.emulator.tlsutil import PKIFiles


class StaticToken(AccessTokenProvider):
    """A bearer token handed out by the emulator itself."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def get_authorization_token(
        self, uri: str, additional_authentication_context: dict[str, Any] | None = None
    ) -> str:
        return self.token

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return AllowedHostsValidator(["127.0.0.1"])


def sdk_client(
    server: EmulatorServer, auth: Any, verify: Any = True
) -> tuple[GraphServiceClient, httpx.AsyncClient]:
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(base_url=server.graph_url, verify=verify)
    )
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = server.graph_url
    return GraphServiceClient(request_adapter=adapter), http


@pytest.fixture
async def client(server: EmulatorServer) -> AsyncIterator[GraphServiceClient]:
    auth = BaseBearerTokenAuthenticationProvider(StaticToken(server.emulator.auth.issue()))
    c, http = sdk_client(server, auth)
    yield c
    await http.aclose()


def new_user(nick: str, **kw: Any) -> User:
    return User(
        account_enabled=True,
        display_name=nick.title(),
        mail_nickname=nick,
        user_principal_name=f"{nick}@example.com",
        password_profile=PasswordProfile(password=PASSWORD, force_change_password_next_sign_in=False),
        **kw,
    )


async def test_create_get_list_with_sdk_models(client: GraphServiceClient) -> None:
    created = await client.users.post(
        new_user("ana", job_title="Dev", on_premises_immutable_id="aW1tLWFuYQ==")
    )
    assert created is not None and created.id and created.user_principal_name == "ana@example.com"
    got = await client.users.by_user_id(created.id).get()
    assert got is not None and got.display_name == "Ana" and got.job_title == "Dev"
    by_upn = await client.users.by_user_id("ana@example.com").get()
    assert by_upn is not None and by_upn.id == created.id
    q = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
        select=["id", "onPremisesImmutableId"], filter="onPremisesImmutableId eq 'aW1tLWFuYQ=='"
    )
    page = await client.users.get(request_configuration=RequestConfiguration(query_parameters=q))
    assert page is not None and page.value is not None
    assert [(u.id, u.on_premises_immutable_id) for u in page.value] == [(created.id, "aW1tLWFuYQ==")]
    await client.users.by_user_id(created.id).patch(User(job_title="Lead"))
    got = await client.users.by_user_id(created.id).get()
    assert got is not None and got.job_title == "Lead"


async def test_errors_surface_as_odata_error_with_graph_codes(client: GraphServiceClient) -> None:
    await client.users.post(new_user("bea"))
    with pytest.raises(ODataError) as e:
        await client.users.post(new_user("bea"))
    assert e.value.response_status_code == 400
    assert e.value.error is not None and e.value.error.code == "Request_BadRequest"
    assert e.value.error.details and e.value.error.details[0].code == "ObjectConflict"
    assert e.value.error.details[0].target == "userPrincipalName"
    with pytest.raises(ODataError) as e:
        await client.users.by_user_id("nobody@example.com").get()
    assert e.value.response_status_code == 404 and e.value.error is not None
    assert e.value.error.code == "Request_ResourceNotFound"
    with pytest.raises(ODataError) as e:
        await client.users.post(User(display_name="no required properties"))
    assert e.value.response_status_code == 400


async def test_delta_pages_with_sdk(client: GraphServiceClient, server: EmulatorServer) -> None:
    server.emulator.seed_users(250)
    q = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=["id", "displayName", "jobTitle"])
    resp = await client.users.delta.get(request_configuration=RequestConfiguration(query_parameters=q))
    seen: set[str] = set()
    pages = 0
    while True:
        assert resp is not None and resp.value is not None
        pages += 1
        seen |= {u.id for u in resp.value if u.id}
        if resp.odata_delta_link:
            link = resp.odata_delta_link
            break
        assert resp.odata_next_link and resp.odata_next_link.startswith(server.graph_url)
        resp = await client.users.delta.with_url(resp.odata_next_link).get()
    assert pages == 2 and len(seen) == 250
    some = next(iter(seen))
    await client.users.by_user_id(some).patch(User(job_title="Changed"))
    await client.users.by_user_id(sorted(seen)[1]).delete()
    resp = await client.users.delta.with_url(link).get()
    assert resp is not None and resp.value is not None
    by_id = {u.id: u for u in resp.value}
    assert by_id[some].job_title == "Changed"
    removed = by_id[sorted(seen)[1]].additional_data["@removed"]
    assert removed == {"reason": "changed"}


async def test_group_delta_members_and_ref_with_sdk(
    client: GraphServiceClient, server: EmulatorServer
) -> None:
    u = await client.users.post(new_user("cid"))
    assert u is not None and u.id
    g = await client.groups.post(
        Group(
            display_name="Crew",
            mail_nickname="crew",
            mail_enabled=False,
            security_enabled=True,
            group_types=[],
        )
    )
    assert g is not None and g.id
    await client.groups.by_group_id(g.id).members.ref.post(
        ReferenceCreate(odata_id=f"https://graph.microsoft.com/v1.0/directoryObjects/{u.id}")
    )
    with pytest.raises(ODataError) as e:
        await client.groups.by_group_id(g.id).members.ref.post(
            ReferenceCreate(odata_id=f"https://graph.microsoft.com/v1.0/directoryObjects/{u.id}")
        )
    assert e.value.response_status_code == 400
    resp = await client.groups.delta.get()
    assert resp is not None and resp.value is not None
    groups = {x.id: x for x in resp.value}
    members = groups[g.id].additional_data["members@delta"]
    assert [str(m["id"]) for m in members] == [u.id]  # kiota may turn GUID strings into UUIDs


async def test_azure_identity_gets_a_token_over_https_and_the_sdk_uses_it(
    pki: PKIFiles, tls_server: EmulatorServer
) -> None:
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ClientSecretCredential
    from azure.identity.aio import ClientSecretCredential as AsyncClientSecretCredential
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )

    cfg = tls_server.emulator.cfg
    common = {
        "authority": tls_server.authority,
        "disable_instance_discovery": True,  # msal would ask login.microsoftonline.com otherwise
        "connection_verify": str(pki.ca_cert),  # trust the test CA
    }
    # the synchronous credential blocks: run it off the event loop that serves the emulator
    sync_cred = ClientSecretCredential(cfg.tenant_id, cfg.client_id, cfg.client_secret, **common)
    token = await asyncio.to_thread(sync_cred.get_token, "https://graph.microsoft.com/.default")
    assert token.token.count(".") == 2 and token.expires_on > time.time()
    bad = ClientSecretCredential(cfg.tenant_id, cfg.client_id, "wrong", **common)
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        await asyncio.to_thread(bad.get_token, "https://graph.microsoft.com/.default")

    cred = AsyncClientSecretCredential(cfg.tenant_id, cfg.client_id, cfg.client_secret, **common)
    auth = AzureIdentityAuthenticationProvider(cred, scopes=["https://graph.microsoft.com/.default"])
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    client, http = sdk_client(tls_server, auth, verify=ctx)
    try:
        created = await client.users.post(new_user("dee"))
        assert created is not None and created.id
    finally:
        await http.aclose()
        await cred.close()


async def test_raw_batch_and_raw_delta_through_the_sdk_adapter(
    client: GraphServiceClient, server: EmulatorServer
) -> None:
    """The way idsync reads bulk data and writes batches: the SDK's adapter, raw JSON bytes."""
    import orjson
    from kiota_abstractions.method import Method
    from kiota_abstractions.request_information import RequestInformation

    adapter: Any = client.request_adapter  # send_primitive_async is typed too narrowly
    server.emulator.seed_users(3)
    ri = client.users.delta.to_get_request_information()
    raw = await adapter.send_primitive_async(ri, "bytes", {"XXX": ODataError})
    page = orjson.loads(raw)
    assert len(page["value"]) == 3 and page["@odata.deltaLink"].startswith(server.graph_url)

    def batch_request(payload: dict[str, Any]) -> RequestInformation:
        ri = RequestInformation(Method.POST, "{+baseurl}/$batch")
        ri.path_parameters["baseurl"] = adapter.base_url
        ri.set_stream_content(orjson.dumps(payload), "application/json")
        return ri

    reqs = [
        {
            "id": "1",
            "method": "PATCH",
            "url": f"/users/{page['value'][0]['id']}",
            "headers": {"Content-Type": "application/json"},
            "body": {"jobTitle": "batched"},
        },
        {"id": "2", "method": "GET", "url": "/users/ghost@example.com"},
    ]
    raw = await adapter.send_primitive_async(batch_request({"requests": reqs}), "bytes", {"XXX": ODataError})
    statuses = {r["id"]: r["status"] for r in orjson.loads(raw)["responses"]}
    assert statuses == {"1": 204, "2": 404}
    with pytest.raises(ODataError) as e:  # the batch itself refused: an ODataError like any other
        await adapter.send_primitive_async(
            batch_request(
                {"requests": [{"id": "1", "method": "GET", "url": "https://graph.microsoft.com/v1.0/users"}]}
            ),
            "bytes",
            {"XXX": ODataError},
        )
    assert (
        e.value.response_status_code == 400
        and e.value.error is not None
        and e.value.error.code == "BadRequest"
    )


async def test_sdk_retry_middleware_obeys_the_emulators_retry_after(
    client: GraphServiceClient, server: EmulatorServer
) -> None:
    """Time is the subject here: the SDK waits Retry-After (1 s) and retries on its own."""
    server.emulator.faults.add(Fault(kind="throttle", count=1, retry_after=1, path="^/domains$"))
    t0 = time.monotonic()
    resp = await client.domains.get()
    assert resp is not None and resp.value and resp.value[0].id == "example.com"
    assert time.monotonic() - t0 >= 1.0
    assert [e.status for e in server.emulator.log.since(0) if e.path == "/domains"] == [429, 200]
