"""Fencing on real `idsync run` processes (ZooKeeper, PostgreSQL, Samba AD, the Graph emulator).

- a leader whose main loop hangs (its store locked by another connection) loses its lease and
  resigns; a standby takes over and the hung leader writes nothing more;
- a leader whose write bytes are held in the network longer than the session timeout: whatever
  arrives late is undone by the new leader's next cycle, and no hard delete is exposed to it.

Assertions are on sentences, log events and the emulator's request log (ordering), never on
wall-clock durations (bench_ha measures those).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import socket
import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.cluster.checks import (
    duplicate_objects,
    expected_users,
    fencing_violations,
    user_differences,
    write_epochs,
)
from tests.cluster.cluster import LocalCluster, wait_converged
from tests.cluster.directory import AdDirectory, User
from tests.cluster.instance import GROUP_ANCHOR, Instance, wait_for, write_config
from tests.conftest import ClusterFactory
from tests.harness.proxy import TcpProxy

SESSION = 2.0  # with 0.5 s cycles and 1 s request timeout (= lock-delay), as in test_processes


@pytest.fixture
def cluster(local_cluster: ClusterFactory) -> Iterator[LocalCluster]:
    with local_cluster(
        cluster="f",
        session_timeout=SESSION,
        stall_timeout=None,  # the daemon's default (the session timeout): the hung-leader test needs it
    ) as c:
        yield c


def add_users(ad: AdDirectory, ou: str, n: int) -> list[User]:
    return [ad.add_user(ou, f"u{uuid.uuid4().hex[:8]}", department="Sales") for _ in range(n)]


def converged(c: LocalCluster, ad: AdDirectory, ou: str, timeout: float = 30) -> None:
    expected = expected_users(ad.users_under(ou))
    wait_converged(lambda: user_differences(expected, c.state()), timeout)
    assert duplicate_objects(c.state(), GROUP_ANCHOR) == []


def keeper_sentences(node: Instance) -> list[str]:
    return [str(e.get("decision")) for e in node.events() if e.get("event") == "ha.keeper"]


def test_a_leader_whose_main_loop_hangs_resigns_and_a_standby_takes_over(
    cluster: LocalCluster, ad: AdDirectory, samba_ou: str, pg_dsn: str
) -> None:
    add_users(ad, samba_ou, 3)
    cluster.start("a")
    assert cluster.wait_leader() == "a"
    cluster.start("b")
    converged(cluster, ad, samba_ou)
    a, b = cluster.nodes["a"], cluster.nodes["b"]
    schema_a = cluster.schemas[0]
    # a resigns only for a healthy standby it has seen: let a cycle once b is a healthy member.
    wait_for(lambda: b.last_sentence().startswith("staging: leader is a"), 20, "b staging")
    seen = len(a.sentences())
    wait_for(lambda: len(a.sentences()) > seen + 1, 20, "a to cycle with b as a member")
    cycles_before = len(a.sentences())

    # Another connection holds a lock a's import needs: a's cycle blocks (for the statement
    # timeout, 5 minutes), while kazoo's heartbeat thread would keep its session alive forever.
    with psycopg.connect(pg_dsn) as locker:
        locker.execute(
            f'LOCK TABLE "{schema_a}".watermark, "{schema_a}".source_object IN ACCESS EXCLUSIVE MODE'
        )
        assert cluster.wait_leader(timeout=SESSION * 10, other_than="a") == "b"
        # a's lease keeper saw no progress: it stopped renewing, then resigned (no release record).
        said = keeper_sentences(a)
        stalled = [s for s in said if "main loop made no progress" in s]
        assert stalled and stalled[-1].startswith(
            "resigned leadership at epoch 1: main loop made no progress"
        )
        assert any(e.get("event") == "ha.resigned" and e.get("epoch") == 1 for e in a.events())
        # the leader znode is visible before b's cycle ends and logs its sentence
        wait_for(lambda: any(s.startswith("promoted: epoch 2") for s in b.sentences()), 20, "b's sentence")
        promoted = [s for s in b.sentences() if s.startswith("promoted: epoch 2")]
        assert promoted and "previous leader a was lost" in promoted[0] and "1s lock-delay" in promoted[0]
        wait_for(lambda: "leader at epoch 2: exporting" in b.last_sentence(), 20, "b exporting")
        add_users(ad, samba_ou, 2)
        converged(cluster, ad, samba_ou)  # b exports while a is still hung
        assert len(a.sentences()) <= cycles_before + 1  # a's loop really was stuck
        locker.rollback()

    # Unstuck, a finds b leading and stays a staging node; nothing of epoch 1 came after epoch 2.
    wait_for(lambda: a.last_sentence().startswith("staging: leader is b (epoch 2)"), 30, "a to stage")
    add_users(ad, samba_ou, 1)
    converged(cluster, ad, samba_ou)
    assert fencing_violations(cluster.emulator.writes()) == []
    assert cluster.leader() == "b"


WRITE_ITEM = re.compile(rb'"method"\s*:\s*"(PATCH|POST|DELETE)"')


class WriteHoldingProxy:
    """A TCP proxy to Graph that, once armed, holds every chunk carrying a `$batch` write item
    (and the rest of that connection) until `release()`: the network of a partition that TCP
    later heals. Reads pass, so the leader keeps importing and reaches its export."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.armed = False
        self.held = 0  # connections whose write bytes were held
        self._released = threading.Event()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self) -> None:
        self._released.clear()
        self.armed = True

    def release(self) -> None:
        self.armed = False
        self._released.set()

    def close(self) -> None:
        self._closed = True
        self.release()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.target, timeout=5)
        upstream.settimeout(None)
        threading.Thread(target=self._down, args=(upstream, client), daemon=True).start()
        held: list[bytes] = []
        try:
            while data := client.recv(65536):
                if not held and self.armed and WRITE_ITEM.search(data):
                    self.held += 1
                if held or (self.armed and WRITE_ITEM.search(data)):
                    held.append(data)
                    continue
                upstream.sendall(data)
        except OSError:
            pass
        if held:
            # The client gave up (its write deadline) and closed; the bytes arrive anyway.
            self._released.wait()
            with contextlib.suppress(OSError):
                for chunk in held:
                    upstream.sendall(chunk)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    @staticmethod
    def _down(upstream: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                client.sendall(data)
        for s in (upstream, client):
            with contextlib.suppress(OSError):
                s.close()


def _start_behind_proxies(
    c: LocalCluster, name: str, graph: WriteHoldingProxy, zk: TcpProxy, chroot: str
) -> Instance:
    """Start `name` with its Graph and ZooKeeper traffic through `graph` and `zk`."""
    schema = f"t_{name}_{uuid.uuid4().hex[:8]}"
    c.schemas.append(schema)
    spec = dataclasses.replace(c.spec, graph_url=f"http://{graph.address}", zk_hosts=zk.address + chroot)
    path, port = write_config(spec, name, c.workdir / name, schema)
    inst = Instance(name, path, port, c.workdir / name)
    c.nodes[name] = inst
    return inst.start()


def test_write_bytes_held_beyond_the_session_are_undone_and_expose_no_hard_delete(
    cluster: LocalCluster, ad: AdDirectory, samba_ou: str, zk_hosts: str, zk_chroot: str
) -> None:
    em_host, em_port = cluster.emulator.url.removeprefix("http://").rsplit(":", 1)
    zk_host, zk_port = zk_hosts.split(",")[0].rsplit(":", 1)
    graph = WriteHoldingProxy(em_host, int(em_port))
    with contextlib.closing(graph), TcpProxy(zk_host, int(zk_port)) as zk:
        victim = add_users(ad, samba_ou, 3)[0]
        doomed = add_users(ad, samba_ou, 1)[0]
        a = _start_behind_proxies(cluster, "a", graph, zk, zk_chroot)
        assert cluster.wait_leader() == "a"
        cluster.start("b")
        converged(cluster, ad, samba_ou)
        b = cluster.nodes["b"]
        wait_for(lambda: b.last_sentence().startswith("staging: leader is a"), 20, "b staging")

        # The network between a and Graph holds every byte from now on (a real partition: TCP
        # keeps them and delivers them when it heals). a's next write goes into that hole.
        graph.arm()
        since = cluster.emulator.get("/_emulator/requests?limit=0")["seq"]
        ad.replace(victim.dn, displayName="Stale From A")
        wait_for(
            lambda: any(e.get("event") == "export.batch_dropped" for e in a.events()),
            30,
            "a's write to time out at its deadline (its bytes are held)",
        )
        # A hard delete now needs a fresh quorum confirmation; a is then cut from ZooKeeper too.
        zk.cut()
        ad.delete(doomed.dn)
        assert cluster.wait_leader(timeout=SESSION * 10, other_than="a") == "b"
        ad.replace(victim.dn, displayName="Fresh From B")
        expected = expected_users(ad.users_under(samba_ou))
        wait_converged(lambda: user_differences(expected, cluster.state()), 30)  # b wrote it all
        epoch2_first = min(seq for seq, _, ep in write_epochs(cluster.emulator.writes(since)) if ep == 2)

        # Heal: the held bytes (older than the session timeout) reach Graph now.
        assert graph.held > 0
        graph.release()
        zk.restore()
        # a stepped down (resigned or demoted) and follows b.
        wait_for(lambda: a.last_sentence().startswith("staging: leader is b (epoch 2)"), 30, "a to follow b")
        writes = cluster.emulator.writes(since)
        late = [(seq, node, ep) for seq, node, ep in write_epochs(writes) if ep == 1 and seq > epoch2_first]
        assert late, "the held write should have arrived after the new leader's writes"
        by_seq = {int(w["seq"]): w for w in writes}
        assert all(by_seq[seq]["method"] != "DELETE" for seq, _, _ in late)
        # No epoch-1 DELETE at all after the cut: the delete waited for a quorum that never came.
        assert not [w for w in writes if w["method"] == "DELETE" and "epoch=1)" in str(w.get("user_agent"))]

        # The next cycle of the new leader undoes whatever the late write changed.
        add_users(ad, samba_ou, 1)
        converged(cluster, ad, samba_ou)
        users = {u["userPrincipalName"]: u for u in cluster.state()["users"]}
        assert users[victim.upn]["displayName"] == "Fresh From B"
        assert doomed.upn not in users
