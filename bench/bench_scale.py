"""Scale: time and peak RSS of target import, full sync and a 1,000-change delta cycle at
10,000, 100,000 and 1,000,000 users (+ 1 group per 50 users, ~100 members each).

Every measured step runs in its own fresh Python process (`python -m bench.bench_scale --worker`)
doing exactly what the daemon does for that step (GraphTarget.import_delta, SyncEngine.run,
pending.claim), on the shared PostgreSQL; a sampler thread in this process reads VmRSS of that
process (with its descendants: a big sync's rule-evaluation workers, summed) and of the Graph
emulator (a separate process) from /proc/<pid>/status every 20 ms while the step runs. The worker
also reports its VmHWM at the end: the peak is the larger of the two. CPU seconds include the
evaluation workers'.

Steps per size:
- target import: a full Graph delta round of users and groups from the emulator into the target
  space (HTTP + JSON + PostgreSQL);
- target delta import: 1,000 users changed in the emulator (PATCH through Graph), then the next
  delta round — three rounds, 1,000 other users each, the median reported;
- full sync: the first sync (source space → desired → links → diff → pending queue). The source
  space is written straight into PostgreSQL with idsync's own `source_space.upsert` (not read from
  Samba: bench_source measures reading Samba; docs/architecture.md "Scale" says how fast Samba
  itself can be loaded here);
- claim of 5,000 from the queue the full sync left (3 x users operations), and from the same queue
  once every create is exported but none confirmed yet (the member operations all wait for links);
- confirming sync after the whole queue "landed": the target space is filled in SQL with what the
  queue asked for (as if exported and imported back; not measured): the creates first, then one
  sync links and confirms them; then the member adds, and the next sync confirms those;
- delta sync: 1,000 users changed in the source space, then one incremental sync — three rounds,
  1,000 other users each, the median reported (one round mostly measures how warm the caches
  were after the bulk steps before it).

The growth exponent is the slope of log(time) over log(users), least squares over the sizes.

Run standalone: `python -m bench.bench_scale [--sizes 10000,100000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import random
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.common import Figure

ROOT = Path(__file__).resolve().parent.parent
SIZES = (10_000, 100_000, 1_000_000)
USERS_PER_GROUP = 50
MEMBERS = 100
CHANGES = 1_000
DELTA_ROUNDS = 3  # delta cycles per size, each changing other users; the median is reported
CLAIM = 5_000
ANCHOR_EXT = "idsyncSourceAnchor"
RSS_LIMIT_MB = 1024.0
FULL_SYNC_LIMIT_S = 180.0  # at 1,000,000 users
DELTA_GROWTH_LIMIT = 1.5  # delta cycle at the largest size / at the smallest

# --- memory sampling -----------------------------------------------------------------------------


def _status_kb(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _tree(pid: int) -> list[int]:
    """The process and its descendants (the sync's rule-evaluation workers are children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                todo += [int(c) for c in task.read_text().split()]
    return out


def _tree_rss_kb(pid: int) -> int | None:
    """VmRSS of a process and its descendants together (None if the process is gone)."""
    first = _status_kb(pid, "VmRSS")
    if first is None:
        return None
    return first + sum(_status_kb(c, "VmRSS") or 0 for c in _tree(pid)[1:])


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Peak VmRSS (MB) of some processes — each with its descendants, summed — sampled every
    `interval` seconds by a thread, and the CPU seconds each used (itself, not its children)
    between the first and the last sample (`cpu`)."""

    def __init__(self, pids: dict[str, int], interval: float = 0.02) -> None:
        self.pids = dict(pids)
        self.interval = interval
        self.peak: dict[str, float] = dict.fromkeys(pids, 0.0)
        self.samples = 0
        self._cpu0: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def add(self, label: str, pid: int) -> None:
        self.pids[label] = pid
        self.peak.setdefault(label, 0.0)

    def _sample(self) -> None:
        for label, pid in list(self.pids.items()):
            kb = _tree_rss_kb(pid)
            if kb is not None:
                self.peak[label] = max(self.peak[label], kb / 1024)
            cpu = _cpu_s(pid)
            if cpu is not None:
                self._cpu0.setdefault(label, cpu)
                self.cpu[label] = cpu - self._cpu0[label]
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the workers: one fresh process per measured step ---------------------------------------------


def _worker(args: dict[str, Any]) -> dict[str, Any]:
    from idsync.store.db import Store

    phase = args["phase"]
    out: dict[str, Any] = {}
    with Store(args["dsn"], args["schema"], max_size=4) as store:
        if phase == "import":
            out = asyncio.run(_worker_import(store, args))
        elif phase == "sync":
            out = _worker_sync(store)
        elif phase == "claim":
            out = _worker_claim(store, exported=bool(args.get("exported")))
        else:
            raise ValueError(f"unknown phase {phase!r}")
    out["hwm_mb"] = (_status_kb(os.getpid(), "VmHWM") or 0) / 1024
    return out


async def _worker_import(store: Any, args: dict[str, Any]) -> dict[str, Any]:
    from bench.bench_target import _settings
    from idsync.emulator.config import EmulatorConfig
    from idsync.target import GraphTarget

    cfg = EmulatorConfig(preregister_extensions=[ANCHOR_EXT], read_budget=0)
    settings = _settings(args["url"], cfg, Path(args["tmp"]), Path(args["ca"]))
    async with GraphTarget(settings, node="bench") as target:
        t0, c0 = time.perf_counter(), time.process_time()
        result = await target.import_delta(store)
        took, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": took, "cpu_s": cpu, "objects": result.objects, "sentence": result.sentence()}


def _worker_sync(store: Any) -> dict[str, Any]:
    from idsync.store import pending
    from idsync.sync.engine import SyncEngine
    from idsync.sync.guard import Thresholds
    from idsync.sync.rules import load_rules

    engine = SyncEngine(store, load_rules(None, source_kind="ad"), thresholds=Thresholds(count=500))
    t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
    res = engine.run()
    took = time.perf_counter() - t0
    cpu = time.process_time() - c0 + _children_cpu() - k0  # with the evaluation workers
    with store.connection() as conn:
        left = pending.counts(conn)
    return {
        "seconds": took,
        "cpu_s": cpu,
        "evaluated": res.evaluated,
        "written": res.ops_written,
        "confirmed": res.ops_confirmed,
        "pending": res.pending,
        "left": left,
        "phases": res.phases,
        "sentence": res.sentence(),
    }


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _worker_claim(store: Any, exported: bool) -> dict[str, Any]:
    """Time one claim of CLAIM operations, in a transaction rolled back afterwards."""
    from idsync.store import pending

    with store.connection() as conn:
        if exported:  # every create went out, none is confirmed yet: member operations wait
            conn.execute("UPDATE pending_export SET exported_at = now() WHERE kind = 'create'")
        t0 = time.perf_counter()
        ops = pending.claim(conn, epoch=1, node="bench", limit=CLAIM, held=False)
        took = time.perf_counter() - t0
        queued = conn.execute(
            "SELECT count(*) FROM pending_export WHERE exported_at IS NULL AND quarantined_at IS NULL"
        ).fetchone()
        conn.rollback()
    return {"seconds": took, "claimed": len(ops), "queued": int(queued[0]) if queued else 0}


def _run_worker(
    args: dict[str, Any], sampler_pids: dict[str, int]
) -> tuple[dict[str, Any], dict[str, float]]:
    """Run one step in a fresh process; returns its result and the peak RSS of every sampled
    process (the worker as 'idsync')."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_scale", "--worker", json.dumps(args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    # Sample from the exec on: between fork and exec the child is a copy of this process.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and b"--worker" not in _cmdline(proc.pid):
        time.sleep(0.001)
    with RssSampler({**sampler_pids, "idsync": proc.pid}) as sampler:
        stdout, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"worker {args['phase']} failed with exit code {proc.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    peaks = dict(sampler.peak)
    peaks["idsync"] = max(peaks["idsync"], result.get("hwm_mb", 0.0))
    if "emulator" in sampler.cpu:
        result["emulator_cpu_s"] = sampler.cpu["emulator"]
    print(
        f"  {args['phase']}: {result['seconds']:.2f}s, idsync peak {peaks['idsync']:.0f} MB"
        f" ({sampler.samples} samples) {result.get('sentence', '')}",
        file=sys.stderr,
        flush=True,
    )
    return result, peaks


# --- the emulator -------------------------------------------------------------------------------


@contextlib.contextmanager
def _emulator(users: int, groups: int, ctx: ssl.SSLContext) -> Iterator[tuple[str, int]]:
    """The Graph emulator in its own process, seeded; yields (url, pid)."""
    from bench.bench_target import _serve
    from idsync.emulator.config import EmulatorConfig

    cfg = EmulatorConfig(preregister_extensions=[ANCHOR_EXT], read_budget=0)
    mp = multiprocessing.get_context("fork")
    ready = mp.Queue()
    proc = mp.Process(target=_serve, args=(cfg, ctx, (users, groups, MEMBERS), ready), daemon=True)
    proc.start()
    try:
        yield str(ready.get(timeout=1800)), int(proc.pid or 0)
    finally:
        proc.terminate()
        proc.join(30)


async def _change_in_emulator(url: str, ca: Path, ids: Sequence[str]) -> None:
    """PATCH the department of `ids` through Graph (the next delta round returns them)."""
    import httpx

    from idsync.emulator.config import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_TENANT

    form = {
        "grant_type": "client_credentials",
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "scope": "https://graph.microsoft.com/.default",
    }
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(ca)), timeout=60) as http:
        tok = (await http.post(f"{url}/{DEFAULT_TENANT}/oauth2/v2.0/token", data=form)).json()["access_token"]
        headers = {"Authorization": f"Bearer {tok}"}
        sem = asyncio.Semaphore(16)

        async def patch(i: str) -> None:
            async with sem:
                r = await http.patch(
                    f"{url}/v1.0/users/{i}", json={"department": "Reorganised"}, headers=headers
                )
                if r.status_code != 204:
                    raise RuntimeError(f"PATCH {i}: {r.status_code} {r.text[:200]}")

        await asyncio.gather(*(patch(i) for i in ids))


# --- one size -----------------------------------------------------------------------------------


def _median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median time, with every round's time (`rounds_s`) and the highest
    peak RSS of them all (a delta cycle is measured in several rounds: a single one mostly
    measures how warm the caches were after the bulk steps before it)."""
    ordered = sorted(rounds, key=lambda r: r["seconds"])
    mid = dict(ordered[len(ordered) // 2])
    mid["rounds_s"] = [round(r["seconds"], 3) for r in rounds]
    for key in ("rss", "emulator_rss"):
        if key in mid:
            mid[key] = max(r[key] for r in rounds)
    return mid


def _land_objects(conn: psycopg.Connection, user_anchor: str, group_anchor: str) -> None:
    """The queue's creates, written into the target space as if exported and imported back."""
    conn.execute(
        "INSERT INTO target_object (id, object_type, anchor, attrs)"
        " SELECT 't-' || anchor, object_type,"
        "  payload ->> (CASE object_type WHEN 'user' THEN %s ELSE %s END), jsonb_strip_nulls(payload)"
        " FROM pending_export WHERE kind = 'create'",
        (user_anchor, group_anchor),
    )
    conn.execute("ANALYZE")


def _land_members(conn: psycopg.Connection) -> None:
    """The queue's member adds, landed as the target import would (the groups touched)."""
    conn.execute(
        "INSERT INTO target_member (group_id, member_id)"
        " SELECT 't-' || anchor, 't-' || member_anchor FROM pending_export WHERE kind = 'member_add'"
    )
    conn.execute(
        "UPDATE target_object SET changed_seq = nextval('change_seq')"
        " WHERE id IN (SELECT DISTINCT 't-' || anchor FROM pending_export WHERE kind = 'member_add')"
    )
    conn.execute("ANALYZE")


def _one_size(dsn: str, users: int, tmp: Path, ca: Path, ctx: ssl.SSLContext) -> dict[str, Any]:
    from bench.bench_sync import _groups, _user
    from idsync.store import migrate, source_space
    from idsync.store.db import Store
    from idsync.sync.rules import load_rules

    groups = max(1, users // USERS_PER_GROUP)
    out: dict[str, Any] = {"users": users, "groups": groups}
    tag = uuid.uuid4().hex[:8]
    tschema, sschema = f"bench_scale_t_{tag}", f"bench_scale_s_{tag}"
    print(f"== {users:,} users, {groups:,} groups", file=sys.stderr, flush=True)
    try:
        # target import, full then delta, against the emulator
        with Store(dsn, tschema, max_size=2) as store:
            migrate.migrate(store)
        t0 = time.perf_counter()
        with _emulator(users, groups, ctx) as (url, epid):
            out["emulator_seed_s"] = time.perf_counter() - t0
            wargs = {"dsn": dsn, "schema": tschema, "url": url, "tmp": str(tmp), "ca": str(ca)}
            res, peaks = _run_worker({**wargs, "phase": "import"}, {"emulator": epid})
            out["import"] = {**res, "rss": peaks["idsync"], "emulator_rss": peaks["emulator"]}
            with psycopg.connect(dsn) as conn:
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(tschema)))
                ids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT id FROM target_object WHERE object_type = 'user' ORDER BY random() LIMIT %s",
                        (CHANGES * DELTA_ROUNDS,),
                    )
                ]
            rounds = []
            for k in range(DELTA_ROUNDS):  # each round changes 1,000 other users
                asyncio.run(_change_in_emulator(url, ca, ids[k * CHANGES : (k + 1) * CHANGES]))
                res, peaks = _run_worker({**wargs, "phase": "import"}, {"emulator": epid})
                rounds.append({**res, "rss": peaks["idsync"], "emulator_rss": peaks["emulator"]})
            out["import_delta"] = _median_round(rounds)

        # sync: the source space loaded straight into PostgreSQL
        rules = load_rules(None, source_kind="ad")
        with Store(dsn, sschema, max_size=2) as store:
            migrate.migrate(store)
            t0 = time.perf_counter()
            batch = 10_000
            for start in range(0, users, batch):
                with store.transaction() as conn:
                    source_space.upsert(conn, [_user(i) for i in range(start, min(users, start + batch))])
            gbatch: list[Any] = []
            for g in _groups(groups, users, MEMBERS):
                gbatch.append(g)
                if len(gbatch) == 500:
                    with store.transaction() as conn:
                        source_space.upsert(conn, gbatch)
                    gbatch = []
            if gbatch:
                with store.transaction() as conn:
                    source_space.upsert(conn, gbatch)
            with store.connection() as conn:
                conn.execute("ANALYZE")
            out["source_load_s"] = time.perf_counter() - t0
            print(f"  source space loaded in {out['source_load_s']:.1f}s", file=sys.stderr, flush=True)
            wargs = {"dsn": dsn, "schema": sschema}
            res, peaks = _run_worker({**wargs, "phase": "sync"}, {})
            out["full_sync"] = {**res, "rss": peaks["idsync"]}
            with store.connection() as conn:
                conn.execute("ANALYZE")
            res, peaks = _run_worker({**wargs, "phase": "claim"}, {})
            out["claim_fresh"] = {**res, "rss": peaks["idsync"]}
            res, peaks = _run_worker({**wargs, "phase": "claim", "exported": True}, {})
            out["claim_waiting"] = {**res, "rss": peaks["idsync"]}

            # Creates land first; the sync links them and confirms them, which makes the member
            # operations ready; those land next, and the next sync confirms them.
            with store.transaction() as conn:
                _land_objects(conn, rules.anchor_attribute("user"), rules.anchor_attribute("group"))
            res, peaks = _run_worker({**wargs, "phase": "sync"}, {})
            out["confirm_sync"] = {**res, "rss": peaks["idsync"]}
            with store.transaction() as conn:
                _land_members(conn)
            res, peaks = _run_worker({**wargs, "phase": "sync"}, {})
            out["confirm_members"] = {**res, "rss": peaks["idsync"]}

            picked = random.Random(7).sample(range(users), CHANGES * DELTA_ROUNDS)
            rounds = []
            for k in range(DELTA_ROUNDS):  # each round changes 1,000 other users
                with store.transaction() as conn:
                    changed = picked[k * CHANGES : (k + 1) * CHANGES]
                    source_space.upsert(conn, [_user(i, department=f"Reorganised {k}") for i in changed])
                res, peaks = _run_worker({**wargs, "phase": "sync"}, {})
                rounds.append({**res, "rss": peaks["idsync"]})
            out["delta_sync"] = _median_round(rounds)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for s in (tschema, sschema):
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(s)))
    return out


# --- figures ------------------------------------------------------------------------------------


def exponent(sizes: Sequence[float], values: Sequence[float]) -> float:
    """Slope of log(value) over log(size), least squares: 1.0 is linear, 0 is flat."""
    if len(sizes) < 2:
        raise ValueError("an exponent needs at least two sizes")
    xs = [math.log(s) for s in sizes]
    ys = [math.log(max(v, 1e-9)) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("an exponent needs at least two different sizes")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


STEPS = (
    ("import", "target import (full delta round)"),
    ("import_delta", "target delta import of 1,000 changes"),
    ("full_sync", "full sync (first sync)"),
    ("confirm_sync", "confirming sync after the queue landed (links, creates)"),
    ("confirm_members", "next sync (confirms the member operations)"),
    ("delta_sync", "delta sync of 1,000 changes"),
    ("claim_fresh", "claim of 5,000 (fresh queue)"),
    ("claim_waiting", "claim of 5,000 (creates out, members waiting)"),
)


def figures(runs: Sequence[dict[str, Any]], load: str) -> list[Figure]:
    figs: list[Figure] = []
    sizes = [r["users"] for r in runs]
    small, large = runs[0], runs[-1]
    for key, label in STEPS:
        for r in runs:
            s = r[key]
            extra = ""
            if "cpu_s" in s:
                extra = f"; idsync CPU {s['cpu_s']:.2f} s"
            if "emulator_rss" in s:
                extra += (
                    f"; emulator peak RSS {s['emulator_rss']:,.0f} MB, CPU {s.get('emulator_cpu_s', 0):.2f} s"
                )
            if key in ("full_sync", "confirm_sync", "confirm_members", "delta_sync"):
                extra += (
                    f"; {s['evaluated']:,} evaluated, {s['written']:,} written, {s['confirmed']:,} confirmed"
                )
                extra += f", queue left {sum(s['left'].values()):,}"
            if key.startswith("claim"):
                extra += f"; {s['claimed']:,} claimed of {s['queued']:,} queued"
            if "rounds_s" in s:
                extra += (
                    f"; median of {len(s['rounds_s'])} rounds: {', '.join(f'{x:g}' for x in s['rounds_s'])} s"
                )
            if key == "full_sync":
                extra += (
                    "; rules evaluated in worker processes (one per CPU); PostgreSQL: a private cluster"
                    " with shared_buffers 4GB, fsync on (docs/operations.md, Sizing PostgreSQL)"
                )
            target, ok = "", None
            if key == "full_sync" and r["users"] >= 1_000_000:
                target, ok = f"<= {FULL_SYNC_LIMIT_S:.0f} s", s["seconds"] <= FULL_SYNC_LIMIT_S
            figs.append(
                Figure(
                    f"{label}, {r['users']:,} users: time",
                    s["seconds"],
                    "s",
                    target=target,
                    ok=ok,
                    note=f"peak RSS of the idsync process {s['rss']:,.0f} MB{extra}",
                )
            )
            figs.append(
                Figure(
                    f"{label}, {r['users']:,} users: peak RSS",
                    s["rss"],
                    "MB",
                    target=f"<= {RSS_LIMIT_MB:,.0f} MB",
                    ok=s["rss"] <= RSS_LIMIT_MB,
                )
            )
        if len(runs) >= 2:
            k = exponent(sizes, [r[key]["seconds"] for r in runs])
            km = exponent(sizes, [r[key]["rss"] for r in runs])
            is_delta = key in ("import_delta", "delta_sync") or key.startswith("claim")
            figs.append(
                Figure(
                    f"{label}: growth exponent of time (RSS)",
                    k,
                    "",
                    target="~0 (delta)" if is_delta else "<= 1.1 (linear)",
                    ok=None if is_delta else k <= 1.1,
                    note=f"log-log least squares over {', '.join(f'{n:,}' for n in sizes)} users;"
                    f" RSS exponent {km:.2f}",
                )
            )
    delta_small = small["import_delta"]["seconds"] + small["delta_sync"]["seconds"]
    delta_large = large["import_delta"]["seconds"] + large["delta_sync"]["seconds"]
    figs.append(
        Figure(
            f"delta cycle of 1,000 changes (target delta import + delta sync), {large['users']:,} users",
            delta_large,
            "s",
            baseline=delta_small,
            baseline_name=f"the same cycle at {small['users']:,} users, same run",
            target=f"ratio <= {DELTA_GROWTH_LIMIT}",
            ok=delta_large <= DELTA_GROWTH_LIMIT * delta_small,
            note=f"machine load before/after: {load}",
        )
    )
    for r in runs:
        figs.append(
            Figure(
                f"emulator seed + source space load, {r['users']:,} users (setup, not idsync)",
                r["source_load_s"],
                "s",
                note=f"emulator seeded in {r['emulator_seed_s']:.0f}s; source space written with"
                f" source_space.upsert in 10,000-row transactions ({r['users'] / r['source_load_s']:,.0f}"
                " objects/s), not read from Samba",
            )
        )
    return figs


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# The PostgreSQL this benchmark runs on: a private cluster configured as docs/operations.md
# "Sizing PostgreSQL" recommends for a million objects, durable as in production (fsync,
# synchronous commit and full-page writes on, unlike the test clusters). On the machine's
# server with PostgreSQL's defaults (128 MB of shared buffers) the 1,000,000-user first sync
# took 275 s instead (measured before this configuration was introduced, see BENCHMARKS.md).
SIZING = {
    "shared_buffers": "4GB",
    "effective_cache_size": "12GB",
    "work_mem": "64MB",
    "maintenance_work_mem": "1GB",
    "max_wal_size": "16GB",
    "checkpoint_timeout": "30min",
    "wal_compression": "on",
    "random_page_cost": "1.1",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
}


@contextlib.contextmanager
def sized_postgres() -> Iterator[str]:
    """A private PostgreSQL cluster with SIZING, for the run; yields its DSN."""
    from tests.harness.postgres import Postgres

    with tempfile.TemporaryDirectory(prefix="bench-scale-pg-") as d:
        pg = Postgres(Path(d), settings=SIZING)
        pg.start()
        try:
            yield pg.dsn
        finally:
            pg.destroy()


def run(sizes: Sequence[int] = SIZES) -> list[Figure]:
    from tests.target.tls import make_tls

    load0 = _load()
    runs = []
    with sized_postgres() as dsn, tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ca, ctx = make_tls(tmp)
        for n in sizes:
            runs.append(_one_size(dsn, n, tmp, ca, ctx))
    load = f"{load0} / {_load()}"
    raw = ROOT / "bench" / "results" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "bench_scale.json").write_text(json.dumps({"load": load, "runs": runs}, indent=1) + "\n")
    return figures(runs, load)


def main() -> list[Figure]:
    return run()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    p.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(_worker(json.loads(a.worker))), flush=True)
        raise SystemExit(0)
    for fig in run([int(s) for s in a.sizes.split(",")]):
        base = (
            f" (baseline {fig.baseline:,.3f} {fig.baseline_name}, ratio {fig.ratio:.2f})"
            if fig.baseline
            else ""
        )
        status = "" if fig.ok is None else (" OK" if fig.ok else " MISSED")
        print(f"{fig.name}: {fig.value:,.3f} {fig.unit}{base} [{fig.target}]{status} — {fig.note}")
