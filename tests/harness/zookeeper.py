"""ZooKeeper 3.8 from Debian's packages, standalone, with a small tickTime for fast session expiry."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

from .packages import provider
from .ports import free_port
from .process import ServiceStartError
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

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir)
        self.port = port or free_port()

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
                    "syncLimit=5",
                    f"dataDir={self.workdir / 'data'}",
                    f"clientPort={self.port}",
                    "clientPortAddress=127.0.0.1",
                    "maxClientCnxns=0",
                    # The AdminServer (Jetty) would take port 8080: several instances would collide.
                    "admin.enableServer=false",
                    "4lw.commands.whitelist=ruok,srvr,mntr,stat,cons",
                    "autopurge.purgeInterval=0",
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
