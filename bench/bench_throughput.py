"""Writes a first sync costs against Graph's write quota: member adds 20 per write.

The first sync of U users and G groups (sizes uniform in M/2..3M/2, the same generator as
bench_sync) is exported to the Graph emulator (its own process, TLS, real token flow) enforcing
Graph's identity quota shape: 3,000 writes per 150 s and 8,000 RU per 10 s per app and tenant,
both multiplied by SPEED so the run fits in minutes (the bucket and window shape is Microsoft's;
the writes counted do not depend on the speed). The queue is what the sync engine's first sync
writes: a create per object, a member add per membership flagged as waiting on its links. Between
export runs the bench does what the confirming target import and the sync's join do: it links
the created objects (from the export's results), releases the member adds that waited for them,
drops the confirmed rows and tends the tables as the sync does after each cycle
(store/upkeep.py: ANALYZE of what changed in bulk, VACUUM of the queue after a big confirmation).

Figures:
- write requests used (the emulator's request log: every write Graph answered, 429s apart)
  against the one-write-per-membership baseline computed from the same data (objects +
  memberships); target <= 1.1 x (objects + memberships / 20);
- the time that many writes take at Graph's steady 20 writes/s (3,000 / 150 s);
- the share of requests answered 429.

Run standalone: `python -m bench.bench_throughput [--users N] [--groups N] [--members N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import ssl
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from psycopg import sql

from bench.bench_sync import _groups
from bench.bench_target import ANCHOR_EXT, _dsn, _emulator, _settings
from bench.common import Figure
from idsync.emulator.config import EmulatorConfig
from idsync.fencing import Unfenced
from idsync.store import fence, migrate, pending, upkeep
from idsync.store.db import Store
from idsync.target import GraphTarget

SPEED = 20  # Graph's quota x 20: 400 writes/s steady (the 20 writes/s figure is projected)


def _user_payload(i: int) -> dict[str, Any]:
    return {
        "accountEnabled": True,
        "displayName": f"User {i}",
        "mailNickname": f"u{i:06d}",
        "userPrincipalName": f"u{i:06d}@example.com",
        "onPremisesImmutableId": f"imm-{i}",
        "department": "Sales",
    }


def _queue(store: Store, cfg: EmulatorConfig, users: int, groups: int, members: int) -> tuple[int, int]:
    """The first sync's queue; returns (objects, memberships)."""
    ext = cfg.extension_name(ANCHOR_EXT)
    memberships = 0
    with store.transaction() as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY pending_export (object_type, anchor, kind, member_anchor, payload, waiting) FROM STDIN"
        ) as cp:
            for i in range(users):
                cp.write_row(("user", f"u-{i}", "create", "", orjson.dumps(_user_payload(i)).decode(), False))
            for g, grp in enumerate(_groups(groups, users, members)):
                payload = {
                    "displayName": f"Group {g}",
                    "mailNickname": f"g{g:05d}",
                    "mailEnabled": False,
                    "securityEnabled": True,
                    ext: f"g-{g}",
                }
                cp.write_row(("group", f"g-{g}", "create", "", orjson.dumps(payload).decode(), False))
                for m in grp.members or ():
                    idx = uuid.UUID(m).int - (0xB5 << 120)
                    cp.write_row(("group", f"g-{g}", "member_add", f"u-{idx}", "{}", True))
                    memberships += 1
        fence.renew(conn, 1, "bench", 24 * 3600)
        upkeep.flush_stats(conn)
    return users + groups, memberships


def _confirm(store: Store, results: list[Any]) -> int:
    """What the confirming import and the join do: link created objects, drop confirmed rows."""
    links = [(r.anchor, r.object_type, r.target_id) for r in results if r.kind == "create" and r.done]
    done = [r.op_id for r in results if r.done]
    with store.transaction() as conn:
        upkeep.flush_stats(conn)
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS _linked (anchor text PRIMARY KEY) ON COMMIT DROP")
        with conn.cursor() as cur:
            cur.executemany(
                "WITH n AS (INSERT INTO sync_link (anchor, object_type, target_id, how)"
                " VALUES (%s, %s, %s, 'created') ON CONFLICT (anchor) DO NOTHING RETURNING anchor)"
                " INSERT INTO _linked SELECT anchor FROM n",
                links,
            )
        pending.release_waiting(conn)
        conn.execute("DELETE FROM pending_export WHERE id = ANY(%s)", (done,))
    _tend(store, len(done))
    return len(done)


def _tend(store: Store, confirmed: int) -> None:
    """What the sync engine does after each cycle (SyncEngine._tend)."""
    with store.connection() as conn:
        tended = upkeep.tend(conn, confirmed=confirmed)
    print(f"tended: analyzed {tended.analyzed}, vacuumed {tended.vacuumed}", file=sys.stderr)


async def _sync(url: str, cfg: EmulatorConfig, store: Store, tmp: Path, ca: Path) -> tuple[float, int, int]:
    """Export runs until the queue is empty; (seconds, operations done, runs)."""
    settings = _settings(
        url, cfg, tmp, ca, write_budget=cfg.write_budget, write_window_seconds=cfg.write_window
    )
    t0 = time.perf_counter()
    total = runs = 0
    async with GraphTarget(settings, node="bench") as target:
        while True:
            report = await target.exporter(store, Unfenced("bench", 1)).export()
            runs += 1
            print(report.sentence(), file=sys.stderr)
            n = await asyncio.to_thread(_confirm, store, report.results)
            total += n
            if not report.results or report.error or runs > 20:
                break
    return time.perf_counter() - t0, total, runs


def run(users: int = 100_000, groups: int = 2_000, members: int = 100) -> list[Figure]:
    from tests.target.tls import make_tls

    dsn, stack = _dsn()
    schema = f"bench_thr_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            ca, ctx = make_tls(tmp)
            cfg = EmulatorConfig(
                preregister_extensions=[ANCHOR_EXT],
                write_budget=3000 * SPEED,
                write_window=150.0,
                read_budget=8000 * SPEED,
                read_window=10.0,
                request_log_size=4 * (users + groups) + 1_000_000,
            )
            with Store(dsn, schema, max_size=8) as store:
                migrate.migrate(store)
                objects, memberships = _queue(store, cfg, users, groups, members)
                _tend(store, 0)  # as after the first sync's diff
                with _emulator(cfg, ctx, (0, 0, 0)) as url:
                    took, done, runs = asyncio.run(_sync(url, cfg, store, tmp, ca))
                    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=300) as http:
                        log = http.get(f"{url}/_emulator/requests").json()["requests"]
                        state = http.get(f"{url}/_emulator/state").json()
                with store.connection() as conn:
                    left = conn.execute("SELECT count(*) FROM pending_export").fetchone()
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        stack.remove()

    calls = [e for e in log if e["note"] != "batch"]  # items and plain calls, not $batch envelopes
    writes = [e for e in calls if e["write"] and e["status"] != 429]
    throttled = sum(1 for e in calls if e["status"] == 429)
    by_kind: dict[str, int] = {}
    for e in writes:
        key = f"{e['method']} {'/groups/{id}' if e['path'].startswith('/groups/') else e['path']}"
        by_kind[key] = by_kind.get(key, 0) + 1
    landed = sum(len(g.get("members", [])) for g in state["groups"])
    baseline = objects + memberships
    ideal = objects + memberships / 20
    ratio = len(writes) / ideal
    complete = done == objects + memberships and landed == memberships and not (left and left[0])
    return [
        Figure(
            f"first sync, {users:,} users + {groups:,} groups (~{members} members): writes used",
            len(writes),
            "writes",
            baseline=baseline,
            baseline_name="one write per object and per membership, same data",
            target=f"<= 1.1 x (objects + memberships / 20) = {1.1 * ideal:,.0f}",
            ok=len(writes) <= 1.1 * ideal and complete,
            note=f"{len(writes) / ideal:.3f} x (objects + memberships / 20) = {ratio:.3f} of the ideal;"
            f" {objects:,} objects, {memberships:,} memberships ({landed:,} in the emulator afterwards);"
            f" writes by kind {by_kind}; {runs} export runs, {took:.0f} s here at {SPEED} x Graph's quota",
        ),
        Figure(
            "first sync at Graph's 20 writes/s (3,000 per 150 s), projected from the writes used",
            len(writes) / 20 / 3600,
            "h",
            baseline=baseline / 20 / 3600,
            baseline_name="one write per membership",
            note=f"{len(writes):,} / 20 writes/s; the baseline's {baseline:,} writes take"
            f" {math.ceil(baseline / 20 / 60):,} min",
        ),
        Figure(
            "first sync requests answered 429",
            throttled / max(1, len(calls)) * 100,
            "%",
            note=f"{throttled} of {len(calls):,} requests; the client was given the emulator's budget",
        ),
    ]


def main() -> list[Figure]:
    return run()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--groups", type=int, default=2_000)
    p.add_argument("--members", type=int, default=100)
    a = p.parse_args()
    for fig in run(a.users, a.groups, a.members):
        base = (
            f" (baseline {fig.baseline:,.2f} {fig.unit} {fig.baseline_name}, ratio {fig.ratio:.3f})"
            if fig.baseline
            else ""
        )
        status = "" if fig.ok is None else (" OK" if fig.ok else " MISSED")
        print(f"{fig.name}: {fig.value:,.3f} {fig.unit}{base} [{fig.target}]{status} — {fig.note}")
