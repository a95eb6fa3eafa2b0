"""Graph emulator throughput: a 100,000-user delta import and write operations, throttling off.

The emulator runs as `idsync graph-emulator` in its own process; this process is the client
(raw aiohttp + orjson, the way idsync's importer reads bulk delta). Targets (issue 4): the
emulator is never the bottleneck — >= 50,000 delta objects/s and >= 2,000 writes/s. The
baseline is the same server answering its cheapest endpoint (`/_emulator/health`) with the same
client and concurrency: the HTTP floor of this machine.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson

from bench.common import Figure

USERS = int(os.environ.get("BENCH_EMULATOR_USERS", "100000"))
WRITES = int(os.environ.get("BENCH_EMULATOR_WRITES", "10000"))
CONCURRENCY = 32
SELECT = (
    "id,displayName,userPrincipalName,mail,givenName,surname,onPremisesImmutableId,accountEnabled,jobTitle"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _start(port: int) -> subprocess.Popen[bytes]:
    exe = [sys.executable, "-m", "idsync", "graph-emulator", "--listen", f"127.0.0.1:{port}", "--no-throttle"]
    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen(exe, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


async def _wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{url}/_emulator/health") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the emulator did not start within 30 s")


async def _token(session: aiohttp.ClientSession, url: str) -> str:
    from idsync.emulator.config import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_TENANT

    form = {
        "grant_type": "client_credentials",
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "scope": "https://graph.microsoft.com/.default",
    }
    async with session.post(f"{url}/{DEFAULT_TENANT}/oauth2/v2.0/token", data=form) as r:
        return str((await r.json())["access_token"])


async def _delta(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], link: str | None = None
) -> tuple[int, float, int, list[str], str]:
    """One delta round (initial unless `link`); returns (objects, seconds, pages, ids, deltaLink)."""
    link = link or f"{url}/v1.0/users/delta?$select={SELECT}"
    objects = pages = 0
    ids: list[str] = []
    t0 = time.perf_counter()
    while True:
        async with session.get(link, headers=headers) as r:
            body = orjson.loads(await r.read())
        if r.status != 200:
            raise RuntimeError(f"delta page failed: {r.status} {body}")
        pages += 1
        objects += len(body["value"])
        ids.extend(v["id"] for v in body["value"])
        if "@odata.deltaLink" in body:
            return objects, time.perf_counter() - t0, pages, ids, body["@odata.deltaLink"]
        link = body["@odata.nextLink"]


async def _concurrent(n: int, work) -> float:  # type: ignore[no-untyped-def]
    """Run `work(i)` for i < n with CONCURRENCY workers; returns seconds."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await work(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - t0


async def _run() -> list[Figure]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(port)
    try:
        conn = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=conn) as session:
            await _wait_ready(session, url)
            headers = {"Authorization": f"Bearer {await _token(session, url)}", "User-Agent": "idsync-bench"}
            t0 = time.perf_counter()
            async with session.post(f"{url}/_emulator/seed", json={"users": USERS}) as r:
                assert r.status == 200, await r.text()
            seed_s = time.perf_counter() - t0

            cpu0 = _cpu_s(proc.pid)
            objects, delta_s, pages, ids, delta_link = await _delta(session, url, headers)
            delta_cpu = _cpu_s(proc.pid) - cpu0
            if objects != USERS:
                raise RuntimeError(f"delta returned {objects} objects for {USERS} users")
            delta_rate = objects / delta_s

            async def health(i: int) -> None:
                async with session.get(f"{url}/_emulator/health") as r:
                    await r.read()

            floor_s = await _concurrent(WRITES, health)
            floor_rate = WRITES / floor_s

            async def patch(i: int) -> None:
                body = orjson.dumps({"jobTitle": f"t{i}", "department": f"d{i % 7}"})
                h = {**headers, "Content-Type": "application/json", "client-request-id": f"b-{i}"}
                async with session.patch(f"{url}/v1.0/users/{ids[i % len(ids)]}", data=body, headers=h) as r:
                    await r.read()
                    if r.status != 204:
                        raise RuntimeError(f"PATCH failed: {r.status}")

            cpu0 = _cpu_s(proc.pid)
            write_s = await _concurrent(WRITES, patch)
            write_cpu = _cpu_s(proc.pid) - cpu0
            write_rate = WRITES / write_s

            batches = WRITES // 20

            async def batch(b: int) -> None:
                reqs = [
                    {
                        "id": str(k),
                        "method": "PATCH",
                        "url": f"/users/{ids[(b * 20 + k) % len(ids)]}",
                        "headers": {"Content-Type": "application/json"},
                        "body": {"jobTitle": f"b{b}-{k}"},
                    }
                    for k in range(20)
                ]
                h = {**headers, "Content-Type": "application/json"}
                async with session.post(
                    f"{url}/v1.0/$batch", data=orjson.dumps({"requests": reqs}), headers=h
                ) as r:
                    body = orjson.loads(await r.read())
                    if any(x["status"] != 204 for x in body["responses"]):
                        raise RuntimeError("a batch item failed")

            batch_s = await _concurrent(batches, batch)
            batch_rate = batches * 20 / batch_s

            # the next round after all those writes reads only what changed
            changed, round_s, _, _, _ = await _delta(session, url, headers, delta_link)
            rss_mb = _rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    note = f"{USERS} users, {pages} pages, seed {seed_s:.1f} s; 2 cores shared by client and emulator"
    return [
        Figure(
            "emulator delta import",
            round(delta_rate),
            "objects/s",
            target=">= 50000",
            ok=delta_rate >= 50_000,
            note=note,
        ),
        Figure(
            "emulator single writes (PATCH)",
            round(write_rate),
            "writes/s",
            baseline=round(floor_rate),
            baseline_name="GET /_emulator/health",
            target=">= 2000",
            ok=write_rate >= 2000,
            note=f"{WRITES} PATCH, {CONCURRENCY} concurrent keep-alive connections, bearer auth",
        ),
        Figure(
            "emulator batched writes ($batch of 20)",
            round(batch_rate),
            "writes/s",
            target=">= 2000",
            ok=batch_rate >= 2000,
            note=f"{batches} batches",
        ),
        Figure(
            "emulator delta changes round",
            round(changed / round_s) if round_s else 0,
            "objects/s",
            note=f"{changed} changed users of {USERS} in {round_s:.2f} s",
        ),
        Figure("emulator peak RSS", round(rss_mb), "MB", note=f"{USERS} users, request log on"),
        Figure(
            "emulator CPU capacity, delta",
            round(objects / delta_cpu) if delta_cpu else 0,
            "objects/CPU-s",
            target=">= 50000",
            ok=objects / delta_cpu >= 50_000 if delta_cpu else None,
            note="objects per second of emulator CPU time: what one free core would serve",
        ),
        Figure(
            "emulator CPU capacity, single writes",
            round(WRITES / write_cpu) if write_cpu else 0,
            "writes/CPU-s",
            target=">= 2000",
            ok=WRITES / write_cpu >= 2000 if write_cpu else None,
            note=f"{write_cpu / WRITES * 1e6:.0f} us of emulator CPU per PATCH (HTTP included)"
            if write_cpu
            else "",
        ),
    ]


def main() -> list[Figure]:
    """Run the benchmark and return its figures."""
    return asyncio.run(_run())


if __name__ == "__main__":
    for f in main():
        ratio = f" (x{f.ratio:.2f} of {f.baseline_name} {f.baseline:g})" if f.ratio is not None else ""
        ok = "" if f.ok is None else (" OK" if f.ok else " MISSED")
        print(f"{f.name}: {f.value:g} {f.unit}{ratio} target {f.target or '-'}{ok} — {f.note}")
