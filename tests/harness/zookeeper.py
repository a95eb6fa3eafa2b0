"""ZooKeeper 3.8 from Debian's packages, with a small tickTime for fast session expiry: standalone,
or a 3-server ensemble whose server-to-server links run through TCP proxies (to isolate one)."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import Any

from .packages import provider
from .ports import free_port
from .process import ServiceStartError, wait_until
from .proxy import TcpProxy
from .service import Service

JAVA_DIR = Path("/usr/share/java")
# zookeeper.jar's manifest Class-Path names its dependencies (netty, jute, slf4j-api, ...);
# it lacks only an slf4j binding, and slf4j-simple logs to stderr, i.e. into our log file.
CLASSPATH_JARS = ("zookeeper.jar", "slf4j-simple.jar")
TICK_MS = 200


def four_letter(port: int, cmd: str, timeout: float = 1.0) -> str:
    """Send a ZooKeeper four-letter command (ruok, srvr, mntr) and return the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(cmd.encode())
        chunks = []
        while data := s.recv(4096):
            chunks.append(data)
    return b"".join(chunks).decode()


class ZooKeeper(Service):
    """A standalone ZooKeeper on 127.0.0.1:`port`; sessions may be as short as 2 ticks (400 ms)."""

    name = "zookeeper"

    sync_limit = 5

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir)
        self.port = port or free_port()

    def extra_config(self) -> list[str]:
        """More zoo.cfg lines (an ensemble member's `server.N` entries)."""
        return []

    @property
    def hosts(self) -> str:
        """The kazoo `hosts` string."""
        return f"127.0.0.1:{self.port}"

    def params(self) -> dict[str, Any]:
        return {"port": self.port}

    def prepare(self) -> None:
        conf = self.workdir / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        (conf / "zoo.cfg").write_text(
            "\n".join(
                [
                    f"tickTime={TICK_MS}",
                    f"minSessionTimeout={2 * TICK_MS}",
                    "maxSessionTimeout=60000",  # chaos tests may want long sessions too
                    "initLimit=10",
                    f"syncLimit={self.sync_limit}",
                    f"dataDir={self.workdir / 'data'}",
                    f"clientPort={self.port}",
                    "clientPortAddress=127.0.0.1",
                    "maxClientCnxns=0",
                    # The AdminServer (Jetty) would take port 8080: several instances would collide.
                    "admin.enableServer=false",
                    "4lw.commands.whitelist=ruok,srvr,mntr,stat,cons",
                    "autopurge.purgeInterval=0",
                    *self.extra_config(),
                    "",
                ]
            )
        )

    def command(self) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise ServiceStartError(self.name, "no `java` on PATH (apt-get install default-jre-headless)")
        missing = [j for j in CLASSPATH_JARS if not (JAVA_DIR / j).exists()]
        if missing:
            packages = sorted({provider(str(JAVA_DIR / j)) or "libzookeeper-java" for j in missing})
            raise ServiceStartError(
                self.name, f"missing {missing} in {JAVA_DIR} (apt-get install {' '.join(packages)})"
            )
        classpath = ":".join([*(str(JAVA_DIR / j) for j in CLASSPATH_JARS), str(self.workdir / "conf")])
        return [
            java,
            "-Xmx256m",
            # A small, short-lived JVM: serial GC and C1 only start faster and use less memory.
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-cp",
            classpath,
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            str(self.workdir / "conf" / "zoo.cfg"),
        ]

    def probe(self) -> bool:
        # `ruok` answers before the server serves requests; `srvr` reports a Mode only once it does.
        return "Mode:" in four_letter(self.port, "srvr")

    def describe(self) -> str:
        return f"hosts={self.hosts} tickTime={TICK_MS}ms sessions>={2 * TICK_MS}ms"


class EnsembleMember(ZooKeeper):
    """One server of a `ZooKeeperEnsemble`: `servers` maps each id to the peer and election
    address *this* server uses for it (its own ports, or proxies to the others)."""

    def __init__(
        self, workdir: Path, myid: int, servers: dict[int, str], sync_limit: int, port: int | None = None
    ) -> None:
        super().__init__(workdir, port)
        self.myid = myid
        self.servers = servers
        self.sync_limit = sync_limit

    def params(self) -> dict[str, Any]:
        return {"port": self.port, "myid": self.myid, "servers": self.servers, "sync_limit": self.sync_limit}

    def extra_config(self) -> list[str]:
        return [f"server.{n}={addr}" for n, addr in sorted(self.servers.items())]

    def prepare(self) -> None:
        super().prepare()
        (self.workdir / "data" / "myid").write_text(f"{self.myid}\n")

    def mode(self) -> str:
        """leader | follower | '' (not serving: looking for a quorum)."""
        try:
            reply = four_letter(self.port, "srvr")
        except OSError:
            return ""
        for line in reply.splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return ""


class ZooKeeperEnsemble:
    """Three ZooKeeper servers on loopback; every server-to-server link goes through its own
    TcpProxy, so `isolate(n)` partitions server n (and the clients connected only to it) from
    the quorum while the other two carry on. An isolated follower goes on answering its clients
    for about `sync_limit` ticks before it notices (ZooKeeper's learner read timeout)."""

    def __init__(self, workdir: Path, size: int = 3, sync_limit: int = 5) -> None:
        self.workdir = workdir
        ids = range(1, size + 1)
        own = {n: (free_port(), free_port()) for n in ids}  # (peer, election) ports
        # proxies[(i, j)]: server i's way to server j, one proxy per port.
        self.proxies: dict[tuple[int, int], tuple[TcpProxy, TcpProxy]] = {
            (i, j): (TcpProxy("127.0.0.1", own[j][0]), TcpProxy("127.0.0.1", own[j][1]))
            for i in ids
            for j in ids
            if i != j
        }
        self.members: dict[int, EnsembleMember] = {}
        for i in ids:
            servers = {}
            for j in ids:
                if j == i:
                    servers[j] = f"127.0.0.1:{own[j][0]}:{own[j][1]}"
                else:
                    peer, election = self.proxies[(i, j)]
                    servers[j] = f"127.0.0.1:{peer.port}:{election.port}"
            self.members[i] = EnsembleMember(workdir / f"zk{i}", i, servers, sync_limit)

    def start(self, timeout: float = 90.0) -> None:
        """Launch every server, then wait until each serves (a quorum needs them together)."""
        for m in self.members.values():
            m.workdir.mkdir(parents=True, exist_ok=True)
            m.prepare()
            m.launch()
        for m in self.members.values():
            wait_until(m.probe, service=f"zookeeper-{m.myid}", timeout=timeout, log=m.log, alive=m.running)

    def hosts(self, *ids: int) -> str:
        """The kazoo hosts string for the given servers (all when none are named)."""
        return ",".join(self.members[n].hosts for n in (ids or tuple(self.members)))

    def mode(self, n: int) -> str:
        return self.members[n].mode()

    def followers(self) -> list[int]:
        return [n for n in self.members if self.mode(n) == "follower"]

    def isolate(self, n: int) -> None:
        """Partition server n from the others: links stay open but carry nothing, as in a real
        partition, where each side notices only through its own timeouts."""
        for (i, j), pair in self.proxies.items():
            if n in (i, j):
                for p in pair:
                    p.cut()

    def heal(self) -> None:
        for pair in self.proxies.values():
            for p in pair:
                p.restore()

    def wait_serving(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.mode(n) in ("leader", "follower"):
                return
            time.sleep(0.1)
        raise ServiceStartError(f"zookeeper-{n}", f"not serving after {timeout:.0f}s")

    def close(self) -> None:
        for m in self.members.values():
            m.destroy()
        for pair in self.proxies.values():
            for p in pair:
                p.close()
