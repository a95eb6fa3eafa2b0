"""Object life cycle on real services (Samba AD -> `idsync run` -> the strict Graph emulator).

A user that leaves scope (deprovision "delete") and comes back, or is deleted and restored in AD
(tombstone reanimation, same objectGUID), gets its cloud object back from the recycle bin — same
id, its group memberships (the cloud-only one too) as Graph restores them — under both answers
to what Microsoft does not document: does the deleted user keep its onPremisesImmutableId taken
(`--deleted-immutable-id free|reserved`)? A restore that conflicts is quarantined with its
reason while everything else syncs. A desired user whose UPN an Entra Connect object holds is
never POSTed, and `idsync pending` says why.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap3
import orjson
import pytest

from tests.cluster.checks import immutable_id
from tests.cluster.cluster import LocalCluster, running_cluster
from tests.cluster.directory import AdDirectory, User
from tests.cluster.emulator import DOMAIN
from tests.cluster.instance import Instance, wait_for
from tests.harness.ldap import LdapEndpoint


def _metrics(node: Instance) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.admin_port}/metrics", timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in lines if ln.startswith("idsync_")}


def _idsync(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "idsync", "--config", str(config), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _live(c: LocalCluster, guid: str) -> list[dict[str, Any]]:
    iid = immutable_id(guid)
    return [u for u in c.state()["users"] if u.get("onPremisesImmutableId") == iid]


def _deleted(c: LocalCluster, guid: str) -> list[dict[str, Any]]:
    iid = immutable_id(guid)
    return [u for u in c.state()["deletedItems"] if u.get("onPremisesImmutableId") == iid]


def _group(c: LocalCluster, gid: str) -> dict[str, Any]:
    return next((g for g in c.state()["groups"] if g["id"] == gid), {})


def _cloud_group(c: LocalCluster, name: str, member: str) -> str:
    """A security group made in the cloud (no anchor: idsync never touches it), with `member`."""
    body = {"displayName": name, "mailNickname": name, "mailEnabled": False, "securityEnabled": True}
    gid = str(c.emulator.post("/v1.0/groups", body)["id"])
    ref = {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{member}"}

    def added() -> bool:
        try:  # Graph's replication lag: the new group may not be visible yet
            c.emulator.post(f"/v1.0/groups/{gid}/members/$ref", ref)
        except OSError:
            return False
        return True

    wait_for(added, 30, "the cloud-only membership")
    return gid


SHOW_DELETED = ("1.2.840.113556.1.4.417", True, None)  # LDAP_SERVER_SHOW_DELETED_OID


def _reanimate(ad: AdDirectory, user: User, **attrs: str) -> None:
    """Restore a deleted AD user from its tombstone (same objectGUID), as an administrator does
    without the AD recycle bin: the tombstone kept few attributes, so they are written back."""
    esc = "".join(f"\\{b:02x}" for b in uuid.UUID(user.guid).bytes_le)
    c = ad.conn
    c.search(
        f"CN=Deleted Objects,{ad.ep.base_dn}", f"(objectGUID={esc})", ldap3.SUBTREE, controls=[SHOW_DELETED]
    )
    tomb = c.response[0]["dn"]
    change = {
        "isDeleted": [(ldap3.MODIFY_DELETE, [])],
        "distinguishedName": [(ldap3.MODIFY_REPLACE, [user.dn])],
    }
    c.modify(tomb, change, controls=[SHOW_DELETED])
    ad.replace(user.dn, userPrincipalName=user.upn, **attrs)


@pytest.fixture
def ous(ad: AdDirectory, samba_ou: str) -> tuple[str, str]:
    """(in scope, out of scope), both under the test's OU."""
    return ad.ou("in", samba_ou), ad.ou("out", samba_ou)


@contextlib.contextmanager
def _cluster(
    tmp_path: Path, pg_dsn: str, zk: str, samba: LdapEndpoint, inside: str, setting: str
) -> Iterator[LocalCluster]:
    with running_cluster(
        tmp_path,
        emulator_args=("--deleted-immutable-id", setting),
        cluster="life",
        pg_dsn=pg_dsn,
        zk_hosts=zk,
        ldap=samba,
        include_ous=[inside],
    ) as c:
        yield c


def _start(c: LocalCluster) -> Instance:
    return c.add("a").start("--standalone")


@pytest.mark.parametrize("setting", ["free", "reserved"])
def test_a_user_that_leaves_scope_and_returns_gets_its_object_back(
    tmp_path: Path,
    pg_dsn: str,
    zk_hosts: str,
    zk_chroot: str,
    samba: LdapEndpoint,
    ad: AdDirectory,
    ous: tuple[str, str],
    setting: str,
) -> None:
    tag = uuid.uuid4().hex[:6]
    back = ad.add_user(ous[0], f"rb{tag}", department="Sales")
    stay = ad.add_user(ous[0], f"st{tag}", department="Sales")
    ad_group = ad.add_group(ous[0], f"grp{tag}", [back.dn, stay.dn])
    with _cluster(tmp_path, pg_dsn, zk_hosts + zk_chroot, samba, ous[0], setting) as c:
        node = _start(c)
        [first] = wait_for(lambda: _live(c, back.guid), 90, "the user in the target")
        uid = first["id"]
        gguid = ad.guid(ad_group)
        ggid: str = wait_for(
            lambda: next(
                (g["id"] for g in c.state()["groups"] if gguid in str(g) and uid in g["members"]), ""
            ),
            60,
            "the AD group with its member",
        )
        cloud = _cloud_group(c, f"cloud{tag}", uid)

        # 1. Out of scope: deprovision "delete" soft-deletes it; Graph takes it out of its groups.
        out_dn = ad.move(back.dn, back.dn.split(",", 1)[0], ous[1])
        wait_for(lambda: not _live(c, back.guid) and _deleted(c, back.guid), 60, "the user deleted")
        assert uid not in _group(c, cloud)["members"] and uid not in _group(c, ggid)["members"]
        ad.replace(out_dn, department="Finance")  # changed while it was away
        mark = len(c.emulator.writes())

        # 2. Back in scope: restored, not created — same object, its groups back, then updated.
        ad.move(out_dn, back.dn.split(",", 1)[0], ous[0])
        got = wait_for(
            lambda: (u := _live(c, back.guid)) and u[0].get("department") == "Finance" and u,
            90,
            "the user restored and updated",
        )
        assert [u["id"] for u in got] == [uid]
        assert _deleted(c, back.guid) == []
        assert uid in _group(c, cloud)["members"]  # the cloud-only membership, as Graph restores it
        assert uid in _group(c, ggid)["members"]
        writes = c.emulator.writes()[mark:]
        paths = [(w["method"], w["path"], w["status"]) for w in writes]
        assert ("POST", f"/directory/deletedItems/{uid}/restore", 200) in paths
        assert not [p for p in paths if p[:2] == ("POST", "/users")]  # never created again
        # (a member add racing Graph's own restore of the membership answers "already exist": done)
        assert [p for p in paths if p[2] >= 400 and not p[1].endswith("/members/$ref")] == []
        assert _live(c, stay.guid)[0]["department"] == "Sales"
        assert _metrics(node)["idsync_users_restored_total"] == 1
        assert node.alive


def test_a_restore_that_conflicts_is_quarantined_and_the_rest_syncs(
    tmp_path: Path,
    pg_dsn: str,
    zk_hosts: str,
    zk_chroot: str,
    samba: LdapEndpoint,
    ad: AdDirectory,
    ous: tuple[str, str],
) -> None:
    tag = uuid.uuid4().hex[:6]
    back = ad.add_user(ous[0], f"rc{tag}")
    with _cluster(tmp_path, pg_dsn, zk_hosts + zk_chroot, samba, ous[0], "free") as c:
        node = _start(c)
        [first] = wait_for(lambda: _live(c, back.guid), 90, "the user in the target")
        out_dn = ad.move(back.dn, back.dn.split(",", 1)[0], ous[1])
        wait_for(lambda: _deleted(c, back.guid), 60, "the user deleted")
        # Meanwhile someone makes a cloud-only user with its UPN.
        taker = {
            "accountEnabled": True,
            "displayName": "Someone else",
            "mailNickname": f"rc{tag}x",
            "userPrincipalName": back.upn,
            "passwordProfile": {"password": "Cloud-only-Passw0rd!"},
        }
        taker_id = c.emulator.post("/v1.0/users", taker)["id"]
        ad.move(out_dn, back.dn.split(",", 1)[0], ous[0])
        later = ad.add_user(ous[0], f"nw{tag}")  # everything else still syncs

        def quarantined() -> list[dict[str, Any]]:
            out = _idsync(node.config, "quarantine", "list", "--json")
            return [e for e in orjson.loads(out.stdout or "[]") if e["key"] == back.guid]

        [entry] = wait_for(quarantined, 90, "the restore conflict quarantined")
        assert f"restoring the deleted user {first['id']}" in entry["reason"]
        assert "userPrincipalName" in entry["reason"] and "nothing was created beside it" in entry["reason"]
        wait_for(lambda: _live(c, later.guid), 60, "another user still synced")
        assert [u["id"] for u in _deleted(c, back.guid)] == [first["id"]]  # nothing lost
        assert _live(c, back.guid) == []
        live_upns = [u for u in c.state()["users"] if u["userPrincipalName"] == back.upn]
        assert [u["id"] for u in live_upns] == [taker_id]
        m = _metrics(node)
        assert m["idsync_users_restored_total"] == 0
        # a refused restore is quarantined, not the privileged-user security event
        assert [v for k, v in m.items() if k.startswith("idsync_privileged_refusals_total")] == [0, 0]
        assert node.alive


def test_a_user_whose_upn_entra_connect_holds_is_never_posted(
    tmp_path: Path,
    pg_dsn: str,
    zk_hosts: str,
    zk_chroot: str,
    samba: LdapEndpoint,
    ad: AdDirectory,
    ous: tuple[str, str],
) -> None:
    tag = uuid.uuid4().hex[:6]
    carl = ad.add_user(ous[0], f"ca{tag}")
    dora = ad.add_user(ous[0], f"do{tag}")
    with _cluster(tmp_path, pg_dsn, zk_hosts + zk_chroot, samba, ous[0], "free") as c:
        # Entra Connect synchronizes a user with carl's UPN, under another anchor
        # (e.g. its ms-DS-ConsistencyGuid from another forest): no hard match, no soft match.
        body = {
            "accountEnabled": True,
            "displayName": "Carl (Entra Connect)",
            "mailNickname": f"ca{tag}",
            "userPrincipalName": f"ca{tag}@{DOMAIN}",
            "onPremisesImmutableId": "connect-anchor-" + tag,
            "passwordProfile": {"password": "Entra-Connect-Passw0rd!"},
        }
        ec_id = c.emulator.post("/v1.0/users", body)["id"]
        c.emulator.post("/_emulator/synced", {"ids": [ec_id], "synced": True})
        mark = len(c.emulator.writes())  # what idsync writes from here on
        node = _start(c)
        wait_for(lambda: _live(c, dora.guid), 90, "dora in the target")

        def pending_note() -> str:
            out = _idsync(node.config, "pending")
            return out.stdout if "left to Entra Connect" in out.stdout else ""

        text = wait_for(pending_note, 60, "idsync pending to name carl", step=0.5)
        assert f"Entra Connect synchronizes {carl.upn} ({ec_id}, onPremisesSyncEnabled)" in text
        assert "userPrincipalName" in text
        writes = [(w["method"], w["path"], w["status"]) for w in c.emulator.writes()[mark:]]
        user_posts = [w for w in writes if w[:2] == ("POST", "/users")]
        assert user_posts == [("POST", "/users", 201)]  # dora's; none for carl, so no conflict
        assert [w for w in writes if w[2] >= 400] == []
        assert [u["id"] for u in c.state()["users"] if u["userPrincipalName"] == carl.upn] == [ec_id]


def test_a_user_restored_in_ad_gets_its_cloud_object_back(
    tmp_path: Path,
    pg_dsn: str,
    zk_hosts: str,
    zk_chroot: str,
    samba: LdapEndpoint,
    ad: AdDirectory,
    ous: tuple[str, str],
) -> None:
    tag = uuid.uuid4().hex[:6]
    back = ad.add_user(ous[0], f"ar{tag}", department="Sales")
    with _cluster(tmp_path, pg_dsn, zk_hosts + zk_chroot, samba, ous[0], "free") as c:
        node = _start(c)
        [first] = wait_for(lambda: _live(c, back.guid), 90, "the user in the target")
        ad.delete(back.dn)
        wait_for(lambda: not _live(c, back.guid) and _deleted(c, back.guid), 60, "the user deleted")
        mark = len(c.emulator.writes())
        _reanimate(ad, back, givenName="Test", sn=back.sam, displayName=f"Test {back.sam}", department="Ops")
        got = wait_for(
            lambda: (u := _live(c, back.guid)) and u[0].get("department") == "Ops" and u,
            90,
            "the user restored in the cloud too",
        )
        assert [u["id"] for u in got] == [first["id"]]  # the same object (same objectGUID, same anchor)
        paths = [(w["method"], w["path"], w["status"]) for w in c.emulator.writes()[mark:]]
        assert ("POST", f"/directory/deletedItems/{first['id']}/restore", 200) in paths
        assert not [p for p in paths if p[:2] == ("POST", "/users")]
        assert node.alive
