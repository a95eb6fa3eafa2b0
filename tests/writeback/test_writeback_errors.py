"""What AD refuses, on real Samba: each refusal is quarantined with a reason naming it, and
everything else flows (the Graph export, the other groups)."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

from idsync.cli import main
from tests.cluster.cluster import running_cluster
from tests.cluster.directory import AdDirectory
from tests.cluster.instance import wait_for
from tests.harness.ldap import LdapEndpoint
from tests.writeback.helpers import ad_groups, cloud_group, graph, user_id, writeback_config


def quarantined(pg_dsn: str, schema: str) -> dict[str, str]:
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(f"SELECT key, reason FROM {schema}.quarantine WHERE phase = 'export'").fetchall()
    return {r[0]: r[1] for r in rows}


def test_name_collision_is_quarantined_and_the_other_group_flows(
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
    cloud_ou = ad.ou("cloud", samba_ou)
    ann = ad.add_user(inside, f"ann{tag}")
    with running_cluster(
        tmp_path,
        cluster="wberr",
        pg_dsn=pg_dsn,
        zk_hosts=zk_hosts + zk_chroot,
        ldap=samba,
        include_ous=[inside],
        extra={"writeback": writeback_config(samba, cloud_ou, tmp_path / "secrets")},
    ) as c:
        node = c.add("a")
        node.start()
        c.wait_leader(60)
        wait_for(lambda: any(u.get("userPrincipalName") == ann.upn for u in c.state()["users"]), 60, "ann")
        assert main(["pause", "--reason", "collision test", *c.ctl_args()]) == 0
        taken = cloud_group(c, f"Taken {tag}", [user_id(c, ann.upn)])
        free = cloud_group(c, f"Free {tag}", [user_id(c, ann.upn)])
        # Someone else's group already holds the name Group_<id> (without the writeback mark).
        squatter = ad.add_group(cloud_ou, f"Group_{taken}")
        assert main(["resume", *c.ctl_args()]) == 0

        wait_for(lambda: f"Group_{free}" in ad_groups(samba, cloud_ou), 60, "the free group written back")
        key = f"ad:Group_{taken}"
        wait_for(lambda: key in quarantined(pg_dsn, c.schemas[0]), 60, "the collision quarantined")
        reason = quarantined(pg_dsn, c.schemas[0])[key]
        assert f"name collision: CN=Group_{taken},{cloud_ou} already exists" in reason
        # The squatter is left alone: not adopted, not changed, not deleted.
        have = ad_groups(samba, cloud_ou)
        assert have[squatter]["members"] == set() and f"Group_{taken}" not in have


def test_writer_without_rights_is_quarantined_and_the_graph_export_flows(
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
    cloud_ou = ad.ou("cloud", samba_ou)
    ann = ad.add_user(inside, f"ann{tag}")
    # An ordinary domain user as the writer: no right to create groups in the OU or to write users.
    weak = ad.add_user(samba_ou, f"wb{tag}", unicodePwd='"Wb-Passw0rd-123!"'.encode("utf-16-le"))
    wb = writeback_config(samba, cloud_ou, tmp_path / "secrets")
    (tmp_path / "secrets" / "writeback-password").write_text("Wb-Passw0rd-123!")
    wb["bind_dn"] = weak.dn
    with running_cluster(
        tmp_path,
        cluster="wbacl",
        pg_dsn=pg_dsn,
        zk_hosts=zk_hosts + zk_chroot,
        ldap=samba,
        include_ous=[inside],
        extra={"writeback": wb},
    ) as c:
        node = c.add("a")
        node.start()
        c.wait_leader(60)
        # The Graph export flows: ann is created in Entra ID.
        wait_for(lambda: any(u.get("userPrincipalName") == ann.upn for u in c.state()["users"]), 60, "ann")
        gid = cloud_group(c, f"Denied {tag}", [user_id(c, ann.upn)])
        for key in (f"ad:Group_{gid}", f"ad:guid:{ann.guid}"):
            wait_for(lambda k=key: k in quarantined(pg_dsn, c.schemas[0]), 60, f"{key} quarantined")
        q = quarantined(pg_dsn, c.schemas[0])
        assert q[f"ad:Group_{gid}"].endswith(
            f"insufficientAccessRights: {weak.dn} may not create groups in {cloud_ou}"
            " (delegate 'Create/Delete Group objects' on the OU to the writeback account)"
        )
        assert "insufficientAccessRights" in q[f"ad:guid:{ann.guid}"]
        assert ad_groups(samba, cloud_ou) == {}
        assert node.alive


def test_ad_deletes_wait_for_the_deletion_guard(
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
    cloud_ou = ad.ou("cloud", samba_ou)
    with running_cluster(
        tmp_path,
        cluster="wbguard",
        pg_dsn=pg_dsn,
        zk_hosts=zk_hosts + zk_chroot,
        ldap=samba,
        include_ous=[inside],
        deletion_threshold=2,
        extra={"writeback": writeback_config(samba, cloud_ou, tmp_path / "secrets")},
    ) as c:
        node = c.add("a")
        node.start()
        c.wait_leader(60)
        gids = [cloud_group(c, f"Doomed {tag} {i}") for i in range(3)]
        wait_for(lambda: len(ad_groups(samba, cloud_ou)) == 3, 60, "three groups written back")
        # The three cloud deletes reach the node together (while paused), as a mass delete does.
        assert main(["pause", "--reason", "guard test", *c.ctl_args()]) == 0
        for g in gids:
            graph(c, "DELETE", f"/v1.0/groups/{g}")

        def summary() -> str:
            cmd = [sys.executable, "-m", "idsync", "--config", str(node.config), "pending", "--summary"]
            return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout

        # Three AD deletes are over the threshold of 2: held, AD untouched.
        wait_for(lambda: "approve-deletes" in summary(), 60, "the guard holding the AD deletes")
        assert main(["resume", *c.ctl_args()]) == 0
        wait_for(lambda: "deletion guard holds exports" in node.last_sentence(), 30, "the held cycle")
        assert len(ad_groups(samba, cloud_ou)) == 3
        m = re.search(r"idsync approve-deletes ([0-9a-f]+)", summary())
        assert m is not None
        cmd = [sys.executable, "-m", "idsync", "--config", str(node.config), "approve-deletes", m.group(1)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr + done.stdout
        wait_for(lambda: ad_groups(samba, cloud_ou) == {}, 60, "the approved AD deletes")
