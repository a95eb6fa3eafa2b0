"""Member adds 20 per write on the whole path: Samba AD -> `idsync run` -> the Graph emulator
(with Graph's replication lag on), judged by the emulator's state and request log."""

from __future__ import annotations

import math
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.checks import immutable_id
from tests.cluster.cluster import LocalCluster, running_cluster
from tests.cluster.directory import AdDirectory
from tests.cluster.instance import wait_for
from tests.harness.ldap import LdapEndpoint

GROUPS = 3
MEMBERS = 50


@pytest.fixture
def world(
    tmp_path: Path, pg_dsn: str, zk_hosts: str, zk_chroot: str, samba: LdapEndpoint, samba_ou: str
) -> Iterator[LocalCluster]:
    with running_cluster(
        tmp_path,
        cluster="binds",
        pg_dsn=pg_dsn,
        zk_hosts=zk_hosts + zk_chroot,
        ldap=samba,
        include_ous=[samba_ou],
        deletion_threshold=100,
    ) as c:
        yield c


def test_groups_of_fifty_land_in_at_most_three_member_writes_each(
    world: LocalCluster, ad: AdDirectory, samba_ou: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    users = [ad.add_user(samba_ou, f"b{tag}{k}") for k in range(GROUPS * MEMBERS)]
    want: dict[str, set[str]] = {}
    for n in range(GROUPS):
        mine = users[n * MEMBERS : (n + 1) * MEMBERS]
        dn = ad.add_group(samba_ou, f"g{tag}{n}", [u.dn for u in mine])
        want[ad.guid(dn)] = {immutable_id(u.guid) for u in mine}
    world.add("a").start("--standalone")

    def landed() -> dict[str, set[str]]:
        st = world.state()
        iid = {u["id"]: u.get("onPremisesImmutableId") for u in st["users"]}
        out = {}
        for guid in want:
            g = next((g for g in st["groups"] if guid in str(g)), None)
            out[guid] = {iid.get(m, "?") for m in (g or {}).get("members", [])}
        return out

    wait_for(lambda: landed() == want, 180, f"{GROUPS} groups with their {MEMBERS} members each")

    st = world.state()
    ids = {guid: next(g["id"] for g in st["groups"] if guid in str(g)) for guid in want}
    writes = world.emulator.writes()
    member_writes: Counter[str] = Counter()
    for w in writes:
        if w["status"] // 100 != 2 and w["status"] != 400 and w["status"] != 404:
            continue
        m = re.fullmatch(r"/groups/([0-9a-f-]{36})(?:/members/\$ref)?", w["path"])
        if m and w["method"] in ("PATCH", "POST"):
            member_writes[m.group(1)] += 1
    assert not [w for w in writes if w["path"].endswith("/members/$ref")], "no member add one by one"
    for guid, gid in ids.items():
        # every PATCH of the group (its member binds; a fresh sync has no attribute update)
        seen = [(w["method"], w["status"]) for w in writes if gid in w["path"]]
        assert 1 <= member_writes[gid] <= math.ceil(MEMBERS / 20), (guid, seen)
