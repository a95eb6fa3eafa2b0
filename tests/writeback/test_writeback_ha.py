"""Writeback under HA, with real `idsync run` processes: a staging node shows the AD writes it
would make and makes none; a leader killed in the middle of a writeback burst leaves AD equal to
the cloud, with no duplicate group, once the new leader has run."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest

from idsync.cli import main
from tests.cluster.cluster import LocalCluster, running_cluster
from tests.cluster.directory import AdDirectory
from tests.cluster.instance import wait_for
from tests.harness.ldap import LdapEndpoint
from tests.writeback.helpers import (
    ad_groups,
    cloud_group,
    store_dump,
    user_id,
    writeback_config,
    writeback_differences,
)

SESSION = 2.0


@pytest.fixture
def world(
    tmp_path: Path,
    pg_dsn: str,
    zk_hosts: str,
    zk_chroot: str,
    samba: LdapEndpoint,
    samba_ou: str,
    ad: AdDirectory,
) -> Iterator[tuple[LocalCluster, str, str]]:
    """A cluster with writeback on: (cluster, users OU, groups OU)."""
    inside = ad.ou("in", samba_ou)
    cloud_ou = ad.ou("cloud", samba_ou)
    with running_cluster(
        tmp_path,
        cluster="wbha",
        pg_dsn=pg_dsn,
        zk_hosts=zk_hosts + zk_chroot,
        ldap=samba,
        include_ous=[inside],
        session_timeout=SESSION,
        extra={"writeback": writeback_config(samba, cloud_ou, tmp_path / "secrets")},
    ) as c:
        yield c, inside, cloud_ou


def pending_json(node_config: Path) -> list[dict[str, object]]:
    cmd = [sys.executable, "-m", "idsync", "--config", str(node_config), "pending", "--format", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return list(orjson.loads(done.stdout))


def ad_journal(pg_dsn: str, schema: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            f"SELECT anchor, kind, outcome FROM {schema}.export_journal WHERE target = 'ad' ORDER BY id"
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def test_staging_node_shows_the_ad_writes_and_makes_none(
    world: tuple[LocalCluster, str, str], samba: LdapEndpoint, ad: AdDirectory, pg_dsn: str
) -> None:
    c, inside, cloud_ou = world
    tag = uuid.uuid4().hex[:4]
    ann = ad.add_user(inside, f"ann{tag}")
    c.start("a")
    assert c.wait_leader(60) == "a"
    c.start("b")
    wait_for(lambda: c.nodes["b"].sentences(), 60, "b's first cycle")
    wait_for(lambda: any(u.get("userPrincipalName") == ann.upn for u in c.state()["users"]), 60, "ann")
    ann_id = user_id(c, ann.upn)
    # Hold the leader's exports (Graph and AD alike): what is computed stays pending everywhere.
    assert main(["pause", "--reason", "writeback staging test", *c.ctl_args()]) == 0
    gids = [cloud_group(c, f"Staged {tag} {i}", [ann_id]) for i in range(3)]

    def staged(node: str) -> set[str]:
        items = pending_json(c.nodes[node].config)
        return {str(i["anchor"]) for i in items if i["target"] == "ad" and i["kind"] == "create"}

    want = {f"ad:Group_{g}" for g in gids}
    wait_for(lambda: staged("b") == want, 60, "the staging node's pending AD creates")
    text = subprocess.run(
        [sys.executable, "-m", "idsync", "--config", str(c.nodes["b"].config), "pending"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert f"create        group to AD: Staged {tag} 0" in text
    assert ad_groups(samba, cloud_ou) == {}
    # The chaos invariant sees the difference while paused, and none once AD has caught up.
    missing = writeback_differences(samba, cloud_ou, inside, c.state())
    assert sorted(missing) == sorted(f"cloud group Staged {tag} {i} missing in AD" for i in range(3))

    assert main(["resume", *c.ctl_args()]) == 0
    wait_for(lambda: {f"Group_{g}" for g in gids} <= set(ad_groups(samba, cloud_ou)), 60, "groups in AD")
    # The staging node's queue drains by its own reads of AD; it never wrote.
    wait_for(lambda: staged("b") == set(), 60, "the staging node's AD queue confirmed")
    schemas = dict(zip(c.nodes, c.schemas, strict=True))
    assert ad_journal(pg_dsn, schemas["b"]) == []
    wait_for(lambda: writeback_differences(samba, cloud_ou, inside, c.state()) == [], 30, "no differences")
    assert {a for a, k, o in ad_journal(pg_dsn, schemas["a"]) if k == "create" and o == "ok"} == want


def test_leader_killed_in_a_writeback_burst_leaves_ad_equal_to_the_cloud(
    world: tuple[LocalCluster, str, str], samba: LdapEndpoint, ad: AdDirectory, pg_dsn: str
) -> None:
    c, inside, cloud_ou = world
    tag = uuid.uuid4().hex[:4]
    users = [ad.add_user(inside, f"u{tag}{i}") for i in range(3)]
    c.start("a")
    assert c.wait_leader(60) == "a"
    c.start("b")
    wait_for(
        lambda: sum(tag in str(u.get("userPrincipalName")) for u in c.state()["users"]) == 3, 90, "users"
    )
    ids = [user_id(c, u.upn) for u in users]
    assert main(["pause", "--reason", "burst", *c.ctl_args()]) == 0
    n = 40
    groups = {cloud_group(c, f"Burst {tag} {i}", [ids[i % 3], ids[(i + 1) % 3]]): i for i in range(n)}
    wait_for(lambda: len(pending_json(c.nodes["a"].config)) >= n, 60, "the burst computed on the leader")
    assert main(["resume", *c.ctl_args()]) == 0
    # Kill the leader as soon as its burst has begun, before it can finish.
    wait_for(lambda: len(ad_groups(samba, cloud_ou)) >= 1, 60, "the burst begun", step=0.02)
    c.nodes["a"].kill()
    written_by_a = len(ad_groups(samba, cloud_ou))
    assert c.wait_leader(SESSION * 10, other_than="a") == "b"

    def differences() -> list[str]:
        have = ad_groups(samba, cloud_ou)
        out = [k for k in have if "#dup:" in k or not k.startswith("Group_")]
        for gid, i in groups.items():
            g = have.get(f"Group_{gid}")
            want = {users[i % 3].dn.lower(), users[(i + 1) % 3].dn.lower()}
            if g is None or g["members"] != want or g["displayName"] != f"Burst {tag} {i}":
                out.append(f"Group_{gid}")
        return out + [k for k in have if k.removeprefix("Group_") not in groups]

    try:
        wait_for(lambda: differences() == [], 90, "AD equal to the cloud")
    except AssertionError:
        print("differences:", differences()[:5])
        print(store_dump(pg_dsn, c.schemas[1]))
        print("\n".join(c.nodes["b"].sentences()[-5:]))
        raise
    assert written_by_a < n, "the leader finished the burst before it was killed: no failover in the middle"
    # No loop: Graph still holds exactly the n cloud groups of this burst.
    burst = [g for g in c.state()["groups"] if str(g.get("displayName", "")).startswith(f"Burst {tag}")]
    assert sorted(g["id"] for g in burst) == sorted(groups)
