"""Awkward real-world AD data against a strict tenant: Samba AD -> `idsync run` -> strict emulator.

A new tenant (no group anchor extension, one verified domain plus the initial onmicrosoft one)
meets a directory with a group named `Sales Team (EU) …`, a user whose UPN suffix the tenant has
not verified (`corp.local`), a user with several phone numbers and a Global Administrator who
leaves scope. Every object either lands or is set aside with its reason; no cycle gets stuck.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson

from tests.cluster.checks import immutable_id
from tests.cluster.cluster import LocalCluster, run_preflight
from tests.cluster.directory import AdDirectory
from tests.cluster.emulator import INITIAL_DOMAIN
from tests.cluster.instance import GROUP_ANCHOR, wait_for
from tests.conftest import ClusterFactory

RULES = """
[user]
deprovision = "disable"

[user.flows]
# AD keeps one telephoneNumber and the others in otherTelephone; Graph keeps one business phone.
businessPhones = "take(values.telephonenumber + values.othertelephone, 1)"
"""


def _idsync(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "idsync", "--config", str(config), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _user(c: LocalCluster, guid: str) -> dict[str, Any] | None:
    iid = immutable_id(guid)
    return next((u for u in c.state()["users"] if u.get("onPremisesImmutableId") == iid), None)


def _group(c: LocalCluster, guid: str) -> dict[str, Any] | None:
    return next((g for g in c.state()["groups"] if g.get(GROUP_ANCHOR) == guid), None)


def _checks(report: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report}


def test_awkward_directory_data_lands_or_is_quarantined_with_its_reason(
    local_cluster: ClusterFactory,
    samba_ou: str,
    ad: AdDirectory,
) -> None:
    tag = uuid.uuid4().hex[:4]
    inside, outside = ad.ou("in", samba_ou), ad.ou("out", samba_ou)
    ann = ad.add_user(
        inside, f"ann{tag}", telephoneNumber="+1 555 0100", otherTelephone=["+1 555 0101", "+1 555 0102"]
    )
    bob = ad.add_user(inside, f"bob{tag}", domain="corp.local")
    carol = ad.add_user(inside, f"carol{tag}", department="IT")
    team = f"Sales Team (EU) {tag}"  # sAMAccountName too: spaces and brackets
    group_dn = ad.add_group(inside, team, [ann.dn, bob.dn, carol.dn])
    group_guid = ad.guid(group_dn)

    with local_cluster(
        cluster="tenant",
        include_ous=[inside],
        register_extension=False,  # a new tenant: the operator has not run preflight --fix yet
        extra={"source.ldap": {"extra_attributes": ["otherTelephone"]}},
    ) as c:
        node = c.add("a")
        node.use_rules(RULES)

        # 1. preflight says what is wrong before anything runs.
        first = _checks(run_preflight(node.config))
        assert first["group-extension"]["status"] == "FAIL"
        assert first["group-extension"]["fix"] == "idsync preflight --fix"
        assert first["upn-suffixes"]["status"] == "WARN"
        assert "corp.local (1 users)" in first["upn-suffixes"]["detail"]
        assert f"exported as <local>@{INITIAL_DOMAIN}" in first["upn-suffixes"]["detail"]
        assert "in scope: 3 users, 1 groups" in first["source"]["detail"]

        # 2. The daemon starts anyway: users land, groups wait for their extension.
        node.start("--standalone")
        for u in (ann, bob, carol):
            wait_for(lambda u=u: _user(c, u.guid), 90, f"{u.sam} in the target")
        got_bob = _user(c, bob.guid)
        assert got_bob is not None and got_bob["userPrincipalName"] == f"bob{tag}@{INITIAL_DOMAIN}"
        got_ann = _user(c, ann.guid)
        assert got_ann is not None and got_ann["businessPhones"] == ["+1 555 0100"]
        stopped = [e for e in node.events() if e.get("event") == "tenant.group_exports_stopped"]
        assert stopped and GROUP_ANCHOR in stopped[0]["reason"]
        assert c.state()["groups"] == []
        assert node.alive

        # 3. preflight --fix registers the extension; the running daemon picks it up.
        fixed = _checks(run_preflight(node.config, fix=True))
        assert fixed["group-extension"]["status"] == "OK"
        again = _checks(run_preflight(node.config, fix=True))["group-extension"]  # idempotent
        assert again["status"] == "OK" and again["detail"] == f"{GROUP_ANCHOR} registered for groups"
        group = wait_for(
            lambda: (g := _group(c, group_guid)) and len(g.get("members", [])) == 3 and g, 90, "the group"
        )
        assert group["displayName"] == team
        assert group["mailNickname"] == f"SalesTeamEU{tag}"
        assert any(e.get("event") == "tenant.group_exports_resumed" for e in node.events())

        # 4. carol becomes a Global Administrator in the tenant, then leaves scope in AD.
        carol_id = _user(c, carol.guid)["id"]  # type: ignore[index]
        c.emulator.post("/_emulator/roles", {"role": "Global Administrator", "principal": carol_id})
        ad.move(carol.dn, f"CN={carol.sam}", outside)

        def quarantined() -> dict[str, Any] | None:
            out = _idsync(node.config, "pending", "--errors", "--format", "json")
            items = orjson.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []
            return next((i for i in items if i["status"].startswith("quarantined")), None)

        item = wait_for(quarantined, 90, "carol's disable to be quarantined", step=0.5)
        assert item["kind"] == "update" and item["anchor"] == carol.guid
        assert item["attempts"] == 1  # set aside at once, not retried
        assert "Authorization_RequestDenied" in item["status"]
        assert "holds the directory role(s) Global Administrator" in item["status"]
        carol_now = _user(c, carol.guid)
        assert carol_now is not None and carol_now["accountEnabled"] is True  # Graph refused; nothing forced

        # 5. Never a stuck cycle: later changes still land, the group lost carol.
        ad.replace(ann.dn, department="Finance")
        wait_for(lambda: (_user(c, ann.guid) or {}).get("department") == "Finance", 90, "ann's change")
        # The member removal is its own operation: it may land before or after ann's update.
        members = wait_for(
            lambda: (m := (_group(c, group_guid) or {}).get("members", [])) and len(m) == 2 and m,
            90,
            "carol removed from the group",
        )
        assert carol_id not in members

        # 6. `idsync pending` names every object set aside or adjusted, with the reason.
        table = _idsync(node.config, "pending").stdout
        assert "adjusted for the tenant" in table
        assert f"UPN suffix corp.local of bob{tag}@corp.local is not a verified domain" in table
        assert node.alive


def test_a_failing_group_import_does_not_hold_users_hostage(
    local_cluster: ClusterFactory,
    samba_ou: str,
    ad: AdDirectory,
) -> None:
    inside = ad.ou("in", samba_ou)
    tag = uuid.uuid4().hex[:4]
    dan = ad.add_user(inside, f"dan{tag}")
    group_guid = ad.guid(ad.add_group(inside, f"Ops {tag}", [dan.dn]))
    # Graph keeps failing the group delta (every attempt 503): the group import cannot finish.
    fault = {"kind": "status", "status": 503, "count": None, "path": "^/groups/delta", "retry_after": 0}
    with local_cluster(
        cluster="hostage",
        include_ous=[inside],
        emulator_args=("--fault", orjson.dumps(fault).decode()),
    ) as c:
        node = c.add("a").start("--standalone")
        wait_for(lambda: _user(c, dan.guid), 120, "the user in the target, while groups fail")
        failed = [e for e in node.events() if e.get("event") == "target.import_failed"]
        assert failed and failed[0]["type"] == "group" and "503" in failed[0]["error"]
        syncs = [str(e.get("sentence")) for e in node.events() if e.get("event") == "sync.done"]
        waiting = "group diffs deferred: target import incomplete (group: never imported)"
        assert syncs and all(waiting in s for s in syncs)
        assert c.state()["groups"] == []
        # Graph recovers: the group follows, with its member.
        _clear(c)
        group = wait_for(lambda: (g := _group(c, group_guid)) and g.get("members") and g, 120, "the group")
        assert group["members"] == [_user(c, dan.guid)["id"]]  # type: ignore[index]
        assert node.alive


def _clear(c: LocalCluster) -> None:
    """Drop the emulator's fault rules (its admin API)."""
    req = urllib.request.Request(c.emulator.url + "/_emulator/faults", method="DELETE")
    with urllib.request.urlopen(req, timeout=10):
        pass
