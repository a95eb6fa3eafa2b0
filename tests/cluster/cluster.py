"""A local idsync cluster: N `idsync run` processes, one Graph emulator, real ZK/PG/Samba."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg

from idsync.ha.records import ClusterView
from idsync.ha.zk import Coordinator, ZkSettings
from tests.cluster.emulator import REPLICATION_LAG, EmulatorProcess
from tests.cluster.instance import ClusterSpec, Instance, wait_for, write_config


class LocalCluster:
    """Starts, disrupts and observes the nodes of one test cluster."""

    def __init__(self, workdir: Path, spec: ClusterSpec, emulator: EmulatorProcess) -> None:
        self.workdir = workdir
        self.spec = spec
        self.emulator = emulator
        self.nodes: dict[str, Instance] = {}
        self.schemas: list[str] = []
        self._ctl: Coordinator | None = None
        self.preflight: list[dict[str, Any]] | None = None  # the first node's `preflight --fix`

    def add(self, name: str) -> Instance:
        schema = f"t_{name}_{uuid.uuid4().hex[:8]}"
        self.schemas.append(schema)
        path, port = write_config(self.spec, name, self.workdir / name, schema)
        inst = Instance(name, path, port, self.workdir / name)
        self.nodes[name] = inst
        if self.preflight is None and self.spec.register_extension:
            self.preflight = run_preflight(path, fix=True)
        return inst

    def start(self, *names: str) -> None:
        for n in names:
            (self.nodes.get(n) or self.add(n)).start()

    # -- observation ------------------------------------------------------------------------

    @property
    def ctl(self) -> Coordinator:
        if self._ctl is None:
            self._ctl = Coordinator(
                ZkSettings(hosts=self.spec.zk_hosts, session_timeout=10, retry_timeout=2),
                self.spec.cluster,
                "observer",
            )
            self._ctl.start(timeout=10)
        return self._ctl

    def view(self) -> ClusterView:
        return self.ctl.read()

    def leader(self) -> str | None:
        v = self.view()
        return v.leader.node if v.leader else None

    def wait_leader(self, timeout: float = 30, *, other_than: str | None = None) -> str:
        def ok() -> str | None:
            name = self.leader()
            return name if name and name != other_than else None

        return str(wait_for(ok, timeout, f"a leader other than {other_than}" if other_than else "a leader"))

    def state(self) -> dict[str, Any]:
        return self.emulator.state()

    def ctl_args(self) -> list[str]:
        return ["--zookeeper", self.spec.zk_hosts, "--cluster", self.spec.cluster]

    # -- teardown ---------------------------------------------------------------------------

    def close(self) -> None:
        for inst in self.nodes.values():
            if inst.alive:
                inst.resume()
                inst.kill()
        if self._ctl is not None:
            self._ctl.stop()
        with contextlib.suppress(psycopg.Error), psycopg.connect(self.spec.pg_dsn, autocommit=True) as conn:
            for s in self.schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')


def run_preflight(config: Path, *, fix: bool = False) -> list[dict[str, Any]]:
    """`idsync preflight [--fix] --json` as an operator runs it; the checks, by name.

    With `fix`, the group anchor extension must come out registered (the strict emulator starts
    as a new tenant, without it).
    """
    cmd = [sys.executable, "-m", "idsync", "--config", str(config), "preflight", "--json", "--standalone"]
    res = subprocess.run([*cmd, "--fix"] if fix else cmd, capture_output=True, timeout=120)
    try:
        checks: list[dict[str, Any]] = orjson.loads(res.stdout)
    except orjson.JSONDecodeError:
        raise RuntimeError(
            f"preflight printed no report (exit {res.returncode}): {res.stderr[-2000:]!r}"
        ) from None
    ext = next((c for c in checks if c["name"] == "group-extension"), None)
    if fix and (ext is None or ext["status"] != "OK"):
        raise RuntimeError(f"preflight --fix did not register the group extension: {checks}")
    return checks


def wait_converged(check: Any, timeout: float, what: str = "the target to match AD") -> None:
    """Poll `check()` (a list of differences) until it is empty."""
    last: list[str] = []

    def done() -> bool:
        nonlocal last
        last = list(check())
        return not last

    try:
        wait_for(done, timeout, what, step=0.25)
    except AssertionError:
        raise AssertionError(f"{what}: still {len(last)} differences, e.g. {last[:5]}") from None


@contextlib.contextmanager
def running_cluster(
    workdir: Path, *, emulator_args: tuple[str, ...] = (), **spec: Any
) -> Iterator[LocalCluster]:
    """A Graph emulator process and a LocalCluster pointed at it; both stopped on exit.

    `spec` holds the ClusterSpec fields except `graph_url`, which is the emulator's;
    `emulator_args` are more `idsync graph-emulator` options. Graph's replication lag is on.
    """
    em = EmulatorProcess(workdir / "emulator", args=emulator_args, lag=REPLICATION_LAG).start()
    c = LocalCluster(workdir, ClusterSpec(graph_url=em.url, **spec), em)
    try:
        yield c
    finally:
        c.close()
        em.stop()
