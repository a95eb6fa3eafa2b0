"""The identity endpoints and Graph's 401s (raw HTTP; azure-identity is in test_sdk.py)."""

from __future__ import annotations

from typing import Any

import pytest

from idsync.emulator.config import EmulatorConfig
from tests.emulator.conftest import Graph, make_config


async def token_request(graph: Graph, tenant: str | None = None, **form: str) -> tuple[int, dict[str, Any]]:
    cfg = graph.em.cfg
    data = {
        "grant_type": "client_credentials",
        "client_id": cfg.client_id,
        "client_secret": cfg.client_secret,
        "scope": "https://graph.microsoft.com/.default",
        **form,
    }
    async with graph.session.post(
        f"{graph.server.url}/{tenant or cfg.tenant_id}/oauth2/v2.0/token", data=data
    ) as r:
        return r.status, await r.json()


async def test_discovery_document_points_at_the_emulator(graph: Graph) -> None:
    tid = graph.em.cfg.tenant_id
    async with graph.session.get(f"{graph.server.url}/{tid}/v2.0/.well-known/openid-configuration") as r:
        doc = await r.json()
    assert doc["token_endpoint"] == f"{graph.server.url}/{tid}/oauth2/v2.0/token"
    async with graph.session.get(
        f"{graph.server.url}/nosuch-tenant/v2.0/.well-known/openid-configuration"
    ) as r:
        assert r.status == 400


async def test_client_credentials_grant_and_its_errors(graph: Graph) -> None:
    status, body = await token_request(graph)
    assert status == 200 and body["token_type"] == "Bearer" and body["expires_in"] > 0
    r = await graph.call("GET", "/domains", token=body["access_token"])
    assert r.status == 200
    cases = [
        ({"client_secret": "nope"}, 401, "invalid_client"),
        ({"client_id": "11111111-1111-1111-1111-111111111111"}, 400, "unauthorized_client"),
        ({"scope": "http://127.0.0.1/.default"}, 400, "invalid_scope"),  # kiota's default scope guess
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
    ]
    for form, want_status, want_error in cases:
        status, body = await token_request(graph, **form)
        assert (status, body["error"]) == (want_status, want_error), form
        assert body["error_description"].startswith("AADSTS")
    status, body = await token_request(graph, tenant="other.example.org")
    assert (status, body["error"]) == (400, "invalid_tenant")


async def test_missing_garbage_and_forged_tokens_get_401_with_graph_body(graph: Graph) -> None:
    for token, message in [
        (None, "Access token is empty."),
        ("garbage", "IDX14100"),
        (graph.token[:-4] + "AAAA", "Invalid signature"),
    ]:
        r = await graph.call("GET", "/users", token=token)
        assert r.status == 401
        assert r.body["error"]["code"] == "InvalidAuthenticationToken"
        assert message in r.body["error"]["message"]
        assert "WWW-Authenticate" in r.headers


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return make_config(token_lifetime=60.0)


async def test_tokens_expire(graph: Graph) -> None:
    _, body = await token_request(graph)
    assert body["expires_in"] == 60
    assert (await graph.call("GET", "/domains", token=body["access_token"])).status == 200
    graph.em.advance_clock(61)
    r = await graph.call("GET", "/domains", token=body["access_token"])
    assert (
        r.status == 401 and r.body["error"]["message"] == "Lifetime validation failed, the token is expired."
    )
