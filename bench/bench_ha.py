"""HA timings and change flow on real processes (ZooKeeper, PostgreSQL, Samba AD, the emulator).

- unplanned failover: SIGKILL of the leader -> first write by the new leader, against the session
  timeout plus the lock-delay the new leader waits (target: <= that + one cycle interval), 10
  runs with fast timeouts (4 s session) and 3 runs at the shipped defaults (30 s session, 10 s
  loop and retry, 10 s request timeout = lock-delay);
- planned switchover: `idsync switchover` request -> new leader in place (target <= 1 s), 10 runs;
- change latency: an AD change -> its export landed in the emulator, p50/p99 over 200 changes at
  the default cycle interval (target p99 <= 3 s);
- staging freshness: the same change -> in a staging node's desired state (target <= 2 intervals).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg

from bench.common import CONFIGURED, Figure
from idsync.config.ha import HaSettings, ZooKeeperSettings
from idsync.config.service import SyncSettings
from idsync.config.target import GraphSettings
from tests.cluster.checks import immutable_id
from tests.cluster.cluster import LocalCluster
from tests.cluster.directory import AdDirectory
from tests.cluster.emulator import EmulatorProcess
from tests.cluster.instance import ClusterSpec, wait_for
from tests.harness.ldap import LdapEndpoint, create_ou, delete_tree
from tests.harness.stack import SHARED_DIR, Stack

SESSION = 4.0
REQUEST_TIMEOUT = 2.0  # = the lock-delay of the fast runs
INTERVAL = SyncSettings.model_fields["interval_seconds"].default  # the shipped default
RUNS = 10
DEFAULT_RUNS = 3  # each takes about 45 s
CHANGES = 200
# The shipped HA defaults (config/ha.py, config/target.py).
DEFAULT_SESSION = ZooKeeperSettings.model_fields["session_timeout_seconds"].default
DEFAULT_LOOP = HaSettings.model_fields["loop_interval_seconds"].default
DEFAULT_RETRY = HaSettings.model_fields["retry_timeout_seconds"].default
DEFAULT_REQUEST = GraphSettings.model_fields["request_timeout_seconds"].default  # = lock-delay


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def _stack() -> tuple[Stack, bool]:
    shared = Stack.load(SHARED_DIR)
    if shared is not None and all(shared.live_services().values()):
        return shared, False
    root = Path(tempfile.mkdtemp(prefix="idsync-bench-"))
    root.chmod(0o755)
    return Stack(root), True


def _first_write_at_epoch(c: LocalCluster, epoch: int, since: int, timeout: float) -> float:
    def found() -> float | None:
        for w in c.emulator.writes(since):
            if f"epoch={epoch})" in w["user_agent"]:
                return float(w["time"])
        return None

    return float(wait_for(found, timeout, f"a write at epoch {epoch}", step=0.05))


def _wait_healthy(c: LocalCluster, node: str) -> None:
    def healthy() -> bool:
        m = c.view().members.get(node)
        return m is not None and m.healthy

    wait_for(healthy, 60, "a healthy standby")


def failovers(c: LocalCluster, ad: AdDirectory, ou: str, runs: int = RUNS) -> list[float]:
    out = []
    for _ in range(runs):
        leader = c.wait_leader(60)
        other = next(n for n in c.nodes if n != leader)
        _wait_healthy(c, other)
        epoch = c.view().epoch.epoch
        since = c.emulator.get("/_emulator/requests?limit=0")["seq"]
        t0 = time.time()
        c.nodes[leader].kill()
        ad.add_user(ou, f"f{uuid.uuid4().hex[:8]}")  # something for the new leader to write
        out.append(_first_write_at_epoch(c, epoch + 1, since, c.spec.session_timeout * 10) - t0)
        c.nodes[leader].start()
    return out


def switchovers(c: LocalCluster) -> list[float]:
    out = []
    for _ in range(RUNS):
        leader = c.wait_leader(60)
        other = next(n for n in c.nodes if n != leader)
        _wait_healthy(c, other)
        r = subprocess.run(
            [sys.executable, "-m", "idsync", "switchover", *c.ctl_args(), "--to", other, "--wait", "30"],
            capture_output=True,
            text=True,
            check=True,
        )
        out.append(float(r.stdout.strip().rsplit(" in ", 1)[1].rstrip("s")))
    return out


def change_flow(
    c: LocalCluster, ad: AdDirectory, ou: str, staging_schema: str, dsn: str
) -> tuple[list[float], list[float]]:
    users = [ad.add_user(ou, f"l{uuid.uuid4().hex[:8]}") for _ in range(CHANGES)]
    ids: dict[str, str] = {}

    def exported() -> bool:
        st = c.emulator.state()
        by_iid = {u.get("onPremisesImmutableId"): u["id"] for u in st["users"]}
        ids.update({u.guid: by_iid[immutable_id(u.guid)] for u in users if immutable_id(u.guid) in by_iid})
        return len(ids) == len(users)

    wait_for(exported, 300, "the latency users to be exported", step=1.0)
    time.sleep(INTERVAL * 2)
    since = c.emulator.get("/_emulator/requests?limit=0")["seq"]
    changed: dict[str, float] = {}
    stop = threading.Event()

    def change_all() -> None:
        for u in users:  # a steady stream of changes, about 5 per second
            changed[u.guid] = time.time()
            ad.replace(u.dn, displayName=f"changed {uuid.uuid4().hex[:6]}")
            time.sleep(0.2)
        stop.set()

    t = threading.Thread(target=change_all)
    t.start()
    t.join()
    landed: dict[str, float] = {}
    id_to_guid = {v: k for k, v in ids.items()}

    def all_landed() -> bool:
        for w in c.emulator.writes(since):
            uid = w["path"].split("?")[0].rstrip("/").rsplit("/", 1)[-1]
            g = id_to_guid.get(uid)
            if g and w["method"] == "PATCH" and g not in landed and w["status"] < 300:
                landed[g] = float(w["time"])
        return len(landed) == len(users)

    wait_for(all_landed, 120, "every change to land", step=0.5)
    latency = [landed[g] - changed[g] for g in changed]
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f'SELECT anchor, extract(epoch from updated_at) FROM "{staging_schema}".desired_object'
            " WHERE anchor = ANY(%s)",
            ([u.guid for u in users],),
        ).fetchall()
    fresh = [float(ts) - changed[a] for a, ts in rows if a in changed]
    return latency, fresh


def default_failovers(stack: Stack, samba: LdapEndpoint, ou: str, work: Path) -> list[float]:
    """Failovers with every HA timeout at its shipped default (the sync interval too)."""
    em = EmulatorProcess(work / "emulator-defaults").start()
    spec = ClusterSpec(
        cluster="benchdef",
        pg_dsn=stack.postgres().dsn,
        zk_hosts=stack.zookeeper().hosts + f"/benchdef-{uuid.uuid4().hex[:6]}",
        ldap=samba,
        include_ous=[ou],
        graph_url=em.url,
        session_timeout=DEFAULT_SESSION,
        interval=INTERVAL,
        request_timeout=DEFAULT_REQUEST,
        extra={"ha": {"loop_interval_seconds": DEFAULT_LOOP, "retry_timeout_seconds": DEFAULT_RETRY}},
    )
    c = LocalCluster(work / "defaults", spec, em)
    ad = AdDirectory(samba)
    try:
        c.start("a")
        c.wait_leader(120)
        c.start("b")
        return failovers(c, ad, ou, DEFAULT_RUNS)
    finally:
        ad.close()
        c.close()
        em.stop()


def _failover_figures(label: str, runs: list[float], session: float, delay: float) -> list[Figure]:
    budget = session + delay
    med, mx = statistics.median(runs), max(runs)
    target = f"<= session + lock-delay + {INTERVAL:g} s"
    return [
        Figure(
            f"unplanned failover ({label}), median",
            med,
            "s",
            budget,
            f"session {session:g} s + lock-delay {delay:g} s",
            target,
            med <= budget + INTERVAL,
            basis=CONFIGURED,
            note=f"{len(runs)} runs: SIGKILL of the leader -> first write by the new leader; max {mx:.2f} s",
        ),
        Figure(
            f"unplanned failover ({label}), max",
            mx,
            "s",
            budget,
            f"session {session:g} s + lock-delay {delay:g} s",
            target,
            mx <= budget + INTERVAL,
            basis=CONFIGURED,
        ),
    ]


def main() -> list[Figure]:
    stack, private = _stack()
    work = Path(tempfile.mkdtemp(prefix="idsync-bench-ha-"))
    samba = stack.samba().endpoint
    ou = create_ou(samba, prefix="benchha")
    em = EmulatorProcess(work / "emulator").start()
    spec = ClusterSpec(
        cluster="bench",
        pg_dsn=stack.postgres().dsn,
        zk_hosts=stack.zookeeper().hosts + f"/bench-{uuid.uuid4().hex[:6]}",
        ldap=samba,
        include_ous=[ou],
        graph_url=em.url,
        session_timeout=SESSION,
        interval=INTERVAL,
        request_timeout=REQUEST_TIMEOUT,
        extra={"target.graph": {"write_budget": 100000, "write_window_seconds": 60}},
    )
    c = LocalCluster(work, spec, em)
    ad = AdDirectory(samba)
    try:
        for _ in range(5):
            ad.add_user(ou, f"s{uuid.uuid4().hex[:8]}")
        c.start("a")
        c.wait_leader(60)
        c.start("b")
        fo = failovers(c, ad, ou)
        so = switchovers(c)
        leader = c.wait_leader(60)
        staging = next(n for n in c.nodes if n != leader)
        schema = c.schemas[list(c.nodes).index(staging)]
        latency, fresh = change_flow(c, ad, ou, schema, spec.pg_dsn)
        c.close()
        dfo = default_failovers(stack, samba, ou, work)
    finally:
        ad.close()
        c.close()
        em.stop()
        delete_tree(samba, ou)
        if private:
            stack.down()
    return [
        *_failover_figures(f"fast: {SESSION:g} s session", fo, SESSION, REQUEST_TIMEOUT),
        *_failover_figures(
            f"shipped defaults: {DEFAULT_SESSION:g} s session", dfo, DEFAULT_SESSION, DEFAULT_REQUEST
        ),
        Figure(
            "planned switchover, median",
            statistics.median(so),
            "s",
            target="<= 1 s",
            ok=statistics.median(so) <= 1,
            note=f"{RUNS} runs of `idsync switchover --to`: request -> new leader; max {max(so):.2f} s",
        ),
        Figure("planned switchover, max", max(so), "s", target="<= 1 s", ok=max(so) <= 1),
        Figure(
            "change latency p50",
            _pct(latency, 50),
            "s",
            INTERVAL,
            "cycle interval",
            "p99 <= 3 s",
            None,
            basis=CONFIGURED,
            note=f"{len(latency)} AD changes -> PATCH landed in the emulator, default {INTERVAL:g} s cycles",
        ),
        Figure(
            "change latency p99",
            _pct(latency, 99),
            "s",
            INTERVAL,
            "cycle interval",
            "<= 3 s",
            _pct(latency, 99) <= 3,
            basis=CONFIGURED,
        ),
        Figure(
            "staging freshness p99",
            _pct(fresh, 99),
            "s",
            INTERVAL,
            "cycle interval",
            "<= 2 intervals",
            _pct(fresh, 99) <= 2 * INTERVAL,
            basis=CONFIGURED,
            note=f"{len(fresh)} changes -> in the staging node's desired state",
        ),
    ]


if __name__ == "__main__":
    for f in main():
        print(f)
