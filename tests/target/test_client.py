"""The Graph client: authentication modes, token scope per cloud, the write budget's arithmetic."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from idsync.config.target import GraphSettings
from idsync.emulator.app import EmulatorServer
from idsync.emulator.config import DEFAULT_CLIENT_ID, DEFAULT_TENANT, EmulatorConfig
from idsync.target import GraphAuthError, GraphClient, GraphUnavailable
from idsync.target.auth import graph_scope
from tests.target.conftest import make_settings


async def test_a_wrong_secret_is_an_auth_error_naming_app_and_tenant(
    server: EmulatorServer, tls: tuple[Path, ssl.SSLContext, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "secret"
    bad.write_text("not-the-secret")
    client = GraphClient(make_settings(server, tls, client_secret_file=bad))
    with pytest.raises(
        GraphAuthError, match=rf"refused a token for app {DEFAULT_CLIENT_ID} in tenant {DEFAULT_TENANT}"
    ):
        await client.get("/users", what="users")
    await client.close()


async def test_anonymous_sends_no_token(
    server: EmulatorServer, tls: tuple[Path, ssl.SSLContext, Path]
) -> None:
    async with EmulatorServer(EmulatorConfig(anonymous=True)) as srv:
        srv.emulator.seed_users(2)
        async with GraphClient(GraphSettings(graph_endpoint=srv.url, anonymous=True)) as client:
            resp = await client.get("/users?$select=id", what="users")
        assert resp.status == 200 and len(resp.json()["value"]) == 2
    # The same client against an emulator that wants a token: Graph's 401, as an auth error.
    settings = GraphSettings(graph_endpoint=server.url, anonymous=True, ca_file=tls[0])
    async with GraphClient(settings) as client:
        with pytest.raises(GraphAuthError, match="InvalidAuthenticationToken: Access token is empty"):
            await client.get("/users", what="users")


async def test_a_private_ca_is_trusted_only_when_configured(server: EmulatorServer) -> None:
    settings = GraphSettings(graph_endpoint=server.url, anonymous=True)  # no ca_file
    async with GraphClient(settings, read_attempts=1) as client:
        with pytest.raises(GraphUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get("/users", what="users")
    assert server.emulator.log.since(0) == []


@pytest.mark.parametrize(
    ("endpoint", "scope"),
    [
        ("https://graph.microsoft.com", "https://graph.microsoft.com/.default"),
        ("https://graph.microsoft.us", "https://graph.microsoft.us/.default"),
        ("https://microsoftgraph.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn/.default"),
        ("https://127.0.0.1:8443", "https://graph.microsoft.com/.default"),
    ],
)
def test_the_token_scope_follows_the_cloud(endpoint: str, scope: str) -> None:
    assert graph_scope(GraphSettings(graph_endpoint=endpoint)) == scope
