"""The fault menu: each fault injects, holds for a seeded time, heals, and says what it did."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tests.cluster.emulator import REPLICATION_LAG
from tests.cluster.instance import wait_for

if TYPE_CHECKING:
    from tests.chaos.run import ChaosRun


@dataclass(frozen=True)
class Outcome:
    """One row of the run's table."""

    index: int
    fault: str
    target: str
    held: float
    leader_before: str
    leader_after: str
    recovered: float  # seconds from heal until a leader exported again
    note: str = ""


Fault = Callable[["ChaosRun", random.Random, float], tuple[str, str]]


def kill_leader(run: ChaosRun, rng: random.Random, hold: float) -> tuple[str, str]:
    """SIGKILL the leader; start it again after `hold`."""
    name = run.leader_or_any()
    run.expect_exit(name)
    run.nodes[name].kill()
    time.sleep(hold)
    run.nodes[name].start()
    return name, "killed and restarted"


def stop_leader(run: ChaosRun, rng: random.Random, hold: float) -> tuple[str, str]:
    """SIGSTOP the leader for `hold` (past the session timeout or not), then SIGCONT."""
    name = run.leader_or_any()
    run.nodes[name].signal(signal.SIGSTOP)
    time.sleep(hold)
    run.nodes[name].signal(signal.SIGCONT)
    beyond = "beyond" if hold > run.session_timeout else "within"
    return name, f"paused {hold:.1f}s ({beyond} the session timeout)"


def zookeeper_restart(run: ChaosRun, rng: random.Random, hold: float) -> tuple[str, str]:
    if run.ensemble is not None:  # one server of the ensemble; the quorum carries on
        n = rng.choice(sorted(run.ensemble.members))
        member = run.ensemble.members[n]
        member.stop()
        time.sleep(hold)
        member.launch()
        run.ensemble.wait_serving(n)
        return f"zookeeper-{n}", "stopped and started"
    assert run.zookeeper is not None
    run.zookeeper.stop()
    time.sleep(hold)
    run.zookeeper.start()
    return "zookeeper", "stopped and started"


def zookeeper_follower_isolation(run: ChaosRun, rng: random.Random, hold: float) -> tuple[str, str]:
    """Partition the ZooKeeper server the leader's session lives on from the other two. A
    follower goes on answering plain reads for about syncLimit ticks while the quorum expires
    the session: the leader's lease (renewed only after sync()) must run out first."""
    assert run.ensemble is not None
    name = run.leader_or_any()
    n = run.zk_server[name]
    mode = run.ensemble.mode(n) or "not serving"
    frozen = max(hold, run.session_timeout * 2)
    run.ensemble.isolate(n)
    time.sleep(frozen)
    run.ensemble.heal()
    run.ensemble.wait_serving(n)
    return name, f"its ZooKeeper server {n} ({mode}) isolated {frozen:.1f}s"


def postgres_restart(run: ChaosRun, rng: random.Random, hold: float) -> tuple[str, str]:
    run.postgres.stop()
    time.sleep(hold)
    run.postgres.start()
    return "postgres", "stopped and started"


def samba_restart(run: ChaosRun, rng: random.Random, hold: float) -> tuple[str, str]:
    if run.samba is None:
        return "samba", "skipped (shared Samba)"
    run.samba.stop()
    time.sleep(hold)
    run.samba.start()
    return "samba", "stopped and started"


def graph_throttle(run: ChaosRun, rng: random.Random, hold: float) -> tuple[str, str]:
    n = rng.randint(20, 80)
    run.emulator.post(
        "/_emulator/faults", {"kind": "throttle", "count": n, "retry_after": 1, "writes_only": True}
    )
    time.sleep(hold)
    return "graph", f"429 storm of {n} writes"


def graph_errors(run: ChaosRun, rng: random.Random, hold: float) -> tuple[str, str]:
    n = rng.randint(5, 30)
    status = rng.choice([500, 502, 503, 504])
    run.emulator.post("/_emulator/faults", {"kind": "status", "status": status, "count": n})
    drops = rng.randint(1, 4)
    run.emulator.post(
        "/_emulator/faults",
        {"kind": "drop", "count": drops, "writes_only": True, "after": rng.random() < 0.5},
    )
    time.sleep(hold)
    return "graph", f"{n} x {status} and {drops} dropped connections"


def zookeeper_partition(run: ChaosRun, rng: random.Random, hold: float) -> tuple[str, str]:
    """Cut the leader alone off from ZooKeeper through its TCP proxy."""
    name = run.leader_or_any()
    proxy = run.proxies[name]
    proxy.cut()
    time.sleep(hold)
    proxy.restore()
    return name, f"cut off from ZooKeeper for {hold:.1f}s"


def switchover_mid_batch(run: ChaosRun, rng: random.Random, hold: float) -> tuple[str, str]:
    """A burst of changes, then a switchover while the leader is exporting them."""
    old = run.leader_or_any()
    run.changes.burst(30)
    others = [n for n in run.nodes if n != old and run.nodes[n].alive]
    if not others:
        return old, "skipped: no other node running"
    to = rng.choice(others)
    r = subprocess.run(
        [sys.executable, "-m", "idsync", "switchover", *run.ctl_args(), "--to", to, "--wait", "20"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    time.sleep(hold)
    out = (r.stdout + r.stderr).strip().splitlines()
    return f"{old}->{to}", out[-1] if out else f"exit {r.returncode}"


def mass_delete(run: ChaosRun, rng: random.Random, hold: float) -> tuple[str, str]:
    """Delete more users than the threshold at once: the guard must hold every export until approved."""
    run.changes.hold()
    try:
        before = {u["onPremisesImmutableId"] for u in run.emulator.state()["users"]}
        gone = run.changes.mass_delete(run.deletion_threshold + 5)
        leader = run.leader_or_any()
        wait_for(lambda: "deletion guard holds" in run.nodes[leader].last_sentence(), 30, "the guard to hold")
        time.sleep(1)
        after = {u["onPremisesImmutableId"] for u in run.emulator.state()["users"]}
        # Deletes below the threshold may go before it trips; never more than the threshold.
        if len(before - after) > run.deletion_threshold:
            run.violations.append(f"deletion guard let {len(before - after)} deletes through before approval")
        r = subprocess.run(
            [sys.executable, "-m", "idsync", "--config", str(run.nodes[leader].config), "approve-deletes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        m = re.search(r"approve-deletes ([0-9a-f]{8,})", r.stdout + r.stderr)
        if not m:
            run.violations.append(f"no fingerprint to approve: {r.stdout} {r.stderr}")
            return leader, "guard held, approval failed"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "idsync",
                "--config",
                str(run.nodes[leader].config),
                "approve-deletes",
                m.group(1),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        time.sleep(hold)
        return leader, f"{len(gone)} deletes held by the guard, then approved"
    finally:
        run.changes.release()


def freeze_mid_write(run: ChaosRun, rng: random.Random, hold: float) -> tuple[str, str]:
    """ "Freeze between check and send", approximated: SIGSTOP the leader the moment its writes of
    a burst reach the target, for longer than the session timeout, then SIGCONT. Whatever it had
    checked but not sent must not land after the new leader wrote (the fencing invariant)."""
    name = run.leader_or_any()
    node = run.nodes[name]
    since = int(run.emulator.get("/_emulator/requests?writes=1")["seq"])
    run.changes.burst(30)
    try:
        wait_for(lambda: run.emulator.writes(since=since), 15, "the burst's first writes", step=0.02)
    except AssertionError:
        return name, "skipped: no write of the burst reached the target"
    node.signal(signal.SIGSTOP)
    frozen = max(hold, run.session_timeout * 1.5)
    time.sleep(frozen)
    node.signal(signal.SIGCONT)
    return name, f"frozen {frozen:.1f}s during a write burst"


def replication_lag(run: ChaosRun, rng: random.Random, hold: float) -> tuple[str, str]:
    """The emulator's replication lag raised (new objects invisible to $filter and delta for
    seconds; the run's base lag is REPLICATION_LAG), a burst and a switchover inside it:
    create-idempotence must still leave no duplicate."""
    lo, hi = 0.5, round(rng.uniform(1.0, 3.0), 1)
    run.emulator.post("/_emulator/config", {"replication_lag_min": lo, "replication_lag_max": hi})
    try:
        old = run.leader_or_any()
        run.changes.burst(20)
        others = [n for n in run.nodes if n != old and run.nodes[n].alive]
        note = f"lag {lo}-{hi}s during a burst"
        if others:
            to = rng.choice(others)
            r = subprocess.run(
                [sys.executable, "-m", "idsync", "switchover", *run.ctl_args(), "--to", to, "--wait", "20"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            said = (r.stdout + r.stderr).strip().splitlines()
            note += f" and a switchover {old}->{to}: {said[-1] if said else f'exit {r.returncode}'}"
        time.sleep(hold)
    finally:
        base_lo, base_hi = REPLICATION_LAG
        run.emulator.post(
            "/_emulator/config", {"replication_lag_min": base_lo, "replication_lag_max": base_hi}
        )
    return old, note


MENU: dict[str, tuple[Fault, int]] = {
    "kill_leader": (kill_leader, 3),
    "stop_leader": (stop_leader, 3),
    "zookeeper_restart": (zookeeper_restart, 2),
    "postgres_restart": (postgres_restart, 2),
    "samba_restart": (samba_restart, 1),
    "graph_throttle": (graph_throttle, 2),
    "graph_errors": (graph_errors, 2),
    "zookeeper_partition": (zookeeper_partition, 2),
    "switchover_mid_batch": (switchover_mid_batch, 2),
    "mass_delete": (mass_delete, 1),
    "freeze_mid_write": (freeze_mid_write, 2),
    "replication_lag": (replication_lag, 2),
    "zookeeper_follower_isolation": (zookeeper_follower_isolation, 2),
}
# Faults that need `python -m tests.chaos --ensemble` (a 3-server ZooKeeper).
ENSEMBLE_ONLY = {"zookeeper_follower_isolation"}
