"""The HTTP face of the emulator (aiohttp): Graph under `/v1.0`, the identity platform under
`/{tenant}/...`, and the admin API under `/_emulator`. `EmulatorServer` runs it in-process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ssl
import uuid
from typing import Any

import orjson
from aiohttp import web

from idsync.emulator import persistence
from idsync.emulator.auth import AuthError
from idsync.emulator.batch import JSON_CT
from idsync.emulator.call import Call, Reply, error_reply
from idsync.emulator.config import EmulatorConfig
from idsync.emulator.core import DropConnection, Emulator
from idsync.emulator.errors import GraphError, segment_not_found
from idsync.emulator.faults import Fault
from idsync.emulator.reqlog import EPOCH_PATTERN, stale_epoch_writes

EMULATOR_KEY: web.AppKey[Emulator] = web.AppKey("emulator", Emulator)


def _json(status: int, body: Any, headers: dict[str, str] | None = None, ct: str = JSON_CT) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), headers={"Content-Type": ct, **(headers or {})}
    )


def _send(reply: Reply) -> web.Response:
    if reply.body is None:
        return web.Response(status=reply.status, headers=reply.headers)
    return _json(reply.status, reply.body, reply.headers)


def _drop(request: web.Request) -> web.Response:
    tr = request.transport
    if tr is not None:
        tr.abort()
    # aiohttp cannot write to an aborted transport; the client sees a reset connection
    raise asyncio.CancelledError()


async def _graph(request: web.Request, em: Emulator) -> web.Response:
    body = await request.read() if request.body_exists else None
    headers = request.headers  # case-insensitive, as Call expects
    path = request.path[len("/v1.0") :] or "/"
    call = Call(
        method=request.method,
        path=path,
        query=request.query,
        headers=headers,
        body=body,
        base_url=f"{request.scheme}://{request.host}/v1.0",
    )
    if not em.cfg.anonymous:
        try:
            ident = em.auth.verify(headers.get("authorization"))
        except GraphError as e:
            reply = error_reply(e, call)
            rid = str(uuid.uuid4())
            reply.headers["request-id"] = rid
            em.record(call, reply.status, rid, None, None, "unauthenticated")
            return _send(reply)
    else:
        ident = em.auth.anonymous()
    call.app_id, call.roles, call.principal = ident.app_id, ident.roles, ident.principal
    pre = em.faults.take(call, ("latency",), envelope=path == "/$batch")
    if pre is not None:
        await asyncio.sleep(pre.latency)
    try:
        if path == "/$batch":
            if request.method != "POST":
                return _send(
                    error_reply(
                        GraphError(
                            405,
                            "Request_BadRequest",
                            "Specified HTTP method is not allowed for the request target.",
                        ),
                        call,
                    )
                )
            drop = em.faults.take(call, ("drop",), envelope=True)
            if drop is not None and not drop.after:
                return _drop(request)
            reply = em.execute_batch(call)
            if drop is not None:
                return _drop(request)
        else:
            reply = em.execute(call)
    except DropConnection:
        return _drop(request)
    return _send(reply)


async def _token(request: web.Request, em: Emulator, tenant: str) -> web.Response:
    form = await request.post()
    try:
        body = em.auth.token(tenant, {k: str(v) for k, v in form.items()})
    except AuthError as e:
        return _json(e.status, e.body(), ct="application/json; charset=utf-8")
    return _json(200, body, ct="application/json; charset=utf-8")


async def _admin(request: web.Request, em: Emulator, what: str) -> web.Response:
    m = request.method
    try:
        if what == "health" and m == "GET":
            return _json(200, {"ok": True, "seq": em.store.seq})
        if what == "state" and m == "GET":
            return _json(200, em.dump())
        if what == "reset" and m == "POST":
            em.reset()
            return _json(200, {"reset": True, "generation": em.store.generation})
        if what == "requests":
            if m == "DELETE":
                em.log.clear()
                return _json(200, {"cleared": True, "seq": em.log.seq})
            since = int(request.query.get("since", "0"))
            writes = request.query.get("writes", "0") in ("1", "true")
            limit = int(request.query["limit"]) if "limit" in request.query else None
            entries = [e.to_dict() for e in em.log.since(since, writes, limit)]
            return _json(200, {"requests": entries, "seq": em.log.seq})
        if what == "fencing" and m == "GET":
            pattern = request.query.get("pattern", EPOCH_PATTERN)
            bad = stale_epoch_writes(list(em.log.entries), pattern)
            return _json(200, {"ok": not bad, "violations": [e.to_dict() for e in bad]})
        if what == "faults":
            if m == "GET":
                return _json(200, {"faults": [f.to_dict() for f in em.faults.rules]})
            if m == "DELETE":
                em.faults.clear()
                return _json(200, {"faults": []})
            if m == "POST":
                data = orjson.loads(await request.read())
                rules = data.get("faults", [data]) if isinstance(data, dict) else data
                added = [em.faults.add(Fault.from_dict(r)).to_dict() for r in rules]
                return _json(200, {"faults": added})
        if what == "clock" and m == "POST":
            data = orjson.loads(await request.read())
            purged = em.advance_clock(float(data["advance"]))
            return _json(200, {"clock": em.store.clock.now(), "purged": purged})
        if what == "config":
            if m == "POST":
                em.configure(**orjson.loads(await request.read()))
            cfg = {k: v for k, v in vars(em.cfg).items() if k not in ("client_secret", "extra_clients")}
            cfg["extra_clients"] = [
                {"client_id": c.client_id, "roles": c.roles} for c in em.cfg.extra_clients
            ]
            return _json(200, cfg)
        if what == "seed" and m == "POST":
            data = orjson.loads(await request.read())
            ids = em.seed_users(int(data.get("users", 0)), data.get("prefix", "user"), data.get("domain"))
            gc.freeze()  # bulk objects are long-lived: keep them out of every GC pass
            return _json(200, {"users": len(ids), "first": ids[:1]})
        if what == "synced" and m == "POST":
            data = orjson.loads(await request.read())
            synced = data.get("synced", True)
            found = em.mark_synced(
                list(data["ids"]), None if synced is None else bool(synced), data.get("props")
            )
            return _json(200, {"marked": found})
        if what == "roles":
            if m == "POST":
                data = orjson.loads(await request.read())
                em.grant_role(str(data["role"]), str(data["principal"]))
            return _json(200, {"roles": em.role_holders()})
        if what == "clients" and m == "POST":
            data = orjson.loads(await request.read())
            em.add_client(
                str(data["client_id"]),
                str(data["client_secret"]),
                list(data["roles"]),
                str(data.get("name", "")),
            )
            return _json(200, {"client_id": data["client_id"], "roles": data["roles"]})
        if what == "token" and m == "POST":
            raw = await request.read()
            client = orjson.loads(raw).get("client_id") if raw else None
            return _json(200, {"access_token": em.auth.issue(client_id=client)})
        if what == "save" and m == "POST":
            path = request.app.get(STATE_KEY)
            if not path:
                return _json(400, {"error": "the emulator runs without --state"})
            persistence.save(em, path)
            return _json(200, {"saved": path})
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as e:
        return _json(400, {"error": f"bad admin request: {e}"})
    return _json(404, {"error": f"no admin endpoint {m} /_emulator/{what}"})


STATE_KEY: web.AppKey[str | None] = web.AppKey("state_path", str)  # type: ignore[arg-type]


async def _dispatch(request: web.Request) -> web.StreamResponse:
    em = request.app[EMULATOR_KEY]
    path = request.path
    if path.startswith("/v1.0/") or path == "/v1.0":
        return await _graph(request, em)
    segs = path.strip("/").split("/")
    if segs[0] == "_emulator" and len(segs) == 2:
        return await _admin(request, em, segs[1])
    origin = f"{request.scheme}://{request.host}"
    if len(segs) >= 2 and segs[-2:] == [".well-known", "openid-configuration"] and request.method == "GET":
        tenant = segs[0]
        if not em.auth.tenant_ok(tenant):
            return _json(
                400,
                AuthError(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found.").body(),
                ct="application/json; charset=utf-8",
            )
        return _json(200, em.auth.discovery(origin, tenant), ct="application/json; charset=utf-8")
    if len(segs) == 4 and segs[1:] == ["oauth2", "v2.0", "token"] and request.method == "POST":
        return await _token(request, em, segs[0])
    if len(segs) == 4 and segs[1:] == ["discovery", "v2.0", "keys"]:
        return _json(200, {"keys": []}, ct="application/json; charset=utf-8")
    err = (
        segment_not_found(segs[0])
        if segs[0] != "beta"
        else GraphError(400, "BadRequest", "Only Graph v1.0 is emulated; /beta is not.")
    )
    return _json(err.status, err.body())


def build_app(em: Emulator, state_path: str | None = None) -> web.Application:
    """The aiohttp application serving `em`."""
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[EMULATOR_KEY] = em
    app[STATE_KEY] = state_path
    app.router.add_route("*", "/{tail:.*}", _dispatch)
    return app


class EmulatorServer:
    """An emulator listening on a port in this process (tests, benches, `idsync graph-emulator`).

    `url` is `scheme://host:port`; `graph_url` adds `/v1.0`; `authority` is what azure-identity's
    `authority=` wants. With `state_path` the directory is loaded at start and saved every
    `save_interval` seconds and at stop.
    """

    def __init__(
        self,
        cfg: EmulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        state_path: str | None = None,
        save_interval: float = 30.0,
    ) -> None:
        self.emulator = Emulator(cfg)
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.state_path = state_path
        self.save_interval = save_interval
        self._runner: web.AppRunner | None = None
        self._saver: asyncio.Task[None] | None = None
        self._saved_seq = -1

    @property
    def url(self) -> str:
        """`http(s)://host:port`."""
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def graph_url(self) -> str:
        """The Graph base URL clients should use (`.../v1.0`)."""
        return f"{self.url}/v1.0"

    @property
    def authority(self) -> str:
        """The authority host URL for azure-identity (`authority=`); the tenant goes in `tenant_id`."""
        return self.url

    async def start(self) -> None:
        """Load state (if any) and start listening; `port=0` picks a free port."""
        if self.state_path:
            persistence.load(self.emulator, self.state_path)
            self._saved_seq = self.emulator.store.seq
            gc.freeze()
        self._runner = web.AppRunner(
            build_app(self.emulator, self.state_path), access_log=None, handle_signals=False
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context, backlog=1024)
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        if self.state_path:
            self._saver = asyncio.create_task(self._save_loop())

    def save(self) -> None:
        """Write the state file now (if one is configured)."""
        if self.state_path:
            persistence.save(self.emulator, self.state_path)
            self._saved_seq = self.emulator.store.seq

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(self.save_interval)
            if self.emulator.store.seq != self._saved_seq:
                self.save()

    async def stop(self) -> None:
        """Stop listening and save the state file."""
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.save()

    async def __aenter__(self) -> EmulatorServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
