"""The operator's tools on a real cluster: Samba AD -> `idsync run` (ZooKeeper, PostgreSQL) -> the
strict Graph emulator.

An administrator leaves scope (Graph refuses to disable her: a security event, quarantined, counted,
alerted on, shown by `idsync status`); a value Graph normalises (a DateTimeOffset reads back in UTC)
is exported a bounded number of times, then quarantined; `idsync preview` explains one object and
`idsync quarantine retry | clear` act on what was set aside.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
import uuid
from typing import Any

import orjson

from idsync.emulator.config import DEFAULT_CLIENT_ID, service_principal_id
from tests.cluster.checks import immutable_id
from tests.cluster.cluster import LocalCluster
from tests.cluster.directory import AdDirectory
from tests.cluster.instance import Instance, wait_for
from tests.conftest import ClusterFactory

HIRED = "2024-03-01T09:00:00+02:00"
HIRED_UTC = "2024-03-01T07:00:00Z"
RULES = f"""
[user]
deprovision = "disable"

[user.flows]
# Only for the users of department Hire: Graph keeps a DateTimeOffset in UTC (resources/user.md),
# so what idsync writes never reads back equal.
employeeHireDate = "source.department == 'Hire' ? '{HIRED}' : null"
"""
LIMIT = 3


def _idsync(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "idsync", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _json(*args: str) -> Any:
    out = _idsync(*args)
    assert out.returncode == 0, out.stderr
    return orjson.loads(out.stdout)


def _user(c: LocalCluster, guid: str) -> dict[str, Any] | None:
    iid = immutable_id(guid)
    return next((u for u in c.state()["users"] if u.get("onPremisesImmutableId") == iid), None)


def _metric(node: Instance, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.admin_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def _patches(c: LocalCluster, user_id: str) -> int:
    """PATCH requests on one user, as the emulator logged them (direct or inside a $batch)."""
    return sum(
        1
        for w in c.emulator.writes()
        if w.get("method") == "PATCH" and str(w.get("path", "")).endswith(user_id)
    )


def test_quarantine_preview_privileged_users_and_values_graph_normalises(
    local_cluster: ClusterFactory,
    samba_ou: str,
    ad: AdDirectory,
) -> None:
    tag = uuid.uuid4().hex[:4]
    inside, outside = ad.ou("in", samba_ou), ad.ou("out", samba_ou)
    ann = ad.add_user(inside, f"ann{tag}", department="Sales")
    carol = ad.add_user(inside, f"carol{tag}", department="IT")
    dan = ad.add_user(inside, f"dan{tag}", department="Hire")

    extra = {"sync": {"confirm_timeout_seconds": 2.0, "export_unequal_limit": LIMIT}}
    with local_cluster(
        cluster="admin",
        include_ous=[inside],
        extra=extra,
    ) as c:
        node = c.add("a")
        node.use_rules(RULES)
        cfg = str(node.config)
        node.start()
        c.wait_leader(60)
        for u in (ann, carol, dan):
            wait_for(lambda u=u: _user(c, u.guid), 90, f"{u.sam} in the target")

        # 1. dan's hire date reads back in UTC: exported LIMIT times, then quarantined with the reason.
        def dan_entry() -> dict[str, Any] | None:
            entries = _json("--config", cfg, "quarantine", "list", "--json")
            return next((e for e in entries if e["key"] == dan.guid), None)

        entry = wait_for(dan_entry, 120, "dan's update to be quarantined", step=0.5)
        assert entry["phase"] == "export" and entry["attempts"] == LIMIT and entry["operations"] == ["update"]
        # (re-armed by the confirmation timeout, or by a full sync that saw it still differing)
        reason = entry["reason"]
        assert reason.startswith("update exported, but") and f"after {LIMIT} exports" in reason
        assert f'Graph holds employeeHireDate = "{HIRED_UTC}" where idsync writes "{HIRED}"' in reason
        dan_id = _user(c, dan.guid)["id"]  # type: ignore[index]
        sent = _patches(c, dan_id)
        assert sent == LIMIT  # the update, and nothing more
        wait_for(lambda: _metric(node, "idsync_unequal_exports_quarantined_total") == 1, 30, "the counter")

        # 2. carol becomes a Global Administrator, then leaves scope: Graph refuses to disable her.
        carol_id = _user(c, carol.guid)["id"]  # type: ignore[index]
        c.emulator.post("/_emulator/roles", {"role": "Global Administrator", "principal": carol_id})
        ad.move(carol.dn, f"CN={carol.sam}", outside)

        def carol_entry() -> dict[str, Any] | None:
            entries = _json("--config", cfg, "quarantine", "list", "--json")
            return next((e for e in entries if e["key"] == carol.guid), None)

        entry = wait_for(carol_entry, 90, "carol's disable to be quarantined", step=0.5)
        assert entry["attempts"] == 1 and "Global Administrator" in entry["reason"]
        assert _user(c, carol.guid)["accountEnabled"] is True  # type: ignore[index]
        wait_for(lambda: _metric(node, "idsync_quarantined_privileged_users") == 1, 30, "the gauge")
        refused = [
            line
            for line in _metric_lines(node)
            if line.startswith('idsync_privileged_refusals_total{op="update"}')
        ]
        assert refused == ['idsync_privileged_refusals_total{op="update"} 1.0']

        def status() -> str:
            out = _idsync("--config", cfg, "status", *c.ctl_args())
            return out.stdout if out.returncode == 0 else ""

        line = wait_for(lambda: "PRIVILEGED USERS: 1 quarantined on a" in status() and status(), 30, "status")
        assert "idsync quarantine list --phase export" in line

        # 3. preview explains carol: out of scope, the disable, the refusal queued and quarantined.
        out = _idsync("--config", cfg, "preview", carol.guid)
        assert out.returncode == 0, out.stderr
        text = out.stdout
        assert "verdict  out of scope" in text
        assert "update accountEnabled  true → false" in text and "deprovision = disable" in text
        assert f"linked (created) to {carol_id}" in text
        assert "quarantined after 1 attempts" in text and "Global Administrator" in text
        # ... and ann, in step, with every rule's result (named by her DN, or her anchor).
        out = _idsync("--config", cfg, "preview", ann.dn)
        assert out.returncode == 0, out.stderr
        assert f"name    ann{tag}@" in out.stdout
        assert "the target already holds the desired state" in out.stdout
        doc = _json("--config", cfg, "preview", ann.guid, "--json")
        assert doc["in_scope"] is True and doc["operations"] == [] and doc["target_id"]
        steps = {s["rule"]: s["result"] for s in doc["steps"]}
        assert steps["user.flows.department"] == "Sales" and steps["user.flows.employeeHireDate"] is None
        assert doc["source"]["samaccountname"] == [ann.sam]

        # 4. The documented fix: the app gets Privileged Authentication Administrator; retry.
        c.emulator.post(
            "/_emulator/roles",
            {
                "role": "Privileged Authentication Administrator",
                "principal": service_principal_id(DEFAULT_CLIENT_ID),
            },
        )
        out = _idsync("--config", cfg, "quarantine", "retry", carol.guid)
        assert out.returncode == 0, out.stderr
        assert "1 operation(s) re-armed for the next export" in out.stdout
        wait_for(lambda: (_user(c, carol.guid) or {}).get("accountEnabled") is False, 90, "carol disabled")
        wait_for(lambda: _metric(node, "idsync_quarantined_privileged_users") == 0, 30, "the gauge back to 0")
        wait_for(lambda: "PRIVILEGED" not in status() and status(), 30, "status without the line")

        # 5. dan's entry is cleared: its operation is dropped and never exported again.
        out = _idsync("--config", cfg, "quarantine", "clear", dan.guid)
        assert out.returncode == 0, out.stderr
        assert all(e["key"] != dan.guid for e in _json("--config", cfg, "quarantine", "list", "--json"))
        ad.replace(ann.dn, department="Finance")  # a few more cycles run and export
        wait_for(lambda: (_user(c, ann.guid) or {}).get("department") == "Finance", 90, "ann's change")
        assert _patches(c, dan_id) == sent
        assert node.alive


def _metric_lines(node: Instance) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.admin_port}/metrics", timeout=10) as resp:
        return resp.read().decode().splitlines()
