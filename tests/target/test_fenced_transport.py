"""The fence at the wire: a write leaves only while the lease holds, bounded by what it has left.

A real HTTP/1.1 server on loopback counts what reaches it; the lease is the real one
(idsync.ha.lease) on a clock the test moves. Each test freezes the "leader" in one of the phases
between the exporter's own check and the bytes on the wire (pool wait, a 401 token refresh) or
lets a write outlive the lease, and asserts what the server received.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from idsync.config.target import GraphSettings
from idsync.fencing import Fenced
from idsync.ha.lease import Lease
from idsync.target.client import GraphClient


@dataclass
class Server:
    """Answers every request after `hold` seconds with `statuses` in turn (then 200)."""

    url: str = ""
    received: list[tuple[str, str]] = field(default_factory=list)
    hold: float = 0.0
    statuses: list[int] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                self.received.append((method, path))
                self.arrived.set()
                if self.hold:
                    await asyncio.sleep(self.hold)
                status = self.statuses.pop(0) if self.statuses else 200
                body = (
                    b"{}"
                    if status == 200
                    else b'{"error":{"code":"InvalidAuthenticationToken","message":"x"}}'
                )
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    tcp = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    srv.url = f"http://127.0.0.1:{port}"
    async with tcp:
        yield srv
        tcp.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lease(clock: Callable[[], float], span: float = 30.0, max_write: float = 10.0) -> Lease:
    le = Lease("a", 7, span * 1.5, max_write=max_write, clock=clock)
    le.renew(clock())
    return le


def client(server: Server) -> GraphClient:
    settings = GraphSettings(graph_endpoint=server.url, anonymous=True, max_concurrent_batches=1)
    return GraphClient(settings, node="a")


async def test_a_write_waiting_for_a_pooled_connection_is_not_sent_once_the_lease_is_gone(
    server: Server,
) -> None:
    server.hold = 0.3
    le = lease(Clock())
    async with client(server) as c:
        pool = 1 * 2 + 4  # GraphClient's pool for max_concurrent_batches = 1
        busy = [asyncio.create_task(c.send("POST", "/$batch", body=b"{}", fence=le)) for _ in range(pool)]
        while len(server.received) < pool:
            await asyncio.sleep(0.01)
        # The exporter checked the fence and handed this write over; it waits for a connection.
        late = asyncio.create_task(c.send("PATCH", "/users/x", body=b"{}", fence=le))
        await asyncio.sleep(0.05)
        le.revoke("ZooKeeper session lost")  # the leader lost its lease during the wait
        results = await asyncio.gather(*busy, late, return_exceptions=True)
    assert all(not isinstance(r, BaseException) and r.status == 200 for r in results[:pool])
    assert isinstance(results[-1], Fenced) and "ZooKeeper session lost" in str(results[-1])
    assert ("PATCH", "/v1.0/users/x") not in server.received
    assert len(server.received) == pool
    assert c.transport.fenced_at_wire == 1


async def test_a_401_is_not_re_sent_without_checking_the_fence_again(server: Server) -> None:
    server.statuses = [401]
    le = lease(Clock())

    class SlowTokens:
        """A token refresh during which the lease ran out (a slow identity platform, a GC pause)."""

        async def invalidate(self, rejected: str) -> None:
            le.hold()

        async def close(self) -> None:
            pass

    async with client(server) as c:
        c._tokens = SlowTokens()  # type: ignore[assignment]
        with pytest.raises(Fenced, match="lease expired"):
            await c.send("DELETE", "/groups/g/members/u/$ref", fence=le)
    assert server.received == [("DELETE", "/v1.0/groups/g/members/u/$ref")]  # sent once, not twice


async def test_a_write_is_bounded_by_the_lease_not_only_by_the_request_timeout(server: Server) -> None:
    clock = Clock()
    server.hold = 3.0  # longer than the lease has left, shorter than the request timeout (10 s)
    le = lease(clock)
    clock.now += 30.0 - 0.2  # 0.2 s of lease left
    assert le.write_deadline() == pytest.approx(0.2)
    async with client(server) as c:
        with pytest.raises(httpx.WriteTimeout, match="lease's remainder"):
            await c.send("POST", "/users", body=b"{}", fence=le)
        # Reads carry no fence: they go on whatever the lease says.
        le.revoke("released")
        server.hold = 0.0
        assert (await c.send("GET", "/users")).status == 200


async def test_no_write_starts_without_a_lease(server: Server) -> None:
    le = lease(Clock())
    le.hold()  # ZooKeeper SUSPENDED
    async with client(server) as c:
        with pytest.raises(Fenced):
            await c.send("POST", "/$batch", body=b"{}", fence=le)
    assert server.received == []
