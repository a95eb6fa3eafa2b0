"""Sign-in and pilot scoping on a real cluster: Samba AD -> `idsync run` -> the strict emulator.

A pilot group scopes the users (direct members only; a member added in AD is created in the next
cycle, a member removed is deprovisioned); the users idsync creates get the rules' initial
password — Graph keeps `forceChangePasswordNextSignIn`, never the password, and the password
shows up in no operator output — or a random one with a forced change; `idsync preflight` warns
while users of a managed domain would get a random password nobody knows.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson

from tests.cluster.checks import immutable_id
from tests.cluster.cluster import LocalCluster, run_preflight, running_cluster
from tests.cluster.directory import AdDirectory
from tests.cluster.instance import wait_for
from tests.harness.ldap import LdapEndpoint


def _idsync(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "idsync", "--config", str(config), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


FEDERATED = "fed.idsync.lan"


def _user(c: LocalCluster, guid: str) -> dict[str, Any] | None:
    iid = immutable_id(guid)
    return next((u for u in c.state()["users"] if u.get("onPremisesImmutableId") == iid), None)


def _password_profile(c: LocalCluster, user_id: str) -> Any:
    """GET the user with $select=passwordProfile, once Graph's replication lag lets reads see it."""

    def read() -> Any:
        try:
            return c.emulator.get(f"/v1.0/users/{user_id}?$select=id,passwordProfile")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    return wait_for(read, 10, f"user {user_id} readable")["passwordProfile"]


def _checks(report: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report}


def test_pilot_group_scopes_users_and_they_get_the_rules_initial_password(
    tmp_path: Path,
    pg_dsn: str,
    zk_hosts: str,
    zk_chroot: str,
    samba: LdapEndpoint,
    samba_ou: str,
    ad: AdDirectory,
) -> None:
    tag = uuid.uuid4().hex[:4]
    inside = ad.ou("in", samba_ou)
    ann = ad.add_user(inside, f"ann{tag}", employeeID=f"{tag}71")
    bob = ad.add_user(inside, f"bob{tag}", employeeID=f"{tag}72")
    carol = ad.add_user(inside, f"carol{tag}", employeeID=f"{tag}73")
    dave = ad.add_user(inside, f"dave{tag}")  # no employeeID: no initial password
    nested = ad.add_group(inside, f"Nested {tag}", [carol.dn])
    pilot = ad.add_group(inside, f"Pilot {tag}", [ann.dn, dave.dn, nested])
    rules = f"""
[user.scope]
member_of = "{pilot}"

[user.password]
initial = "'Welcome-' + source.employeeid + '!'"
force_change = true
"""
    with running_cluster(
        tmp_path,
        cluster="pilot",
        pg_dsn=pg_dsn,
        zk_hosts=zk_hosts + zk_chroot,
        ldap=samba,
        include_ous=[inside],
    ) as c:
        node = c.add("a")
        node.use_rules(rules)
        checks = _checks(run_preflight(node.config))
        assert "in scope: 2 users" in checks["source"]["detail"]  # ann and dave: carol is nested
        assert checks["sign-in"]["status"] == "OK"
        assert checks["sign-in"]["detail"] == (
            "initial password from user.password.initial (forceChangePasswordNextSignIn true)"
        )
        node.start("--standalone")

        # 1. Only the pilot group's direct members; ann with the rules' password, forced to change it.
        got = wait_for(lambda: _user(c, ann.guid), 90, "ann in the target")
        assert _password_profile(c, got["id"]) == {"password": None, "forceChangePasswordNextSignIn": True}

        def dave_quarantined() -> dict[str, Any] | None:
            out = _idsync(node.config, "pending", "--errors", "--format", "json")
            items = orjson.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []
            return next((i for i in items if i["anchor"] == dave.guid), None)

        item = wait_for(dave_quarantined, 60, "dave's create to be quarantined", step=0.5)
        assert item["kind"] == "create" and item["attempts"] == 1
        assert "InitialPassword: user.password.initial: gave no password" in item["status"]
        assert _user(c, dave.guid) is None and _user(c, carol.guid) is None and _user(c, bob.guid) is None

        # 2. The password shows up in no operator output and no log line.
        secret = f"Welcome-{tag}71!"
        preview = _idsync(node.config, "preview", ann.dn, "--json")
        assert preview.returncode == 0, preview.stderr
        assert secret not in preview.stdout and "<redacted>" in preview.stdout
        assert "user.scope.member_of" in preview.stdout
        assert secret not in _idsync(node.config, "pending").stdout
        assert secret not in node.log_path.read_text()
        pages = {}
        for path in ("/", "/pending"):  # the web console and the admin API (loopback, no token)
            with urllib.request.urlopen(f"http://127.0.0.1:{node.admin_port}{path}", timeout=10) as resp:
                pages[path] = resp.read().decode()
            assert secret not in pages[path]
        assert dave.upn in pages["/"]  # the console does show the queue, dave's quarantined create

        # 3. bob joins the pilot group in AD: created in a following cycle; ann leaves it: deleted.
        ad.members(pilot, add=[bob.dn])
        got_bob = wait_for(lambda: _user(c, bob.guid), 90, "bob created after joining the pilot group")
        assert _password_profile(c, got_bob["id"])["forceChangePasswordNextSignIn"] is True
        ad.members(pilot, remove=[ann.dn])
        wait_for(lambda: _user(c, ann.guid) is None, 90, "ann deprovisioned after leaving the pilot group")
        assert _user(c, carol.guid) is None
        assert node.alive


def test_preflight_warns_until_a_policy_is_set_then_random_passwords_force_a_change(
    tmp_path: Path,
    pg_dsn: str,
    zk_hosts: str,
    zk_chroot: str,
    samba: LdapEndpoint,
    samba_ou: str,
    ad: AdDirectory,
) -> None:
    tag = uuid.uuid4().hex[:4]
    inside = ad.ou("in", samba_ou)
    erin = ad.add_user(inside, f"erin{tag}")
    fred = ad.add_user(inside, f"fred{tag}", domain=FEDERATED)  # signs in at the federation service
    with running_cluster(
        tmp_path,
        emulator_args=("--federated-domain", FEDERATED),
        cluster="signin",
        pg_dsn=pg_dsn,
        zk_hosts=zk_hosts + zk_chroot,
        ldap=samba,
        include_ous=[inside],
    ) as c:
        node = c.add("a")
        path = node.use_rules("[user]\n")
        warn = _checks(run_preflight(node.config))["sign-in"]
        assert warn["status"] == "WARN"
        assert warn["detail"].startswith(
            f"managed domain(s) {c.emulator.domain} (1 users): users get a random"
        )
        assert FEDERATED not in warn["detail"]  # read from Graph: its authenticationType is Federated
        path.write_text('[user.password]\ninitial = "random"\nforce_change = true\n')
        ok = _checks(run_preflight(node.config))["sign-in"]
        assert (ok["status"], ok["detail"]) == (
            "OK",
            "random initial password, forceChangePasswordNextSignIn true",
        )
        node.start("--standalone")
        got = wait_for(lambda: _user(c, erin.guid), 90, "erin in the target")
        assert _password_profile(c, got["id"]) == {"password": None, "forceChangePasswordNextSignIn": True}
        got_fred = wait_for(lambda: _user(c, fred.guid), 90, "fred in the target")
        assert got_fred["userPrincipalName"] == fred.upn
