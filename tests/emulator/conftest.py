"""Fixtures: an emulator started in-process on a free port, and a small raw-HTTP client for it."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from idsync.emulator.app import EmulatorServer
from idsync.emulator.config import EmulatorConfig
from idsync.emulator.core import Emulator
from tests.emulator.tlsutil import PKIFiles, make_pki

PASSWORD = "Xy7!long-enough"


@dataclass
class Resp:
    """A raw response: status, parsed JSON body (None when empty) and headers."""

    status: int
    body: Any
    headers: dict[str, str]


class Graph:
    """A raw Graph client bound to one emulator (bearer token included)."""

    def __init__(self, server: EmulatorServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.em: Emulator = server.emulator
        self.session = session
        self.token = self.em.auth.issue()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        token: str | None = "default",
        raw: bytes | None = None,
    ) -> Resp:
        """`path` relative to /v1.0 (or an absolute URL, e.g. a nextLink)."""
        url = path if path.startswith("http") else self.server.graph_url + path
        h = {"User-Agent": "idsync-test/1 (node=t; epoch=1)"}
        if token == "default":
            h["Authorization"] = f"Bearer {self.token}"
        elif token is not None:
            h["Authorization"] = f"Bearer {token}"
        data = raw
        if body is not None:
            data = orjson.dumps(body)
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        async with self.session.request(method, url, data=data, headers=h) as r:
            content = await r.read()
            return Resp(r.status, orjson.loads(content) if content else None, dict(r.headers))

    async def create_user(self, nick: str, **extra: Any) -> dict[str, Any]:
        """POST /users with valid required properties; asserts 201."""
        body = {
            "accountEnabled": True,
            "displayName": nick.title(),
            "mailNickname": nick,
            "userPrincipalName": f"{nick}@example.com",
            "passwordProfile": {"password": PASSWORD, "forceChangePasswordNextSignIn": False},
            **extra,
        }
        r = await self.call("POST", "/users", body)
        assert r.status == 201, r.body
        return dict(r.body)

    async def register_extension(
        self, name: str, data_type: str = "String", targets: tuple[str, ...] = ("User", "Group")
    ) -> str:
        """Register a directory extension on the default client's application the way Graph
        documents it (application-post-extensionproperty.md); returns its full name."""
        r = await self.call(
            "POST",
            f"/applications(appId='{self.em.cfg.client_id}')/extensionProperties",
            {"name": name, "dataType": data_type, "targetObjects": list(targets)},
        )
        assert r.status == 201, r.body
        return str(r.body["name"])

    async def create_group(self, nick: str, **extra: Any) -> dict[str, Any]:
        """POST /groups for a security group; asserts 201."""
        body = {
            "displayName": nick.title(),
            "mailNickname": nick,
            "mailEnabled": False,
            "securityEnabled": True,
            **extra,
        }
        r = await self.call("POST", "/groups", body)
        assert r.status == 201, r.body
        return dict(r.body)


def make_config(**overrides: Any) -> EmulatorConfig:
    """Test defaults: throttling off unless a test turns it on."""
    cfg = EmulatorConfig(write_budget=0, read_budget=0)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    """Override in a test module to start the emulator differently."""
    return make_config()


@pytest.fixture
async def server(emulator_config: EmulatorConfig) -> AsyncIterator[EmulatorServer]:
    """An emulator on a free loopback port (plain HTTP)."""
    srv = EmulatorServer(emulator_config)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def graph(server: EmulatorServer) -> AsyncIterator[Graph]:
    """A raw client for `server`."""
    async with aiohttp.ClientSession() as s:
        yield Graph(server, s)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKIFiles:
    """A test CA and a 127.0.0.1 server certificate."""
    return make_pki(Path(tmp_path_factory.mktemp("pki")))


@pytest.fixture
async def tls_server(pki: PKIFiles, emulator_config: EmulatorConfig) -> AsyncIterator[EmulatorServer]:
    """An emulator serving HTTPS with the test certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    srv = EmulatorServer(emulator_config, ssl_context=ctx)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()
