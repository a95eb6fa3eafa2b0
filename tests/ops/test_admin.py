"""The admin HTTP API: each endpoint's status code in each role, the token, /metrics and /pending.

The status-code tests serve a fixed `NodeSnapshot` over real HTTP (the decisions are pure
functions of it); the last tests drive real `Node`s over the real ZooKeeper and PostgreSQL and
read the API through `LiveState`, as the daemon will.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from idsync.config.errors import ConfigError
from idsync.config.service import AdminSettings
from idsync.ha.loop import HaLoop
from idsync.ha.records import SwitchoverRequest
from idsync.runtime.admin import AdminServer, LiveState, NodeSnapshot, snapshot_from
from idsync.runtime.node import Node
from idsync.runtime.pipeline import CycleReport
from idsync.store.db import Store
from idsync.store.pending import PendingExport
from tests.ha.test_election import make_node  # noqa: F401  (fixture)
from tests.ha.test_node import RecordingPipeline, cycle, stores  # noqa: F401  (fixture)
from tests.harness.ports import free_port

INTERVAL = 2.0

LEADER = NodeSnapshot(
    node="a",
    role="leader",
    epoch=7,
    lease_valid=True,
    healthy=True,
    last_cycle_ok=True,
    since_success=1.0,
    since_loop=1.0,
    interval=INTERVAL,
    pending={"create": 3, "update": 0},
    leader="a",
    sentence="leader at epoch 7: exporting",
)
STAGING = dataclasses.replace(
    LEADER, node="b", role="staging", lease_valid=False, sentence="staging: leader is a (epoch 7)"
)
STAGING_UNHEALTHY = dataclasses.replace(
    STAGING,
    healthy=False,
    last_cycle_ok=False,
    since_success=30.0,
    reason="last cycle failed (LDAPSocketOpenError: dc1 down)",
)
FENCED_LEADER = dataclasses.replace(LEADER, lease_valid=False, zookeeper_connected=False)
HUNG = dataclasses.replace(STAGING, since_loop=10_000.0, since_success=10_000.0)
STARTING = dataclasses.replace(
    STAGING,
    role="starting",
    healthy=False,
    last_cycle_ok=False,
    since_success=None,
    since_loop=None,
    reason="no cycle yet",
    uptime=5.0,
)

ROLES = {
    "leader": LEADER,
    "staging": STAGING,
    "staging-unhealthy": STAGING_UNHEALTHY,
    "fenced-leader": FENCED_LEADER,
    "hung": HUNG,
    "starting": STARTING,
}
# role -> (health, leader, staging, readiness, liveness)
EXPECTED = {
    "leader": (200, 200, 503, 200, 200),
    "staging": (200, 503, 200, 200, 200),
    "staging-unhealthy": (503, 503, 503, 503, 200),
    "fenced-leader": (200, 503, 503, 503, 200),
    "hung": (503, 503, 200, 200, 503),
    "starting": (503, 503, 503, 503, 200),
}
ENDPOINTS = ("/health", "/leader", "/staging", "/readiness", "/liveness")


class FixedState:
    """An `AdminState` that returns whatever snapshot the test sets."""

    def __init__(self, snap: NodeSnapshot) -> None:
        self.snap = snap

    def snapshot(self) -> NodeSnapshot:
        return self.snap


def settings(listen: str | None = None, token_file: Path | None = None) -> AdminSettings:
    return AdminSettings(listen=listen or f"127.0.0.1:{free_port()}", token_file=token_file)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    servers: list[AdminServer] = []

    async def start(state: Any, admin: AdminSettings | None = None, **kw: Any) -> AdminServer:
        server = AdminServer(state, admin or settings(), **kw)
        await server.start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        await s.stop()


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers or {}) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


@pytest.mark.parametrize("role", list(EXPECTED))
async def test_status_codes_in_each_role(role: str, serve: Callable[..., Any]) -> None:
    server = await serve(FixedState(ROLES[role]))
    got = []
    for path in ENDPOINTS:
        status, data = await get(server.url + path)
        got.append(status)
        assert data["role"] == ROLES[role].role and data["epoch"] == ROLES[role].epoch
        assert (status == 503) == bool(data["reasons"]), (path, data)
    assert tuple(got) == EXPECTED[role]


async def test_reasons_say_why(serve: Callable[..., Any]) -> None:
    state = FixedState(FENCED_LEADER)
    server = await serve(state)
    status, data = await get(server.url + "/leader")
    assert status == 503
    assert data["reasons"] == ["leader at epoch 7 without a valid lease (fenced: no export may start)"]
    assert data["lease_valid"] is False and data["zookeeper_connected"] is False
    state.snap = STAGING_UNHEALTHY
    status, data = await get(server.url + "/staging")
    assert data["reasons"] == ["not healthy: last cycle failed (LDAPSocketOpenError: dc1 down)"]
    status, data = await get(server.url + "/health")
    assert data["reasons"] == [
        "last cycle failed: last cycle failed (LDAPSocketOpenError: dc1 down)",
        "last successful cycle 30s ago (more than 6s)",
    ]
    state.snap = dataclasses.replace(STARTING, uptime=500.0)  # never finished a turn in 500 s
    status, data = await get(server.url + "/liveness")
    assert status == 503 and "no turn of the main loop finished in 500s" in data["reasons"][0]


async def test_bearer_token(tmp_path: Path, serve: Callable[..., Any]) -> None:
    token = tmp_path / "admin-token"
    token.write_text("s3cret-token\n")
    server = await serve(FixedState(LEADER), settings(token_file=token))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
        for path in (*ENDPOINTS, "/metrics", "/pending"):
            status, data = await get(server.url + path, headers)
            assert status == 401, (path, headers)
            assert data == {"error": "a valid bearer token is required"}
    status, _ = await get(server.url + "/leader", {"Authorization": "Bearer s3cret-token"})
    assert status == 200
    token.write_text("rotated\n")  # a rotated file takes effect without a restart
    assert (await get(server.url + "/leader", {"Authorization": "Bearer s3cret-token"}))[0] == 401
    assert (await get(server.url + "/leader", {"Authorization": "Bearer rotated"}))[0] == 200


async def test_off_loopback_needs_a_token(tmp_path: Path, serve: Callable[..., Any]) -> None:
    with pytest.raises(ConfigError, match="not a loopback address"):
        await serve(FixedState(LEADER), settings(listen=f"0.0.0.0:{free_port()}"))
    token = tmp_path / "t"
    token.write_text("tok")
    server = await serve(FixedState(LEADER), settings(f"0.0.0.0:{free_port()}", token))
    port = server.url.rsplit(":", 1)[1]
    assert (await get(f"http://127.0.0.1:{port}/leader"))[0] == 401


async def test_metrics_exposes_every_idsync_metric(serve: Callable[..., Any]) -> None:
    state = FixedState(STAGING)
    server = await serve(state)
    status, text = await get(server.url + "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "idsync_leader",
        "idsync_role",
        "idsync_epoch",
        "idsync_promotions",  # the parser drops _total from counter family names
        "idsync_paused",
        "idsync_zookeeper_connected",
        "idsync_pending_exports",
        "idsync_quarantined_objects",
        "idsync_deletion_guard_holding",
        "idsync_deletion_guard_deletes",
        "idsync_staging_drift_operations",
        "idsync_last_success_timestamp_seconds",
        "idsync_phase_duration_seconds",
        "idsync_cycles",
        "idsync_imported_objects",
        "idsync_exported_operations",
        "idsync_graph_throttled",
        "idsync_graph_retries",
        "idsync_healthy",
    ):
        assert name in families, name
    assert families["idsync_cycles"].type == "counter"
    results = {s.labels.get("result") for s in families["idsync_cycles"].samples}
    assert {"ok", "failed"} <= results  # initialized at 0 so increase() works from the start
    assert families["idsync_healthy"].samples[0].value == 1.0
    state.snap = STAGING_UNHEALTHY
    _, text = await get(server.url + "/metrics")
    healthy = {f.name: f for f in text_string_to_metric_families(text)}["idsync_healthy"]
    assert healthy.samples[0].value == 0.0


async def test_a_scrape_never_shows_a_leader_without_a_lease(serve: Callable[..., Any]) -> None:
    from idsync import metrics

    def leader_value(text: str) -> float:
        return {f.name: f for f in text_string_to_metric_families(text)}["idsync_leader"].samples[0].value

    state = FixedState(LEADER)
    server = await serve(state)
    metrics.LEADER.set(1)  # the last cycle exported
    assert leader_value((await get(server.url + "/metrics"))[1]) == 1.0
    state.snap = FENCED_LEADER  # the lease went between cycles (or the loop hangs)
    assert leader_value((await get(server.url + "/metrics"))[1]) == 0.0


def op(i: int, kind: str = "create") -> PendingExport:
    return PendingExport(
        id=i,
        object_type="user",
        anchor=f"anchor-{i}",
        kind=kind,
        member_anchor="",
        target_id=None,
        member_target_id=None,
        payload={"displayName": f"User {i}"},
        attempts=0,
        last_error=None,
        exported_at=datetime(2026, 1, 1, tzinfo=UTC),
        quarantined=False,
        waiting_for=None,
    )


async def test_pending_counts_and_details(serve: Callable[..., Any]) -> None:
    asked: list[int] = []

    def reader(limit: int) -> Sequence[PendingExport]:
        asked.append(limit)
        return [op(i) for i in range(min(limit, 3))]

    server = await serve(FixedState(LEADER), pending=reader)
    status, data = await get(server.url + "/pending")
    assert status == 200
    assert data == {
        "node": "a",
        "role": "leader",
        "epoch": 7,
        "pending": {"create": 3, "update": 0},
        "total": 3,
    }
    assert asked == []  # counts come from the last cycle: no store query
    status, data = await get(server.url + "/pending?details=1&limit=2")
    assert status == 200 and asked == [2] and data["limit"] == 2
    assert [o["anchor"] for o in data["operations"]] == ["anchor-0", "anchor-1"]
    assert data["operations"][0]["payload"] == {"displayName": "User 0"}
    assert data["operations"][0]["exported_at"].startswith("2026-01-01T00:00:00")
    assert (await get(server.url + "/pending?details=1&limit=zero"))[0] == 400
    assert (await get(server.url + "/pending?details=1&limit=0"))[0] == 400


async def test_pending_details_when_the_store_fails(serve: Callable[..., Any]) -> None:
    def broken(limit: int) -> Sequence[PendingExport]:
        raise OSError("connection refused")

    server = await serve(FixedState(LEADER), pending=broken)
    status, data = await get(server.url + "/pending?details=1")
    assert status == 503 and data["error"] == "cannot read pending operations: OSError"
    assert data["pending"] == {"create": 3, "update": 0}
    bare = await serve(FixedState(LEADER))
    assert (await get(bare.url + "/pending?details=1"))[0] == 503


# -- over real nodes (ZooKeeper, PostgreSQL) --------------------------------------------------


def codes(snap: NodeSnapshot) -> dict[str, int]:
    from idsync.runtime.admin import CHECKS

    return {path: 503 if check(snap) else 200 for path, check in CHECKS.items()}


def test_live_nodes_through_a_switchover_and_a_lost_session(
    make_node: Callable[..., HaLoop],  # noqa: F811
    stores: Callable[[str], Store],  # noqa: F811
) -> None:
    from idsync import metrics

    pa, pb = RecordingPipeline(stores("a")), RecordingPipeline(stores("b"))
    a = Node("a", pa, pa.store, make_node("a"))
    b = Node("b", pb, pb.store, make_node("b"))
    sa, sb = LiveState(a, a.ha, 0.5), LiveState(b, b.ha, 0.5)
    starting = sa.snapshot()
    assert starting.role == "starting" and codes(starting)["/readiness"] == 503
    assert codes(starting)["/liveness"] == 200

    outcome = asyncio.run(a.run_cycle())
    sa.observe(outcome)
    sb.observe(asyncio.run(b.run_cycle()))
    snap_a, snap_b = sa.snapshot(), sb.snapshot()
    assert (snap_a.role, snap_a.epoch, snap_a.lease_valid) == ("leader", 1, True)
    assert (snap_b.role, snap_b.epoch, snap_b.leader) == ("staging", 1, "a")
    assert codes(snap_a) == {
        "/health": 200,
        "/leader": 200,
        "/staging": 503,
        "/readiness": 200,
        "/liveness": 200,
    }
    assert codes(snap_b) == {
        "/health": 200,
        "/leader": 503,
        "/staging": 200,
        "/readiness": 200,
        "/liveness": 200,
    }
    assert snap_b.pending == {"create": 3}

    # A switchover: a hands over at its next cycle, b promotes at its next.
    assert a.ha is not None and b.ha is not None
    a.ha.coord.request_switchover(SwitchoverRequest(to="b", by="test", at=time.time(), leader="a", epoch=1))
    assert cycle(a).startswith("released leadership at epoch 1: switchover to b")
    assert metrics.LEADER._value.get() == 0
    assert cycle(b).startswith("promoted: epoch 2, previous leader a released cleanly")
    assert cycle(b).startswith("leader at epoch 2: exporting")
    assert metrics.LEADER._value.get() == 1 and metrics.EPOCH._value.get() == 2
    assert metrics.ROLE.labels("leader")._value.get() == 1
    assert codes(sb.snapshot())["/leader"] == 200
    cycle(a)
    snap_a = sa.snapshot()
    assert (snap_a.role, snap_a.leader, snap_a.epoch) == ("staging", "b", 2)
    assert codes(snap_a)["/staging"] == 200 and codes(snap_a)["/leader"] == 503

    # The leader loses its ZooKeeper session: its lease goes at once, before any cycle runs.
    b.ha.coord.stop()
    fenced = sb.snapshot()
    assert fenced.role == "leader" and not fenced.lease_valid and not fenced.zookeeper_connected
    assert codes(fenced)["/leader"] == 503 and codes(fenced)["/readiness"] == 503
    assert "ZooKeeper not connected" in fenced.reason


def test_standalone_node_is_always_the_leader(stores: Callable[[str], Store]) -> None:  # noqa: F811
    p = RecordingPipeline(stores("solo"))
    node = Node("solo", p, p.store, None)
    assert snapshot_from(node, None, 1.0).role == "starting"
    cycle(node)
    snap = snapshot_from(node, None, 1.0, last_loop=time.monotonic())
    assert (snap.role, snap.lease_valid, snap.healthy) == ("leader", True, True)
    assert codes(snap)["/leader"] == 200


async def test_wired_into_the_daemon(stores: Callable[[str], Store]) -> None:  # noqa: F811
    """The wiring the daemon uses: LiveState fed by on_cycle, the store's pending reader."""
    from idsync.config import load_config
    from idsync.runtime.admin import store_pending_reader
    from idsync.runtime.daemon import Daemon, DaemonOptions

    cfg = load_config(Path(__file__).resolve().parents[2] / "deploy/config/idsync.example.toml", {})
    p = RecordingPipeline(stores("wired"))
    daemon = Daemon(cfg, p, p.store, None)
    state = LiveState(daemon.node, daemon.ha, daemon.interval)
    daemon.on_cycle = state.observe
    server = AdminServer(state, settings(), pending=store_pending_reader(p.store))
    await server.start()
    try:
        assert (await get(server.url + "/readiness"))[0] == 503  # no cycle yet
        await daemon.run(DaemonOptions(standalone=True, once=True))
        status, data = await get(server.url + "/leader")
        # The main loop has run a cycle (before it there is no figure at all).
        assert status == 200 and data["node"] == "idsync-a" and data["seconds_since_loop"] >= 0
        assert (await get(server.url + "/liveness"))[0] == 200
        status, data = await get(server.url + "/pending?details=1")
        assert status == 200 and data["operations"] == [] and data["pending"] == {"create": 3}
    finally:
        await server.stop()


async def test_a_long_cycle_feeds_the_systemd_watchdog_from_its_pages(
    tmp_path: Path,
    stores: Callable[[str], Store],  # noqa: F811
) -> None:
    """`WatchdogSec` restarts a hung main loop; a cycle busy importing a large directory reports
    each page (idsync.progress), and that feeds the watchdog before the cycle ends."""
    import socket

    from idsync import progress
    from idsync.config import load_config
    from idsync.runtime.daemon import Daemon, DaemonOptions
    from idsync.runtime.notify import Notifier

    class Paged(RecordingPipeline):
        async def import_and_sync(self, *, full: bool = False) -> CycleReport:
            await asyncio.to_thread(lambda: [progress.beat() for _ in range(3)])
            return await super().import_and_sync(full=full)

    sock_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(sock_path)
        sock.setblocking(False)
        cfg = load_config(Path(__file__).resolve().parents[2] / "deploy/config/idsync.example.toml", {})
        p = Paged(stores("dog"))
        daemon = Daemon(cfg, p, p.store, None, notifier=Notifier(sock_path))
        await daemon.run(DaemonOptions(standalone=True, once=True))
        messages = []
        with contextlib.suppress(BlockingIOError):
            while True:
                messages.append(sock.recv(4096).decode())
    fed = [m for m in messages if "WATCHDOG=1" in m]
    # the pages fed it once (then at most every 30 s), the end of the cycle once more, with a STATUS
    assert fed[0] == "WATCHDOG=1", messages
    assert len(fed) == 2 and fed[1].startswith("STATUS=")
