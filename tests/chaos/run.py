"""One chaos run: three `idsync run` processes under a seeded fault schedule, then the invariants."""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.changes import ChangeGenerator
from tests.chaos.faults import ENSEMBLE_ONLY, MENU, Outcome
from tests.chaos.writeback import CloudGroups, writeback_config_for, written_back_guids
from tests.cluster.checks import (
    duplicate_objects,
    expected_users,
    fencing_violations,
    group_differences,
    user_differences,
)
from tests.cluster.cluster import LocalCluster, run_preflight, wait_converged
from tests.cluster.directory import AdDirectory
from tests.cluster.emulator import REPLICATION_LAG, EmulatorProcess
from tests.cluster.instance import GROUP_ANCHOR, ClusterSpec, Instance, wait_for, write_config
from tests.harness.ldap import LdapEndpoint, create_ou, delete_tree
from tests.harness.proxy import TcpProxy
from tests.harness.service import Service
from tests.harness.zookeeper import ZooKeeperEnsemble
from tests.writeback.helpers import writeback_differences


@dataclass
class ChaosResult:
    seed: int
    outcomes: list[Outcome]
    violations: list[str]
    changes: dict[str, int]
    failed_changes: dict[str, int]
    seconds: float
    unexpected_exits: list[str] = field(default_factory=list)
    duplicates: int = 0  # objects twice in the target for one anchor, at the end (must be 0)

    def table(self) -> str:
        rows = [f"chaos run: seed {self.seed}, {len(self.outcomes)} faults, {self.seconds:.0f}s"]
        rows.append(f"{'#':>3} {'fault':<22} {'target':<12} {'held':>5} {'leader':<9} {'recovered':>9}  note")
        for o in self.outcomes:
            lead = f"{o.leader_before}->{o.leader_after}"
            held, rec = f"{o.held:.1f}s", f"{o.recovered:.1f}s"
            rows.append(f"{o.index:>3} {o.fault:<22} {o.target:<12} {held:>5} {lead:<9} {rec:>9}  {o.note}")
        rows.append("changes made: " + ", ".join(f"{k} {v}" for k, v in sorted(self.changes.items())))
        if self.failed_changes:
            rows.append(
                "changes refused (directory down): "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.failed_changes.items()))
            )
        rows.append(f"duplicate objects: {self.duplicates}")
        rows.append(f"invariant violations: {len(self.violations)}")
        rows += [f"  - {v}" for v in self.violations]
        return "\n".join(rows)


class ChaosRun:
    """Owns the cluster, the change generator and the schedule."""

    def __init__(
        self,
        workdir: Path,
        *,
        seed: int,
        faults: int,
        postgres: Service,
        zookeeper: Service | None,
        samba_ep: LdapEndpoint,
        samba: Service | None,
        session_timeout: float = 2.0,
        deletion_threshold: int = 20,
        log: Callable[[str], None] = print,
        ensemble: ZooKeeperEnsemble | None = None,
    ) -> None:
        self.workdir = workdir
        self.seed = seed
        self.faults = faults
        self.rng = random.Random(seed)
        self.postgres = postgres
        self.zookeeper = zookeeper
        # With a 3-server ensemble node a talks to server 1, b to 2, c to 3 (each through its
        # own proxy), and the menu gains "ZooKeeper follower isolation".
        self.ensemble = ensemble
        self.zk_server: dict[str, int] = {}
        self.samba = samba
        self.samba_ep = samba_ep
        self.session_timeout = session_timeout
        self.deletion_threshold = deletion_threshold
        self.log = log
        self.violations: list[str] = []
        self.expected_exits: set[tuple[str, int]] = set()
        self.proxies: dict[str, TcpProxy] = {}
        self.nodes: dict[str, Instance] = {}
        self.duplicates = 0

    # -- helpers used by faults -------------------------------------------------------------

    def leader_or_any(self) -> str:
        try:
            name = self.cluster.leader()
        except Exception:
            name = None
        if name and name in self.nodes:
            return name
        alive = [n for n, i in self.nodes.items() if i.alive]
        return self.rng.choice(alive or list(self.nodes))

    def expect_exit(self, name: str) -> None:
        self.expected_exits.add((name, len(self.nodes[name].exits)))

    def ctl_args(self) -> list[str]:
        return self.cluster.ctl_args()

    # -- the run ----------------------------------------------------------------------------

    def setup(self) -> None:
        self.root_ou = create_ou(self.samba_ep, prefix="chaos")
        ad = AdDirectory(self.samba_ep)
        self.ous = (ad.ou("in1", self.root_ou), ad.ou("in2", self.root_ou))
        # Writeback's groups OU lies inside the imported scope: a loop would show as an extra group.
        self.cloud_ou = ad.ou("cloudwb", self.root_ou)
        ad.close()
        self.emulator = EmulatorProcess(self.workdir / "emulator", lag=REPLICATION_LAG).start()
        if self.ensemble is not None:
            all_hosts = self.ensemble.hosts()
        else:
            assert self.zookeeper is not None
            all_hosts = self.zookeeper.hosts  # type: ignore[attr-defined]
        chroot = f"/chaos-{uuid.uuid4().hex[:8]}"
        spec = ClusterSpec(
            cluster="chaos",
            pg_dsn=self.postgres.dsn,  # type: ignore[attr-defined]
            zk_hosts=all_hosts + chroot,
            ldap=self.samba_ep,
            include_ous=[self.root_ou],
            graph_url=self.emulator.url,
            session_timeout=self.session_timeout,
            deletion_threshold=self.deletion_threshold,
            # The generator's own churn (~0.4 deletes/s) stays far below the threshold in this
            # window, while a mass delete of threshold + 5 within seconds trips it.
            deletion_window=10.0,
            extra={"writeback": writeback_config_for(self.samba_ep, self.cloud_ou, self.workdir / "secrets")},
        )
        self.cluster = LocalCluster(self.workdir, spec, self.emulator)
        for k, name in enumerate(("a", "b", "c")):
            server = k + 1 if self.ensemble is not None else 0
            self.zk_server[name] = server
            host_port = self.ensemble.hosts(server) if self.ensemble is not None else all_hosts.split(",")[0]
            zk_host, zk_port = host_port.rsplit(":", 1)
            proxy = TcpProxy(zk_host, int(zk_port))
            self.proxies[name] = proxy
            node_spec = ClusterSpec(**{**spec.__dict__, "zk_hosts": proxy.address + chroot})
            schema = f"chaos_{name}_{uuid.uuid4().hex[:6]}"
            self.cluster.schemas.append(schema)
            path, port = write_config(node_spec, name, self.workdir / name, schema)
            self.nodes[name] = self.cluster.nodes[name] = Instance(name, path, port, self.workdir / name)
        # The emulator starts as a new tenant: register the group anchor extension as an operator would.
        run_preflight(self.nodes["a"].config, fix=True)
        self.changes = ChangeGenerator(self.samba_ep, self.ous, self.seed)
        self.changes.seed(users=30, groups=3)
        self.cloud = CloudGroups(self.cluster, self.seed)

    def run(self) -> ChaosResult:
        t0 = time.monotonic()
        self.setup()
        outcomes: list[Outcome] = []
        try:
            for n in self.nodes.values():
                n.start()
            self.cluster.wait_leader(timeout=60)
            self._converge(timeout=120)
            self.cloud.create(4)
            self.changes.start()
            names = [n for n in MENU if self.ensemble is not None or n not in ENSEMBLE_ONLY]
            weights = [MENU[n][1] for n in names]
            for i in range(1, self.faults + 1):
                fault = self.rng.choices(names, weights=weights)[0]
                hold = round(self.rng.uniform(0.5, 2.5 * self.session_timeout), 1)
                before = self._leader_name()
                target, note = MENU[fault][0](self, self.rng, hold)
                recovered = self._recover()
                outcomes.append(Outcome(i, fault, target, hold, before, self._leader_name(), recovered, note))
                self.log(outcomes[-1].__repr__())
                if i % 5 == 0:  # writeback bursts while faults strike
                    self.cloud.churn()
                time.sleep(self.rng.uniform(0.2, 1.5))
            self.changes.stop()
            self._converge(timeout=180)
            self._check_processes()
        except Exception as exc:
            self.violations.append(f"run aborted: {type(exc).__name__}: {exc}")
        finally:
            self.changes.stop()
            self._teardown()
        return ChaosResult(
            self.seed,
            outcomes,
            self.violations,
            dict(self.changes.log.done),
            dict(self.changes.log.failed),
            time.monotonic() - t0,
            duplicates=self.duplicates,
        )

    def _leader_name(self) -> str:
        try:
            return self.cluster.leader() or "-"
        except Exception:
            return "?"

    def _recover(self, timeout: float = 60) -> float:
        """Seconds until some node is leader and exporting again."""
        t0 = time.monotonic()

        def exporting() -> bool:
            name = self._leader_name()
            node = self.nodes.get(name)
            last = node.last_sentence() if node and node.alive else ""
            return "exporting" in last and "stopped:" not in last

        try:
            wait_for(exporting, timeout, "a leader exporting again", step=0.2)
        except AssertionError as exc:
            self.violations.append(f"no recovery: {exc}")
        return time.monotonic() - t0

    def _converge(self, timeout: float) -> None:
        ad = AdDirectory(self.samba_ep)
        try:
            expected = expected_users(ad.users_under(self.root_ou))
            written_back = written_back_guids(self.samba_ep, self.cloud_ou)
            groups = {g: m for g, m in ad.groups_under(self.root_ou).items() if g not in written_back}
        finally:
            ad.close()

        def differences() -> list[str]:
            state = self.emulator.state()
            wb = writeback_differences(self.samba_ep, self.cloud_ou, self.root_ou, state)
            return user_differences(expected, state) + group_differences(groups, state, GROUP_ANCHOR) + wb

        try:
            wait_converged(differences, timeout)
        except AssertionError as exc:
            self.violations.append(str(exc))
        state: dict[str, Any] = self.emulator.state()
        dups = duplicate_objects(state, GROUP_ANCHOR)
        self.duplicates = len(dups)
        self.violations += dups
        self.violations += fencing_violations(self.emulator.writes())
        self.log(
            f"writeback: {len(self.cloud.ids)} cloud groups checked in AD;"
            f" cloud calls failed: {self.cloud.failed}"
        )

    def _check_processes(self) -> None:
        for name, inst in self.nodes.items():
            if not inst.alive:
                self.violations.append(
                    f"node {name} died unnoticed (exit {inst.proc.poll() if inst.proc else '?'})"
                )
            for k, rc in enumerate(inst.exits):
                if (name, k) not in self.expected_exits:
                    self.violations.append(f"node {name} exited unexpectedly with {rc}")

    def _teardown(self) -> None:
        for inst in self.nodes.values():
            if inst.alive:
                inst.signal(18)  # SIGCONT, in case it was stopped
        self.cluster.close()
        for p in self.proxies.values():
            p.close()
        self.emulator.stop()
        with contextlib.suppress(Exception):
            delete_tree(self.samba_ep, self.root_ou)
