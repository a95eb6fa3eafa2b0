"""What the daemon does, run inside tests/ops/sandbox.py: the hardening must not break it.

    sandbox.py .venv/bin/python -m tests.ops.sandbox_smoke ZK_HOSTS PG_DSN

Proves the policy is in force (W+X memory, netlink sockets and setpriority are refused), then
uses every native extension the daemon loads: libffi callbacks (cffi and ctypes), cryptography
and TLS, kazoo, psycopg, aiohttp and prometheus-client, through a real node cycle served by the
admin API. Prints one line per check; exits non-zero at the first failure.
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime
import mmap
import os
import socket
import ssl
import sys
import tempfile
import uuid
from pathlib import Path

PROT_READ, PROT_EXEC = 0x1, 0x4


def ok(what: str) -> None:
    print(f"ok: {what}", flush=True)


def refused(what: str, fn: object) -> None:
    try:
        fn()  # type: ignore[operator]
    except OSError:
        ok(f"refused as it must be: {what}")
        return
    raise SystemExit(f"sandbox not in force: {what} was allowed")


def policy_in_force() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.mmap(-1, mmap.PAGESIZE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
    if libc.mprotect(ctypes.c_void_p(addr), mmap.PAGESIZE, PROT_READ | PROT_EXEC) == 0:
        raise SystemExit("sandbox not in force: mprotect to executable was allowed")
    ok("refused as it must be: mprotect to executable")
    refused("W+X mmap", lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC))
    refused("AF_NETLINK socket", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
    refused("setpriority (@resources)", lambda: os.setpriority(os.PRIO_PROCESS, 0, 5))


def ffi_callbacks() -> None:
    import cffi

    # cffi's ffi.callback() needs W+X memory (cffi#73); no dependency of the daemon calls it
    # (cryptography's OpenSSL bindings are Rust, psycopg uses its C build): say what we see.
    try:
        cffi.FFI().callback("int(int)", lambda x: x + 1)
        print("note: cffi ffi.callback() works here", flush=True)
    except MemoryError:
        print("note: cffi ffi.callback() is refused (W+X), as expected; idsync does not use it", flush=True)
    proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
    values = (ctypes.c_int * 4)(3, 1, 4, 2)

    def cmp(a: int, b: int) -> int:
        return (
            ctypes.cast(a, ctypes.POINTER(ctypes.c_int))[0] - ctypes.cast(b, ctypes.POINTER(ctypes.c_int))[0]
        )

    ctypes.CDLL(None).qsort(values, 4, ctypes.sizeof(ctypes.c_int), proto(cmp))
    assert list(values) == [1, 2, 3, 4]
    ok("ctypes callback through libc qsort (libffi closures without W+X)")


def tls_with_cryptography() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    d = Path(tempfile.mkdtemp())
    (d / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(d / "c.pem", d / "k.pem")
    client = ssl.create_default_context(cafile=str(d / "c.pem"))

    async def handshake() -> bytes:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(await r.readline())
            await w.drain()
            w.close()

        srv = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server)
        port = srv.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="localhost")
        w.write(b"hello\n")
        line = await r.readline()
        w.close()
        srv.close()
        return line

    assert asyncio.run(handshake()) == b"hello\n"
    ok("cryptography certificate + TLS handshake")
    import azure.identity  # noqa: F401
    import msgraph  # noqa: F401

    ok("msgraph-sdk and azure-identity import")


def node_cycle_and_admin_api(zk_hosts: str, pg_dsn: str) -> None:
    import aiohttp
    import psycopg
    from kazoo.client import KazooClient

    from idsync.config.service import AdminSettings
    from idsync.ha.loop import HaLoop, Timing
    from idsync.ha.zk import Coordinator, ZkSettings
    from idsync.runtime.admin import AdminServer, LiveState
    from idsync.runtime.node import Node
    from idsync.store import migrate
    from idsync.store.db import Store
    from tests.ha.test_node import RecordingPipeline
    from tests.harness.ports import free_port

    chroot = f"/sandbox-{uuid.uuid4().hex[:8]}"
    schema = f"sandbox_{uuid.uuid4().hex[:8]}"
    zk = KazooClient(hosts=zk_hosts)
    zk.start(timeout=10)
    zk.ensure_path(chroot)
    store = Store(pg_dsn, schema).open()
    try:
        migrate.migrate(store)
        ha: HaLoop
        coord = Coordinator(
            ZkSettings(hosts=zk_hosts + chroot, session_timeout=2.0, retry_timeout=0.5),
            "sandbox",
            "a",
            on_state=lambda s: ha.on_state(s),
        )
        ha = HaLoop(coord, Timing(session_timeout=2.0, loop_interval=0.5, request_timeout=0.2))
        coord.start(timeout=5)
        pipeline = RecordingPipeline(store)
        node = Node("a", pipeline, store, ha)
        state = LiveState(node, ha, 0.5)

        async def run() -> tuple[int, str]:
            server = AdminServer(state, AdminSettings(listen=f"127.0.0.1:{free_port()}"))
            await server.start()
            try:
                state.observe(await node.run_cycle())
                state.observe(await node.run_cycle())
                async with aiohttp.ClientSession() as http:
                    async with http.get(server.url + "/leader") as resp:
                        status = resp.status
                    async with http.get(server.url + "/metrics") as resp:
                        text = await resp.text()
            finally:
                await server.stop()
            return status, text

        status, text = asyncio.run(run())
        assert status == 200, status
        assert "idsync_leader 1.0" in text
        assert pipeline.writes == [("a", 1)] * 3, pipeline.writes
        coord.stop()
        ok("node cycle over ZooKeeper and PostgreSQL; /leader 200 and /metrics from the admin API")
    finally:
        store.close()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        zk.delete(chroot, recursive=True)
        zk.stop()


def main(argv: list[str]) -> int:
    zk_hosts, pg_dsn = argv
    policy_in_force()
    ffi_callbacks()
    tls_with_cryptography()
    node_cycle_and_admin_api(zk_hosts, pg_dsn)
    print("sandbox smoke: all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
