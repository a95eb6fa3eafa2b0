"""Sync engine at scale: 100,000 users + 2,000 groups (100 members on average) on real PostgreSQL.

Figures:
- full sync (first sync: every object evaluated, every create and member_add queued) — time
  against a plain `INSERT … SELECT` copy of the same source rows in the same database, and the
  process's RSS growth during the sync, with its rule-evaluation worker processes (sampled every
  20 ms; the space is streamed in pages, never held in memory);
- confirming sync after the whole queue "landed" (the target space filled as a target import
  would), which must empty the queue;
- incremental sync of 1,000 changed users — target ≤ 1 s — against copying those 1,000 rows.

Run standalone: `python -m bench.bench_sync [--users N] [--groups N]`.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from bench.common import Figure
from idsync.model import SourceObject
from idsync.store import migrate, pending, source_space, target_space
from idsync.store.db import Store
from idsync.store.target_space import TargetPage, TargetRow
from idsync.sync.engine import SyncEngine
from idsync.sync.guard import Thresholds
from idsync.sync.rules import load_rules

DEPARTMENTS = ["Sales", "Finance", "Engineering", "Support", "Legal", "Marketing", "HR", "Operations"]


def _dsn() -> tuple[str, Any]:
    """PostgreSQL of the shared test stack (or a private one), as the tests use it."""
    from tests.harness import Stack
    from tests.harness.stack import SHARED_DIR

    st = Stack(shared=Stack.load(SHARED_DIR))
    return st.postgres().dsn, st


def _guid(i: int) -> str:
    return str(uuid.UUID(int=(0xB5 << 120) + i))


def _user(i: int, department: str | None = None) -> SourceObject:
    attrs = {
        "cn": (f"User {i}",),
        "givenname": (f"Given{i}",),
        "sn": (f"Surname{i}",),
        "samaccountname": (f"u{i:06d}",),
        "userprincipalname": (f"u{i:06d}@example.com",),
        "mail": (f"u{i:06d}@example.com",),
        "useraccountcontrol": ("512" if i % 50 else "514",),
        "department": (department or DEPARTMENTS[i % len(DEPARTMENTS)],),
        "title": (f"Title {i % 97}",),
        "employeeid": (f"E{i:07d}",),
        "telephonenumber": (f"+1 555 {i:07d}",),
        "l": ("Berlin" if i % 3 else "Lisbon",),
    }
    return SourceObject(_guid(i), "user", f"CN=User {i},OU=Staff,DC=example,DC=com", attrs)


def _groups(n_groups: int, n_users: int, avg_members: int) -> Iterator[SourceObject]:
    rnd = random.Random(6)
    for g in range(n_groups):
        size = rnd.randint(avg_members // 2, avg_members * 3 // 2)
        members = {_guid(rnd.randrange(n_users)) for _ in range(size)}
        yield SourceObject(
            _guid(10_000_000 + g),
            "group",
            f"CN=Group {g},OU=Groups,DC=example,DC=com",
            {"cn": (f"Group {g}",), "samaccountname": (f"g{g:05d}",), "grouptype": ("-2147483646",)},
            tuple(sorted(members)),
        )


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load_source(store: Store, users: int, groups: int, avg_members: int) -> float:
    t0 = time.perf_counter()
    batch = 10_000
    for start in range(0, users, batch):
        with store.transaction() as conn:
            source_space.upsert(conn, [_user(i) for i in range(start, min(users, start + batch))])
    gl = list(_groups(groups, users, avg_members))
    for start in range(0, len(gl), 500):
        with store.transaction() as conn:
            source_space.upsert(conn, gl[start : start + 500])
    return time.perf_counter() - t0


def _baseline_copy(store: Store, where: str = "") -> float:
    """A plain INSERT … SELECT of the same source rows into a scratch table: PostgreSQL's floor."""
    with store.transaction() as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute("CREATE TABLE bench_copy (anchor text PRIMARY KEY, object_type text, attrs jsonb)")
    t0 = time.perf_counter()
    with store.transaction() as conn:
        conn.execute("INSERT INTO bench_copy SELECT anchor, object_type, attrs FROM source_object" + where)
        conn.execute(
            "CREATE TEMP TABLE bench_mcopy ON COMMIT DROP AS SELECT * FROM source_member"
            + (" WHERE group_anchor IN (SELECT anchor FROM bench_copy)" if where else "")
        )
    return time.perf_counter() - t0


def _land_everything(store: Store, rules: Any) -> float:
    """Play exporter + confirming import for the whole queue (creates, then members)."""
    t0 = time.perf_counter()
    anchor_attr = {t: rules.anchor_attribute(t) for t in ("user", "group")}
    while True:
        with store.transaction() as conn:
            ops = pending.claim(conn, epoch=1, node="bench", limit=5000, held=False)
            if not ops:
                break
            pages: dict[str, TargetPage] = {}
            rows: dict[str, list[TargetRow]] = {"user": [], "group": []}
            adds: list[tuple[str, str]] = []
            for op in ops:
                if op.kind == "create":
                    a = dict(op.payload)
                    rows[op.object_type].append(
                        TargetRow(f"t-{op.anchor}", a, a[anchor_attr[op.object_type]], True)
                    )
                elif op.kind == "member_add":
                    assert op.target_id and op.member_target_id
                    adds.append((op.target_id, op.member_target_id))
            for t in ("user", "group"):
                pages[t] = TargetPage(t, objects=rows[t], members_added=adds if t == "group" else ())  # type: ignore[arg-type]
                target_space.apply_page(conn, pages[t])
            for op in ops:
                pending.record_result(conn, op.id, "ok", epoch=1, node="bench")
        if not any(o.kind == "create" for o in ops) and not adds:
            break
    return time.perf_counter() - t0


def run(
    users: int = 100_000,
    groups: int = 2_000,
    avg_members: int = 100,
    changed: int = 1_000,
    keep: bool = False,
) -> list[Figure]:
    dsn, stack = _dsn()
    schema = f"bench_sync_{uuid.uuid4().hex[:8]}"
    figures: list[Figure] = []
    try:
        with Store(dsn, schema, max_size=2) as store:
            migrate.migrate(store)
            load_s = _load_source(store, users, groups, avg_members)
            print(f"source space loaded in {load_s:.1f}s", file=sys.stderr)
            rules = load_rules(None, source_kind="ad")
            engine = SyncEngine(store, rules, thresholds=Thresholds(count=500))
            with store.connection() as conn:
                conn.execute("ANALYZE")
            base_full = _baseline_copy(store)
            gc.collect()
            rss0 = _rss_mb()
            t0 = time.perf_counter()
            # Sampled during the run, this process and its rule-evaluation workers summed.
            from bench.bench_scale import RssSampler

            with RssSampler({"sync": os.getpid()}) as sampler:
                full = engine.run()
            full_s = time.perf_counter() - t0
            rss_growth = max(0.0, sampler.peak["sync"] - rss0)
            peak = _peak_mb()
            print(full.sentence(), full.phases, file=sys.stderr)
            objects = users + groups
            figures.append(
                Figure(
                    f"full sync, {users:,} users + {groups:,} groups (~{avg_members} members)",
                    full_s,
                    "s",
                    baseline=base_full,
                    baseline_name="INSERT … SELECT copy of the same rows",
                    note=f"{objects / full_s:,.0f} objects/s; queue {full.pending}; phases {full.phases}",
                )
            )
            figures.append(
                Figure(
                    "full sync RSS growth",
                    rss_growth,
                    "MB",
                    target="<= 200 MB (streamed in pages)",
                    ok=rss_growth <= 200,
                    note=f"peak of this process and its rule-evaluation workers during the sync, sampled"
                    f" every 20 ms, less its RSS before; peak process RSS {peak:.0f} MB incl. test data"
                    " generation",
                )
            )

            land_s = _land_everything(store, rules)
            creates_landed = engine.run()  # links the created objects: member operations become ready
            print(creates_landed.sentence(), file=sys.stderr)
            land_s += _land_everything(store, rules)
            t0 = time.perf_counter()
            confirm = engine.run()
            confirm_s = time.perf_counter() - t0
            print(confirm.sentence(), confirm.phases, file=sys.stderr)
            with store.connection() as conn:
                left = sum(pending.counts(conn).values())
            figures.append(
                Figure(
                    "confirming sync after the whole queue landed",
                    confirm_s,
                    "s",
                    target="queue empty",
                    ok=left == 0,
                    note=f"{confirm.ops_confirmed:,} operations confirmed, {left} left"
                    f" (export simulated in {land_s:.1f}s)",
                )
            )

            rnd = random.Random(7)
            picked = rnd.sample(range(users), changed)
            with store.transaction() as conn:
                source_space.upsert(conn, [_user(i, department="Reorganised") for i in picked])
            anchors = ",".join(f"'{_guid(i)}'" for i in picked)
            base_inc = _baseline_copy(store, f" WHERE anchor IN ({anchors})")
            t0 = time.perf_counter()
            inc = engine.run()
            inc_s = time.perf_counter() - t0
            print(inc.sentence(), inc.phases, file=sys.stderr)
            ok_ops = inc.pending.get("update", 0) == changed and inc.evaluated == changed
            figures.append(
                Figure(
                    f"incremental sync of {changed:,} changed users",
                    inc_s,
                    "s",
                    baseline=base_inc,
                    baseline_name=f"INSERT … SELECT copy of the same {changed:,} rows",
                    target="<= 1 s",
                    ok=inc_s <= 1.0 and ok_ops,
                    note=f"{inc.pending.get('update', 0)} updates queued (expected {changed})",
                )
            )
    finally:
        if keep:
            print(f"kept schema {schema} for inspection", file=sys.stderr)
        with psycopg.connect(dsn, autocommit=True) as conn:
            if keep:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS bench_sync_kept CASCADE"))
                conn.execute(
                    sql.SQL("ALTER SCHEMA {} RENAME TO bench_sync_kept").format(sql.Identifier(schema))
                )
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        stack.remove()
    return figures


def main() -> list[Figure]:
    return run()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--groups", type=int, default=2_000)
    p.add_argument("--members", type=int, default=100)
    p.add_argument("--changed", type=int, default=1_000)
    p.add_argument("--keep", action="store_true", help="keep the schema as bench_sync_kept")
    a = p.parse_args()
    for fig in run(a.users, a.groups, a.members, a.changed, a.keep):
        base = (
            f" (baseline {fig.baseline:.3f}{fig.unit} {fig.baseline_name}, ratio {fig.ratio:.1f})"
            if fig.baseline
            else ""
        )
        verdict = "" if fig.ok is None else (" OK" if fig.ok else " MISSED")
        print(f"{fig.name}: {fig.value:.3f} {fig.unit}{base} [{fig.target}]{verdict} {fig.note}")
