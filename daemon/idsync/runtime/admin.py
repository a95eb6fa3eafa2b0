"""The admin HTTP API of one instance: metrics and Patroni-style health endpoints.

Every health endpoint answers 200 when the node is in the asked-for state and 503 otherwise,
with the same JSON body (node, role, epoch, ...) and the reasons for a 503, so a load balancer,
a monitoring probe and an operator with curl all read the same answer:

    /health     200 if the last cycle succeeded within 3 cycle intervals
    /leader     200 only on the fenced leader (role leader and a valid lease)
    /staging    200 only on a healthy staging node (one that could take over now)
    /readiness  200 on the fenced leader or a healthy staging node
    /liveness   200 if the main loop finished a turn within the liveness bound
    /pending    200 with pending export counts (and the operations with ?details=1)
    /metrics    Prometheus text format of `idsync.metrics.REGISTRY`

The server reads the node only through `AdminState.snapshot()`, so it can be tested without a
daemon; `LiveState` is the adapter over a real `Node` and `HaLoop`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from idsync import metrics
from idsync.config.errors import ConfigError

if TYPE_CHECKING:
    from idsync.config.service import AdminSettings
    from idsync.ha.loop import HaLoop
    from idsync.runtime.console import ConsoleSources
    from idsync.runtime.node import CycleOutcome, Node
    from idsync.store.db import Store
    from idsync.store.pending import PendingExport

log = structlog.get_logger(__name__)

HEALTHY_CYCLES = 3  # a cycle older than this many intervals is not "recent"
MIN_LIVENESS_SECONDS = 120.0  # a full import may keep one turn of the loop busy for minutes
DETAILS_LIMIT = 100  # operations listed by /pending?details=1 unless ?limit= says otherwise
MAX_DETAILS_LIMIT = 10_000
CONSOLE_COOKIE = "idsync_admin_token"  # the bearer token, as a browser sends it after /login


def console_cookie(port: int) -> str:
    """The sign-in cookie's name for the node listening on `port`: browsers send a host's cookies
    to every port of it, so two nodes on one host (with their own tokens) need their own."""
    return f"{CONSOLE_COOKIE}_{port}"


@dataclass(frozen=True)
class NodeSnapshot:
    """What the admin API knows about the node at one instant (ages in seconds, None = never)."""

    node: str
    role: str  # leader | staging | starting
    epoch: int
    lease_valid: bool  # leader only: the lease still fences writes
    healthy: bool  # passes the checks a node must pass to take over (or keep leading)
    last_cycle_ok: bool  # the most recent cycle's import and sync succeeded
    since_success: float | None  # seconds since the last successful cycle
    since_loop: float | None  # seconds since the main loop last finished a turn
    interval: float  # configured seconds between cycles
    pending: Mapping[str, int] = field(default_factory=dict)
    reason: str = ""  # why the node is not healthy, "" when it is
    leader: str | None = None  # the cluster's leader as this node last saw it
    paused: bool = False
    zookeeper_connected: bool = True
    sentence: str = ""  # the last cycle's decision, as logged
    uptime: float = 0.0  # seconds since the state provider was created


class AdminState(Protocol):
    """The admin API's only view of the node."""

    def snapshot(self) -> NodeSnapshot: ...


PendingReader = Callable[[int], Sequence["PendingExport"]]
"""Returns at most `limit` pending operations, in export order (blocking; run in a thread)."""


# -- decisions: pure functions of a snapshot -------------------------------------------------


def check_health(s: NodeSnapshot) -> list[str]:
    """Reasons /health fails (empty: 200)."""
    bound = HEALTHY_CYCLES * s.interval
    if s.since_success is None:
        return ["no successful cycle yet"]
    reasons = []
    if not s.last_cycle_ok:
        reasons.append(f"last cycle failed: {s.reason or 'unknown error'}")
    if s.since_success > bound:
        reasons.append(f"last successful cycle {s.since_success:.0f}s ago (more than {bound:g}s)")
    return reasons


def check_leader(s: NodeSnapshot) -> list[str]:
    """Reasons /leader fails: only a leader whose lease still fences its writes passes."""
    if s.role != "leader":
        return [f"not the leader (role {s.role}, leader is {s.leader or 'unknown'})"]
    if not s.lease_valid:
        return [f"leader at epoch {s.epoch} without a valid lease (fenced: no export may start)"]
    return []


def check_staging(s: NodeSnapshot) -> list[str]:
    """Reasons /staging fails: only a staging node that could take over now passes."""
    reasons = []
    if s.role != "staging":
        reasons.append(f"not a staging node (role {s.role})")
    if not s.healthy:
        reasons.append(f"not healthy: {s.reason or 'unknown'}")
    return reasons


def check_readiness(s: NodeSnapshot) -> list[str]:
    """Reasons /readiness fails: the fenced leader or a healthy staging node passes."""
    leader, staging = check_leader(s), check_staging(s)
    if not leader or not staging:
        return []
    return leader if s.role == "leader" else staging


def liveness_bound(interval: float) -> float:
    """How long the main loop may go without finishing a turn before /liveness fails."""
    return max(MIN_LIVENESS_SECONDS, 10 * interval)


def check_liveness(s: NodeSnapshot) -> list[str]:
    """Reasons /liveness fails (the main loop has not finished a turn within the bound)."""
    bound = liveness_bound(s.interval)
    if s.since_loop is None:
        if s.uptime <= bound:
            return []  # still starting: the first cycle (a full import) may take a while
        return [f"no turn of the main loop finished in {s.uptime:.0f}s since start (bound {bound:g}s)"]
    if s.since_loop > bound:
        return [f"main loop last finished a turn {s.since_loop:.0f}s ago (bound {bound:g}s)"]
    return []


def body(s: NodeSnapshot, reasons: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON body every health endpoint returns."""
    return {
        "node": s.node,
        "role": s.role,
        "epoch": s.epoch,
        "leader": s.leader,
        "lease_valid": s.lease_valid,
        "healthy": s.healthy,
        "paused": s.paused,
        "zookeeper_connected": s.zookeeper_connected,
        "last_cycle_ok": s.last_cycle_ok,
        "seconds_since_success": None if s.since_success is None else round(s.since_success, 3),
        "seconds_since_loop": None if s.since_loop is None else round(s.since_loop, 3),
        "interval_seconds": s.interval,
        "pending": dict(s.pending),
        "decision": s.sentence,
        "reasons": list(reasons),
    }


CHECKS: dict[str, Callable[[NodeSnapshot], list[str]]] = {
    "/health": check_health,
    "/leader": check_leader,
    "/staging": check_staging,
    "/readiness": check_readiness,
    "/liveness": check_liveness,
}


def refresh_gauges(s: NodeSnapshot) -> None:
    """Gauges that describe the node right now, set when Prometheus scrapes.

    `idsync_leader` is set by each cycle; a lease lost since (ZooKeeper's thread revokes it at
    once) or a hung loop must not keep reporting a leader, so a scrape only ever lowers it.
    """
    metrics.HEALTHY.set(1 if s.healthy else 0)
    if not (s.role == "leader" and s.lease_valid):
        metrics.LEADER.set(0)


# -- the adapter over a running node --------------------------------------------------------


def snapshot_from(
    node: Node,
    ha: HaLoop | None,
    interval: float,
    *,
    last_loop: float | None = None,
    started: float | None = None,
    now: float | None = None,
    monotonic: float | None = None,
) -> NodeSnapshot:
    """Describe `node` (and its HA loop, None when standalone) for the admin API.

    `last_loop` and `started` are `time.monotonic()` values: when the main loop last finished
    a turn and when the daemon started. The role and the lease are read live from `ha`, so a
    lease revoked by ZooKeeper's thread shows at once, not at the next cycle.
    """
    now = time.time() if now is None else now
    mono = time.monotonic() if monotonic is None else monotonic
    last = node.last
    report = last.report if last is not None else None
    view = ha.last_view if ha is not None else None

    leader_name: str | None
    if ha is None:
        role = "leader" if last is not None else "starting"
        lease_valid, epoch, leader_name, connected = last is not None, 0, node.name, True
    else:
        held = ha.leader
        lease = ha.lease
        connected = ha.coord.connected
        if held is not None:
            role, epoch, leader_name = "leader", held.epoch, node.name
            lease_valid = lease is not None and lease.valid()
        else:
            role = "staging" if last is not None else "starting"
            lease_valid = False
            epoch = last.epoch if last is not None else 0
            leader_name = view.leader.node if view is not None and view.leader is not None else None
            if view is not None and view.leader is not None:
                epoch = view.leader.epoch

    reasons = []
    since_success = now - node.last_ok if node.last_ok else None
    if report is None:
        reasons.append("no cycle yet")
    else:
        if not report.ok:
            reasons.append(f"last cycle failed ({report.error or 'unknown error'})")
        if since_success is not None and since_success > HEALTHY_CYCLES * interval:
            reasons.append(f"last successful cycle {since_success:.0f}s ago")
        if not report.target_caught_up:
            reasons.append("target import not caught up")
        cluster_hash = view.epoch.rules_hash if view is not None else ""
        if cluster_hash and report.rules_hash != cluster_hash:
            reasons.append(
                f"rules hash {report.rules_hash[:12]} differs from the cluster's {cluster_hash[:12]}"
            )
    if ha is not None and not connected:
        reasons.append("ZooKeeper not connected")

    return NodeSnapshot(
        node=node.name,
        role=role,
        epoch=epoch,
        lease_valid=lease_valid,
        healthy=not reasons,
        last_cycle_ok=bool(report and report.ok),
        since_success=since_success,
        since_loop=None if last_loop is None else max(0.0, mono - last_loop),
        interval=interval,
        pending=dict(report.pending) if report is not None else {},
        reason="; ".join(reasons),
        leader=leader_name,
        paused=view is not None and view.pause is not None,
        zookeeper_connected=connected,
        sentence=last.sentence if last is not None else "",
        uptime=0.0 if started is None else max(0.0, mono - started),
    )


class LiveState:
    """`AdminState` over a running node; pass `observe` as the daemon's per-cycle hook."""

    def __init__(self, node: Node, ha: HaLoop | None, interval: float) -> None:
        self.node = node
        self.ha = ha
        self.interval = interval
        self.started = time.monotonic()
        self.last_loop: float | None = None

    def observe(self, outcome: CycleOutcome) -> None:
        """Record that the main loop finished a turn (the daemon's `on_cycle` callback)."""
        self.last_loop = time.monotonic()

    def snapshot(self) -> NodeSnapshot:
        return snapshot_from(
            self.node, self.ha, self.interval, last_loop=self.last_loop, started=self.started
        )


def store_pending_reader(store: Store) -> PendingReader:
    """A `PendingReader` over this node's store (the SQL stays in `idsync.store.pending`)."""
    from idsync.store import pending as store_pending

    def read(limit: int) -> Sequence[PendingExport]:
        with store.transaction() as conn:
            return store_pending.listing(conn)[:limit]

    return read


# -- the server ------------------------------------------------------------------------------


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
    )


class AdminServer:
    """The aiohttp server of the admin API; `await start()`, then `await stop()` at shutdown."""

    def __init__(
        self,
        state: AdminState,
        settings: AdminSettings,
        *,
        pending: PendingReader | None = None,
        console: ConsoleSources | None = None,
    ) -> None:
        self.state = state
        self.settings = settings
        self.pending_reader = pending
        self.console = console  # the web console at / (runtime/console.py), None: no console
        self._token: str | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle --------------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application (routes and the bearer-token middleware)."""
        app = web.Application(middlewares=[self._auth])
        for path in CHECKS:
            app.router.add_get(path, self._check)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/pending", self._pending)
        if self.console is not None:
            from idsync.runtime import console

            cookie = console_cookie(self.settings.host_port()[1])
            console.add_routes(app, self.state, self.console, lambda: self._token, cookie)
        return app

    async def start(self) -> None:
        """Bind `settings.listen`; raise ConfigError when off loopback without a token."""
        self._token = self.settings.token()
        if self._token is None and not self.settings.loopback:
            raise ConfigError.single(
                "admin.token_file",
                f"required because admin.listen ({self.settings.listen}) is not a loopback address",
            )
        host, port = self.settings.host_port()
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        log.info("admin.started", url=self.url, token=self._token is not None)

    async def stop(self) -> None:
        """Close the listener and finish in-flight requests."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            log.info("admin.stopped")

    # -- auth -------------------------------------------------------------------------------

    def _current_token(self) -> str | None:
        """The token, re-read so a rotated file takes effect; the last good one if unreadable."""
        try:
            token = self.settings.token()
        except ConfigError as exc:
            log.warning("admin.token_unreadable", problem=str(exc.problems[0]))
            return self._token
        self._token = token
        return token

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        token = self._current_token() if self._token is not None else None
        if token is not None:
            given = request.headers.get("Authorization", "")
            cookie = console_cookie(self.settings.host_port()[1])
            if not given and cookie in request.cookies:  # a browser signed in at /login
                given = f"Bearer {request.cookies[cookie]}"
            if request.path == "/login":
                return await handler(request)  # the form that asks for the token
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
                if request.path == "/" and self.console is not None:
                    raise web.HTTPSeeOther("/login")  # a browser: ask for the token
                return web.json_response(
                    {"error": "a valid bearer token is required"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="idsync"'},
                )
        return await handler(request)

    # -- handlers ---------------------------------------------------------------------------

    async def _check(self, request: web.Request) -> web.Response:
        snap = self.state.snapshot()
        reasons = CHECKS[request.path](snap)
        return _json(body(snap, reasons), 503 if reasons else 200)

    async def _metrics(self, request: web.Request) -> web.Response:
        refresh_gauges(self.state.snapshot())
        return web.Response(
            body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _pending(self, request: web.Request) -> web.Response:
        snap = self.state.snapshot()
        out: dict[str, Any] = {
            "node": snap.node,
            "role": snap.role,
            "epoch": snap.epoch,
            "pending": dict(snap.pending),
            "total": sum(snap.pending.values()),
        }
        if request.query.get("details", "") not in ("1", "true", "yes"):
            return _json(out)
        try:
            limit = int(request.query.get("limit", DETAILS_LIMIT))
        except ValueError:
            return _json({"error": "limit must be a whole number"}, 400)
        if not 0 < limit <= MAX_DETAILS_LIMIT:
            return _json({"error": f"limit must be from 1 to {MAX_DETAILS_LIMIT}"}, 400)
        if self.pending_reader is None:
            return _json({**out, "error": "operation details are not available on this node"}, 503)
        try:
            ops = await asyncio.to_thread(self.pending_reader, limit)
        except Exception as exc:  # the store is down: say so, the daemon keeps running
            log.warning("admin.pending_failed", error=str(exc))
            return _json({**out, "error": f"cannot read pending operations: {type(exc).__name__}"}, 503)
        out["operations"] = [dataclasses.asdict(op) for op in ops]
        out["limit"] = limit
        return _json(out)
