"""Fixtures: the Graph emulator over TLS in-process, a migrated store, a target connector, fences."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from idsync.config.target import GraphSettings
from idsync.emulator.app import EmulatorServer
from idsync.emulator.config import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_TENANT, EmulatorConfig
from idsync.emulator.core import Emulator
from idsync.emulator.model import DirObject
from idsync.fencing import Fenced
from idsync.store import fence, migrate
from idsync.store.db import Store
from idsync.target.client import GraphClient
from idsync.target.graph import GraphTarget
from tests.target.tls import make_tls

EPOCH = 7
NODE = "a"
ANCHOR_EXT = "idsyncSourceAnchor"


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext, Path]:
    d = tmp_path_factory.mktemp("tls")
    ca, ctx = make_tls(d)
    secret = d / "client-secret"
    secret.write_text(DEFAULT_CLIENT_SECRET + "\n")
    return ca, ctx, secret


@pytest.fixture
async def server(tls: tuple[Path, ssl.SSLContext, Path]) -> AsyncIterator[EmulatorServer]:
    """The emulator on https://127.0.0.1:<port>, with the group anchor extension registered."""
    # pre-registered until idsync registers it itself (preflight --fix)
    cfg = EmulatorConfig(preregister_extensions=[ANCHOR_EXT])
    async with EmulatorServer(cfg, ssl_context=tls[1]) as srv:
        yield srv


@pytest.fixture
def em(server: EmulatorServer) -> Emulator:
    return server.emulator


def make_settings(server: EmulatorServer, tls: tuple[Path, ssl.SSLContext, Path], **kw: Any) -> GraphSettings:
    """GraphSettings for the emulator: client secret from a file, the test CA, the anchor extension."""
    base: dict[str, Any] = {
        "graph_endpoint": server.url,
        "authority_host": server.url,
        "tenant_id": DEFAULT_TENANT,
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret_file": tls[2],
        "ca_file": tls[0],
        "anchor_extension_attribute": server.emulator.cfg.extension_name(ANCHOR_EXT),
    }
    base.update(kw)
    return GraphSettings(**base)


@pytest.fixture
def settings(server: EmulatorServer, tls: tuple[Path, ssl.SSLContext, Path]) -> GraphSettings:
    return make_settings(server, tls)


@pytest.fixture
async def target(settings: GraphSettings) -> AsyncIterator[GraphTarget]:
    """The connector with short backoffs (the waits themselves are not under test)."""
    client = GraphClient(settings, node=NODE, backoff_base=0.02, read_attempts=3)
    async with GraphTarget(settings, node=NODE, client=client) as t:
        yield t


@pytest.fixture
def store(pg_dsn: str, pg_schema: str) -> Iterator[Store]:
    """A migrated instance schema whose fence row says node a leads at epoch 7."""
    with Store(pg_dsn, pg_schema, max_size=8) as st:
        migrate.migrate(st)
        with st.transaction() as conn:
            fence.renew(conn, EPOCH, NODE, 600)
        yield st


class TestFence:
    """A fence that holds until told otherwise; `on_ensure` runs at every check (hooks for tests)."""

    __test__ = False

    def __init__(self, epoch: int = EPOCH, node: str = NODE) -> None:
        self._epoch, self._node = epoch, node
        self.checks = 0
        self.confirmations = 0  # fresh quorum confirmations asked for (before hard deletes)
        self.broken: str | None = None
        self.on_ensure: Callable[[int], None] | None = None

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def node(self) -> str:
        return self._node

    def ensure(self) -> None:
        self.checks += 1
        if self.on_ensure is not None:
            self.on_ensure(self.checks)
        if self.broken:
            raise Fenced(self._epoch, self.broken)

    def remaining(self) -> float:
        return 0.0 if self.broken else 60.0

    def write_deadline(self) -> float:
        """The transport's check at the wire (not counted in `checks`: hooks count the exporter's)."""
        if self.broken:
            raise Fenced(self._epoch, self.broken)
        return 60.0

    def confirm_now(self) -> None:
        self.confirmations += 1
        if self.broken:
            raise Fenced(self._epoch, self.broken)


@pytest.fixture
def lease() -> TestFence:
    return TestFence()


# --- building directory content and queue rows ------------------------------------------------


def add_user(em: Emulator, nick: str, immutable: str | None = None, **props: Any) -> DirObject:
    """A user straight into the emulator's directory (as if created earlier, by anyone)."""
    p: dict[str, Any] = {
        "accountEnabled": True,
        "displayName": nick.title(),
        "mailNickname": nick,
        "userPrincipalName": f"{nick}@example.com",
        "userType": "Member",
    }
    if immutable is not None:
        p["onPremisesImmutableId"] = immutable
    p.update(props)
    return em.store.add("user", p)


def add_group(
    em: Emulator, nick: str, anchor: str | None = None, members: tuple[DirObject, ...] = ()
) -> DirObject:
    p: dict[str, Any] = {
        "displayName": nick.title(),
        "mailNickname": nick,
        "mailEnabled": False,
        "securityEnabled": True,
        "groupTypes": [],
    }
    if anchor is not None:
        p[em.cfg.extension_name(ANCHOR_EXT)] = anchor
    g = em.store.add("group", p)
    for m in members:
        em.store.add_member(g, m)
    return g


def queue(
    store: Store,
    object_type: str,
    anchor: str,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    target_id: str | None = None,
    member_anchor: str = "",
) -> None:
    """A pending operation, as the sync engine's diff writes it."""
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO pending_export (object_type, anchor, kind, member_anchor, target_id, payload)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (object_type, anchor, kind, member_anchor)"
            " DO UPDATE SET payload = excluded.payload, target_id = excluded.target_id,"
            " exported_at = NULL, claimed_epoch = NULL, not_before = NULL",
            (object_type, anchor, kind, member_anchor, target_id, orjson.dumps(payload or {}).decode()),
        )


def link(store: Store, object_type: str, anchor: str, target_id: str) -> None:
    """The sync engine's join of a source anchor to a target object."""
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO sync_link (anchor, object_type, target_id, how) VALUES (%s, %s, %s, 'created')"
            " ON CONFLICT (anchor) DO UPDATE SET target_id = excluded.target_id",
            (anchor, object_type, target_id),
        )


def rearm(store: Store, *kinds: str) -> None:
    """Make exported operations (of `kinds`, else all) pending again, as if no import confirmed them."""
    with store.transaction() as conn:
        conn.execute(
            "UPDATE pending_export SET exported_at = NULL, claimed_epoch = NULL, not_before = NULL"
            " WHERE cardinality(%s::text[]) = 0 OR kind = ANY(%s)",
            (list(kinds), list(kinds)),
        )


def user_payload(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "accountEnabled": True,
        "displayName": f"Person {n}",
        "mailNickname": f"p{n}",
        "userPrincipalName": f"p{n}@example.com",
        "onPremisesImmutableId": f"imm-{n}",
        "department": "Sales",
        **extra,
    }


def group_payload(em: Emulator, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "displayName": f"Team {n}",
        "mailNickname": f"team{n}",
        "mailEnabled": False,
        "securityEnabled": True,
        em.cfg.extension_name(ANCHOR_EXT): f"g-{n}",
        **extra,
    }
