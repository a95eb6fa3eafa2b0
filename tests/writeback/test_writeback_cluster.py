"""Writeback to AD on real services: Samba AD <- `idsync run` <- the Graph emulator.

A cloud security group appears in the configured OU as a universal security group with its synced
members, follows renames and membership changes, goes when the cloud group goes, and never comes
back up to Graph as a second group; synced users get mS-DS-ConsistencyGuid = objectGUID once.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import psycopg

from tests.cluster.checks import immutable_id
from tests.cluster.cluster import running_cluster
from tests.cluster.directory import AdDirectory
from tests.cluster.instance import wait_for
from tests.harness.ldap import LdapEndpoint
from tests.writeback.helpers import (
    ad_groups,
    add_member,
    cloud_group,
    consistency_guid,
    graph,
    remove_member,
    store_dump,
    user_id,
    writeback_config,
)

UNIVERSAL_SECURITY = -2147483640


def test_cloud_group_lifecycle_and_consistency_guid(
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
    # The groups OU is inside the imported scope on purpose: written-back groups must still not
    # come back up to Graph (the import leaves them out).
    cloud_ou = ad.ou("cloud", inside)
    ann = ad.add_user(inside, f"ann{tag}")
    bob = ad.add_user(inside, f"bob{tag}")
    with running_cluster(
        tmp_path,
        cluster="wb",
        pg_dsn=pg_dsn,
        zk_hosts=zk_hosts + zk_chroot,
        ldap=samba,
        include_ous=[inside],
        extra={"writeback": writeback_config(samba, cloud_ou, tmp_path / "secrets")},
    ) as c:
        node = c.add("a")
        node.start()
        c.wait_leader(60)
        wait_for(
            lambda: len([u for u in c.state()["users"] if tag in u.get("userPrincipalName", "")]) == 2,
            90,
            "users",
        )
        ann_id, bob_id = user_id(c, ann.upn), user_id(c, bob.upn)

        # ms-DS-ConsistencyGuid: set to objectGUID on both synced users; the immutable id is unchanged.
        for u in (ann, bob):
            wait_for(
                lambda u=u: consistency_guid(samba, u.dn) == uuid.UUID(u.guid).bytes_le,
                60,
                f"{u.sam} stamped",
            )

        # A cloud group with ann and a cloud-only member (an outsider): ann written, the outsider skipped.
        outsider = graph(
            c,
            "POST",
            "/v1.0/users",
            {
                "accountEnabled": True,
                "displayName": "Cloud Only",
                "mailNickname": f"cloud{tag}",
                "userPrincipalName": f"cloud{tag}@{ann.upn.split('@')[1]}",
                "passwordProfile": {"password": "Cloud-Only-Passw0rd!"},
            },
        )["id"]
        # The stamps confirmed by the source import: the queue's AD rows are gone.
        wait_for(lambda: node.last_sentence().endswith("writeback 0 pending"), 60, "the stamps confirmed")
        seen = len(node.sentences())
        gid = cloud_group(c, f"Sales {tag}", [ann_id, outsider])
        key = f"Group_{gid}"

        def group() -> dict[str, object] | None:
            return ad_groups(samba, cloud_ou).get(key)

        try:
            wait_for(lambda: (g := group()) and g["members"] == {ann.dn.lower()}, 60, "group in AD with ann")
        except AssertionError:
            print(store_dump(pg_dsn, c.schemas[0]))
            raise
        # Written in the cycle whose import first shows the group: planned after the target import,
        # exported at the end of the same cycle.
        first = next(x for x in node.sentences()[seen:] if "writeback 1 pending" in x)
        assert "AD: wrote 1 (1 ok, 0 rejected)" in first, first
        g = group()
        assert g is not None
        assert g["displayName"] == f"Sales {tag}"
        # The cloud-only member is left out, with the reason shown by `idsync pending`.
        text = subprocess.run(
            [sys.executable, "-m", "idsync", "--config", str(node.config), "pending"],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        assert "partly written back to AD" in text
        assert f"cloud{tag}@" in text and "not a synced on-premises user" in text
        assert g["groupType"] == UNIVERSAL_SECURITY
        assert g["dn"].lower() == f"cn={key},{cloud_ou}".lower()

        # Rename and membership changes follow.
        graph(c, "PATCH", f"/v1.0/groups/{gid}", {"displayName": f"Sales EMEA {tag}"})
        add_member(c, gid, bob_id)
        remove_member(c, gid, ann_id)
        wait_for(
            lambda: (
                (g := group())
                and g["displayName"] == f"Sales EMEA {tag}"
                and g["members"] == {bob.dn.lower()}
            ),
            60,
            "rename and membership in AD",
        )

        # No loop: Graph holds exactly one group of that name (the cloud one), however many cycles pass.
        for _ in range(3):
            node_cycles = len(node.sentences())
            wait_for(lambda n=node_cycles: len(node.sentences()) > n + 1, 30, "more cycles")
        named = [x for x in c.state()["groups"] if str(x.get("displayName", "")).endswith(tag)]
        assert [x["id"] for x in named] == [gid]

        # Deleted in the cloud: removed from AD.
        graph(c, "DELETE", f"/v1.0/groups/{gid}")
        wait_for(lambda: group() is None, 60, "group removed from AD")

        # Exactly once per user: one successful ConsistencyGuid write each, whatever cycles ran.
        with psycopg.connect(pg_dsn) as conn:
            schema = c.schemas[0]
            rows = conn.execute(
                # Every attempt counted, not only the ok ones: the import confirmed each stamp, so
                # nothing was sent again (a repeat would be journaled as adopted).
                f"SELECT anchor, count(*) FROM {schema}.export_journal"
                " WHERE anchor LIKE 'ad:guid:%%' GROUP BY anchor ORDER BY anchor"
            ).fetchall()
        assert sorted(rows) == sorted([(f"ad:guid:{ann.guid}", 1), (f"ad:guid:{bob.guid}", 1)])
        # The anchor switch keeps the immutable id: same bytes, same onPremisesImmutableId.
        # No user was re-created by the stamp: one Graph user each, with the id it had before.
        mine = [u for u in c.state()["users"] if u.get("userPrincipalName") in (ann.upn, bob.upn)]
        assert sorted(u["id"] for u in mine) == sorted([ann_id, bob_id])
        users = {u["userPrincipalName"]: u for u in mine}
        assert users[ann.upn]["onPremisesImmutableId"] == immutable_id(ann.guid)
        assert node.alive
        # What the leader wrote to AD is counted for Prometheus.
        with urllib.request.urlopen(f"http://127.0.0.1:{node.admin_port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert 'idsync_writeback_writes_total{op="create group",result="ok"} 1.0' in text
        assert 'idsync_writeback_writes_total{op="update user",result="ok"} 2.0' in text
