"""`make demo`: two idsync instances syncing a sample AD into the Graph emulator, then a live switchover.

It brings up the local stack (PostgreSQL, ZooKeeper, a Samba AD DC), loads ~1,000 sample users
and 50 groups into AD, starts the Graph emulator and two `idsync run` processes, waits until the
first full sync has landed, prints `idsync status`, performs a switchover and times it, and then
leaves everything running. `make demo-stop` stops it all.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import psycopg
from ldap3.core.exceptions import LDAPNoSuchObjectResult

from deploy.demo import monitoring
from idsync.cli import main as idsync
from tests.cluster.emulator import DOMAIN, EmulatorProcess
from tests.cluster.instance import ClusterSpec, Instance, wait_for, write_config
from tests.harness.__main__ import cmd_down, cmd_up
from tests.harness.ldap import connect
from tests.harness.stack import SHARED_DIR, Stack

ROOT = Path(__file__).resolve().parents[2]
DEMO = SHARED_DIR / "demo"
STATE = DEMO / "demo.json"
USERS, GROUPS = 1000, 50
# The candidate rules the demo suggests trying on the standby: every user's jobTitle a constant.
TRIAL_RULES = "[user.flows]\njobTitle = \"'Demo trial'\"\n"


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def load_sample(stack: Stack) -> str:
    """The sample OU's DN; loaded with ldapadd the first time."""
    ep = stack.samba().endpoint
    ou = f"OU=idsync-demo,{ep.base_dn}"
    conn = connect(ep)
    try:
        if conn.search(ou, "(objectClass=organizationalUnit)", "BASE"):
            return ou
    except LDAPNoSuchObjectResult:
        pass  # not loaded yet
    finally:
        conn.unbind()
    sys.path.insert(0, str(ROOT / "deploy/samba"))
    import sample_data  # type: ignore[import-not-found]

    ldif = DEMO / "sample.ldif"
    ldif.write_text(sample_data.ldif(ep.base_dn, DOMAIN, users=USERS, groups=GROUPS))
    t0 = time.monotonic()
    subprocess.run(
        ["ldapadd", "-x", "-H", ep.url, "-D", ep.bind_dn, "-w", ep.password, "-f", str(ldif)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"loaded {USERS} users and {GROUPS} groups into {ou} in {time.monotonic() - t0:.1f}s")
    return ou


def start() -> int:
    if STATE.exists():
        print(f"a demo is already running (state in {STATE}); `make demo-stop` first, or see below")
        return status()
    t_start = time.monotonic()
    say("starting the local stack: PostgreSQL, ZooKeeper, Samba AD DC")
    if cmd_up(["postgres", "zookeeper", "samba"]) != 0:
        return 1
    stack = Stack.load(SHARED_DIR)
    assert stack is not None
    DEMO.mkdir(parents=True, exist_ok=True)
    say("loading sample directory data into Samba AD")
    ou = load_sample(stack)

    say("starting the Graph emulator")
    em = EmulatorProcess(DEMO / "emulator").start()
    print(f"Graph emulator: {em.url}/v1.0 (state dump: {em.url}/_emulator/state)")

    spec = ClusterSpec(
        cluster="demo",
        pg_dsn=stack.postgres().dsn,
        zk_hosts=stack.zookeeper().hosts + "/idsync-demo",
        ldap=stack.samba().endpoint,
        include_ous=[ou],
        graph_url=em.url,
        session_timeout=10.0,
        interval=1.0,
        request_timeout=5.0,
        extra={
            "target.graph": {"write_budget": 100000, "write_window_seconds": 60},
            "log": {"level": "info"},
        },
    )
    nodes: dict[str, Instance] = {}
    _drop_schemas(spec.pg_dsn)  # the stack's Samba is new: so must be what idsync knows of it
    for name in ("idsync-a", "idsync-b"):
        path, port = write_config(spec, name, DEMO / name, _schema(name))
        nodes[name] = Instance(name, path, port, DEMO / name)

    # The emulator starts as a new tenant would: strict, without idsync's group anchor extension.
    say("idsync preflight: is this node ready for its tenant?")
    preflight = [sys.executable, "-m", "idsync", "--config", str(nodes["idsync-a"].config), "preflight"]
    rc = subprocess.run(preflight, check=False).returncode
    print(f"(exit {rc}: 0 all OK, 1 warnings, 2 something to fix)")
    say("idsync preflight --fix: register the group anchor extension in the tenant")
    if subprocess.run([*preflight, "--fix"], check=False).returncode == 2:
        print("preflight --fix left a failure: see above")
        return 1

    for name, inst in nodes.items():
        inst.start()
        time.sleep(1.0 if name == "idsync-a" else 0)  # let a be the first leader, for a tidy story
    say("starting Prometheus and Alertmanager (deploy/prometheus, deploy/alertmanager) on loopback")
    mon = monitoring.start_for_demo(DEMO / "monitoring", {n: i.admin_port for n, i in nodes.items()}, "demo")
    STATE.write_bytes(
        orjson.dumps(
            {
                "emulator": {"pid": em.proc.pid if em.proc else None, "url": em.url},
                "nodes": {
                    n: {"pid": i.pid, "config": str(i.config), "log": str(i.log_path), "admin": i.admin_port}
                    for n, i in nodes.items()
                },
                "zookeeper": spec.zk_hosts,
                "monitoring": mon.pids if mon else {},
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    ctl = ["--zookeeper", spec.zk_hosts, "--cluster", "demo"]

    memberships = (DEMO / "sample.ldif").read_text().count("\nmember: ")
    say(f"waiting for the first full sync of {USERS} users, {GROUPS} groups and {memberships} memberships")
    t0 = time.monotonic()
    last = -1

    def landed() -> bool:
        nonlocal last
        st = em.state()
        users = sum(1 for u in st["users"] if u.get("onPremisesImmutableId"))
        members = sum(len(g.get("members", [])) for g in st["groups"])
        if users != last:
            groups = len(st["groups"])
            took = time.monotonic() - t0
            print(f"  {took:5.1f}s  users {users}/{USERS}, groups {groups}/{GROUPS}, members {members}")
            last = users
        for n in nodes.values():
            if not n.alive:
                raise SystemExit(f"{n.name} exited; its log: {n.log_path}")
        return users >= USERS and len(st["groups"]) >= GROUPS and members >= memberships

    wait_for(landed, 600, "the first full sync", step=1.0)
    print(f"first full sync landed in {time.monotonic() - t0:.1f}s")

    say("idsync status")
    idsync(["status", *ctl])
    leader = next(n for n in nodes if n in _leader_line(ctl))
    other = next(n for n in nodes if n != leader)
    wait_for(lambda: _healthy(ctl, other), 60, f"{other} to be a healthy standby", step=0.5)

    say(f"switchover: {leader} -> {other}")
    t0 = time.monotonic()
    rc = idsync(["switchover", *ctl, "--to", other, "--wait", "60"])
    print(f"switchover command returned {rc} after {time.monotonic() - t0:.2f}s")
    time.sleep(2)
    idsync(["status", *ctl])

    say(f"demo running (set up in {time.monotonic() - t_start:.0f}s)")
    for n, i in nodes.items():
        print(
            f"  {n}: admin http://127.0.0.1:{i.admin_port}/ (health, leader, staging, pending, metrics); "
            f"log {i.log_path}"
        )
    print(f"  Graph emulator: {em.url}/_emulator/state")
    console = f"http://127.0.0.1:{nodes[other].admin_port}/"
    with urllib.request.urlopen(console, timeout=10) as resp:  # the console shows the cluster
        shown = resp.status == 200 and b"cluster demo" in resp.read()
    print(f"  web console: {console} (any node's admin URL){'' if shown else ' -- NOT ANSWERING'}")
    if mon is not None:
        print(f"  Prometheus: {mon.prometheus_url}/alerts   Alertmanager: {mon.alertmanager_url}")
    print(f"  try: .venv/bin/idsync status {' '.join(ctl)}")
    print(f"       .venv/bin/idsync history {' '.join(ctl)}")
    print(f"       .venv/bin/idsync --config {nodes[other].config} pending --summary")
    print(f"       .venv/bin/idsync switchover {' '.join(ctl)} --to {leader}")
    trial = DEMO / "trial-rules.toml"
    trial.write_text(TRIAL_RULES)
    c = " ".join(ctl)
    print("  change the sync rules the staging-mode way (docs/operations.md):")
    print(f"       .venv/bin/idsync rules trial {trial} --on {leader} {c}")
    print(f"       .venv/bin/idsync --config {nodes[leader].config} rules impact   # on the trial node")
    print(f"       .venv/bin/idsync rules apply --switchover {c} [--fingerprint F]   # or: rules abort")
    print("  stop everything: make demo-stop")
    return 0


def _schema(node: str) -> str:
    return f"demo_{node.replace('-', '_')}"


def _drop_schemas(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for node in ("idsync-a", "idsync-b"):
            conn.execute(f'DROP SCHEMA IF EXISTS "{_schema(node)}" CASCADE')


def _leader_line(ctl: list[str]) -> str:
    from idsync.ha.zk import Coordinator, ZkSettings

    c = Coordinator(ZkSettings(hosts=ctl[1], session_timeout=10, retry_timeout=5), "demo", "demo-observer")
    c.start()
    try:
        v = c.read()
        return v.leader.node if v.leader else ""
    finally:
        c.stop()


def _healthy(ctl: list[str], node: str) -> bool:
    from idsync.ha.zk import Coordinator, ZkSettings

    c = Coordinator(ZkSettings(hosts=ctl[1], session_timeout=10, retry_timeout=5), "demo", "demo-observer")
    c.start()
    try:
        m = c.read().members.get(node)
        return bool(m and m.healthy)
    finally:
        c.stop()


def _kill(pid: int | None, sig: int = signal.SIGTERM) -> None:
    if not pid:
        return
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return


def stop() -> int:
    if STATE.exists():
        state: dict[str, Any] = orjson.loads(STATE.read_bytes())
        for n in state["nodes"].values():
            _kill(n["pid"])
        time.sleep(2)
        for n in state["nodes"].values():
            _kill(n["pid"], signal.SIGKILL)
        _kill(state["emulator"]["pid"])
        monitoring.stop_pids(state.get("monitoring", {}))
        STATE.unlink()
        stack = Stack.load(SHARED_DIR)
        if stack is not None:
            _drop_schemas(stack.postgres().dsn)
        print("stopped the idsync instances and the Graph emulator")
    return cmd_down()


def status() -> int:
    if not STATE.exists():
        print("no demo running (`make demo` starts one)")
        return 1
    state = orjson.loads(STATE.read_bytes())
    return idsync(["status", "--zookeeper", state["zookeeper"], "--cluster", "demo"])


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.demo")
    p.add_argument("action", nargs="?", default="start", choices=["start", "stop", "status"])
    args = p.parse_args()
    return {"start": start, "stop": stop, "status": status}[args.action]()
