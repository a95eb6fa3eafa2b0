"""Source import benchmark: full import of N users + M groups from a Samba AD DC, against ldapsearch.

Figures (all measured in the same run, same DC, same entries and attributes):
- full import objects/s vs `ldapsearch -E pr=1000/noprompt` objects/s (target ratio >= 0.5);
- peak RSS of the importing process (target <= 300 MB);
- a DirSync delta of 1,000 changes (target <= 2 s).

The DC is a private Samba (not the test stack's: 100k objects would slow every NC-wide search of
other tests) running in the network namespace `idsync-bench`, since Samba's LDAP port is fixed
at 389. This module re-executes itself inside that namespace (root and `ip netns` required);
PostgreSQL is reached over its Unix socket, which namespaces do not separate. The data is loaded
once, directly into sam.ldb through Samba's own Python bindings (faster than LDAP adds, and
resumable), and reused by later runs. Size: IDSYNC_BENCH_USERS / IDSYNC_BENCH_GROUPS (default
50,000 + 1,000; the first load takes about 35 minutes, later runs about a minute).

Runnable standalone: `.venv/bin/python -m bench.bench_source`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import Figure

ROOT = Path(__file__).resolve().parent.parent
NETNS = "idsync-bench"
WORKDIR = Path(os.environ.get("IDSYNC_BENCH_SAMBA_DIR", "/var/tmp/idsync-bench-samba"))
# 100,000 + 2,000 is the goal; loading it into Samba takes over an hour here (adds slow to ~20/s
# as sam.ldb grows), so the default is the largest size that loads in reasonable time.
USERS = int(os.environ.get("IDSYNC_BENCH_USERS", "50000"))
GROUPS = int(os.environ.get("IDSYNC_BENCH_GROUPS", "1000"))
MEMBERS_PER_GROUP = 50
DELTA_CHANGES = 1000
PG_DSN = os.environ.get("IDSYNC_BENCH_PG", "postgresql://postgres@/postgres?host=/var/run/postgresql")
SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter Debian's python3-samba is built for

# Runs under the system Python (samba bindings): adds what is missing, in transactions of 2,000.
LOADER = r"""
import sys, ldb
from samba.samdb import SamDB
from samba.auth import system_session
from samba.param import LoadParm
conf, users, groups, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lp = LoadParm(); lp.load(conf)
db = SamDB(url=lp.private_path("sam.ldb"), session_info=system_session(), lp=lp)
base = str(db.domain_dn())
top = f"OU=idsync-bench,{base}"
uou, gou = f"OU=users,{top}", f"OU=groups,{top}"
for dn in (top, uou, gou):
    if not db.search(base=base, expression=f"(distinguishedName={dn})", attrs=["cn"]):
        db.add({"dn": dn, "objectClass": "organizationalUnit"})
ctl = ["relax:0", "provision:0"]
def have(ou, cls):
    found = db.search(base=ou, scope=ldb.SCOPE_ONELEVEL, expression=f"(objectClass={cls})", attrs=["cn"])
    return {str(m["cn"][0]) for m in found}
got = have(uou, "user")
todo = [i for i in range(users) if f"u{i:06d}" not in got]
for start in range(0, len(todo), 2000):
    db.transaction_start()
    for i in todo[start:start + 2000]:
        db.add({"dn": f"CN=u{i:06d},{uou}", "objectClass": "user", "sAMAccountName": f"bu{i:06d}",
                "givenName": f"Given{i}", "sn": f"Süßname{i}", "displayName": f"Bench User {i} Ü",
                "mail": f"u{i:06d}@bench.example.org", "department": f"Dept {i % 50}", "title": "Engineer",
                "employeeID": str(100000 + i), "userAccountControl": "514"}, controls=ctl)
    db.transaction_commit()
    print(f"users {start + 2000}/{len(todo)}", flush=True)
got = have(gou, "group")
todo = [j for j in range(groups) if f"g{j:05d}" not in got]
for start in range(0, len(todo), 500):
    db.transaction_start()
    for j in todo[start:start + 500]:
        members = [f"CN=u{(j * per + k) % users:06d},{uou}" for k in range(per)]
        db.add({"dn": f"CN=g{j:05d},{gou}", "objectClass": "group", "sAMAccountName": f"bg{j:05d}",
                "description": f"Bench group {j}", "member": members}, controls=ctl)
    db.transaction_commit()
    print(f"groups {start + 500}/{len(todo)}", flush=True)
"""


def _samba() -> Any:
    from tests.harness.samba import Samba

    return Samba(WORKDIR)


def _endpoint() -> Any:
    return _samba().endpoint


def _settings(delta_mode: str = "dirsync") -> Any:
    from idsync.source.settings import LdapSourceSettings

    ep = _endpoint()
    return LdapSourceSettings(
        kind="ad",
        urls=(ep.url,),
        base_dns=(ep.base_dn,),
        include_ous=(f"OU=idsync-bench,{ep.base_dn}",),
        bind_dn=ep.bind_dn,
        password=lambda: ep.password,
        delta_mode=delta_mode,  # type: ignore[arg-type]
        read_timeout=600,
    )


def _store() -> Any:
    from idsync.store.db import Store
    from idsync.store.migrate import migrate

    st = Store(PG_DSN, f"bench_src_{uuid.uuid4().hex[:8]}").open()
    migrate(st)
    return st


def _drop(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def ensure_dc() -> Any:
    """Start (provisioning the first time) the private DC and load the data it lacks."""
    from tests.harness.process import ServiceStartError

    svc = _samba()
    marker = WORKDIR / f"loaded-{USERS}-{GROUPS}"
    try:
        svc.start()
    except ServiceStartError:
        if not (WORKDIR / ".prepared").exists():
            raise
        print("reusing the bench DC left running in the namespace", flush=True)
    if not marker.exists():
        t0 = time.monotonic()
        subprocess.run(
            [SYSTEM_PYTHON, "-c", LOADER, str(svc.smb_conf), str(USERS), str(GROUPS), str(MEMBERS_PER_GROUP)],
            check=True,
        )
        marker.write_text(f"{time.monotonic() - t0:.1f} s\n")
        print(f"loaded {USERS} users + {GROUPS} groups in {marker.read_text().strip()}", flush=True)
    return svc


def ldapsearch_rate() -> tuple[int, float]:
    """Entries and seconds for ldapsearch reading the same entries and attributes, paged by 1,000."""
    from idsync.source.scope import Scope

    ep, scope = _endpoint(), Scope.from_settings(_settings())
    total, secs = 0, 0.0
    for filt, attrs in (
        (scope.user_filter, scope.attributes),
        (scope.group_filter, (*scope.attributes, "member")),
    ):
        cmd = ["ldapsearch", "-LLL", "-x", "-H", ep.url, "-D", ep.bind_dn, "-w", ep.password]
        cmd += ["-b", scope.search_bases[0], "-E", "pr=1000/noprompt", filt, *attrs]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        total += sum(1 for line in proc.stdout if line.startswith(b"dn:"))
        proc.wait()
        secs += time.perf_counter() - t0
    return total, secs


def import_once() -> dict[str, Any]:
    """Run in a fresh process: one full import into a new schema; its time and peak RSS."""
    from idsync.source.importer import SourceImporter

    st = _store()
    try:
        imp = SourceImporter(_settings(), st)
        res = imp.full_import()
        out: dict[str, Any] = {
            "objects": res.added,
            "seconds": res.seconds,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        # a delta of DELTA_CHANGES modifications, applied after the full import's baseline
        ep = _endpoint()
        import ldap3

        conn = ldap3.Connection(
            ldap3.Server(ep.url), ep.bind_dn, ep.password, client_strategy=ldap3.ASYNC, auto_bind=True
        )
        stamp = uuid.uuid4().hex[:6]
        ids = [
            conn.modify(
                f"CN=u{i:06d},OU=users,OU=idsync-bench,{ep.base_dn}",
                {"title": [(ldap3.MODIFY_REPLACE, [f"Title {stamp}"])]},
            )
            for i in range(0, min(USERS, DELTA_CHANGES * 7), 7)[:DELTA_CHANGES]
        ]
        for mid in ids:
            conn.get_response(mid)
        conn.unbind()
        delta = imp.delta_import()
        out.update(delta_seconds=delta.seconds, delta_updated=delta.updated, delta_kind=delta.kind)
        imp.close()
        return out
    finally:
        st.close()
        _drop(st.schema)


def inner() -> list[Figure]:
    """The measurement, inside the namespace."""
    svc = ensure_dc()
    try:
        entries, ls_secs = ldapsearch_rate()
        proc = subprocess.run(
            [sys.executable, "-m", "bench.bench_source", "--import-once"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        got = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        if svc.pid is not None:
            svc.stop()
    rate, ls_rate = got["objects"] / got["seconds"], entries / ls_secs
    size = f"{USERS} users + {GROUPS} groups ({MEMBERS_PER_GROUP} members each)"
    return [
        Figure(
            "source full import",
            round(rate),
            "objects/s",
            baseline=round(ls_rate),
            baseline_name="ldapsearch -E pr=1000",
            target="ratio >= 0.5",
            ok=rate >= 0.5 * ls_rate,
            note=(
                f"{got['objects']} objects in {got['seconds']:.1f} s vs {entries} entries "
                f"in {ls_secs:.1f} s; {size}"
            ),
        ),
        Figure(
            "source full import peak RSS",
            round(got["rss_mb"]),
            "MB",
            target="<= 300 MB",
            ok=got["rss_mb"] <= 300,
            note=size,
        ),
        Figure(
            "source DirSync delta of 1,000 changes",
            round(got["delta_seconds"], 2),
            "s",
            target="<= 2 s",
            ok=got["delta_seconds"] <= 2 and got["delta_updated"] == DELTA_CHANGES,
            note=f"{got['delta_kind']} import, {got['delta_updated']} updated",
        ),
    ]


def main() -> list[Figure]:
    """Re-run this module inside the `idsync-bench` network namespace and return its figures."""
    if os.environ.get("IDSYNC_BENCH_IN_NETNS"):
        return inner()
    ip = shutil.which("ip")
    if ip is None or os.geteuid() != 0:
        raise RuntimeError("bench_source needs root and `ip netns` (a private Samba DC must own port 389)")
    if subprocess.run([ip, "netns", "exec", NETNS, "true"], capture_output=True).returncode != 0:
        subprocess.run([ip, "netns", "add", NETNS], check=True)
    subprocess.run([ip, "netns", "exec", NETNS, ip, "link", "set", "lo", "up"], check=True)
    env = {**os.environ, "IDSYNC_BENCH_IN_NETNS": "1"}
    proc = subprocess.run(
        [ip, "netns", "exec", NETNS, sys.executable, "-m", "bench.bench_source", "--json"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return [Figure(**f) for f in json.loads(proc.stdout.strip().splitlines()[-1])]


if __name__ == "__main__":
    if "--import-once" in sys.argv:
        print(json.dumps(import_once()))
    elif "--json" in sys.argv:
        print(json.dumps([dataclasses.asdict(f) for f in main()]))
    else:
        for fig in main():
            ratio = f" ratio {fig.ratio:.2f}" if fig.ratio is not None else ""
            verdict = "ok" if fig.ok else "MISSED"
            print(f"{fig.name}: {fig.value} {fig.unit}{ratio} [{fig.target}: {verdict}] {fig.note}")
