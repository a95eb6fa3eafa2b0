"""Writeback in the chaos run: cloud security groups created, renamed, re-membered and deleted in
the emulator while faults strike; at the end AD's groups OU must equal the cloud (right members,
no duplicate group) and no written-back group may have come back up to Graph."""

from __future__ import annotations

import random
import uuid
from typing import Any

from tests.cluster.cluster import LocalCluster
from tests.harness.ldap import LdapEndpoint
from tests.writeback.helpers import add_member, cloud_group, dns_by_guid, graph, remove_member


class CloudGroups:
    """The cloud side's churn, seeded like the AD change generator."""

    def __init__(self, cluster: LocalCluster, seed: int) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed + 19)
        self.ids: list[str] = []
        self.failed: list[str] = []

    def _synced_users(self) -> list[str]:
        return [u["id"] for u in self.cluster.state()["users"] if u.get("onPremisesImmutableId")]

    def create(self, n: int) -> None:
        users = self._synced_users()
        for _ in range(n):
            members = self.rng.sample(users, min(len(users), self.rng.randint(1, 4)))
            try:
                self.ids.append(cloud_group(self.cluster, f"CloudWB {uuid.uuid4().hex[:6]}", members))
            except AssertionError as exc:
                self.failed.append(f"create: {exc}")

    def churn(self) -> None:
        """One rename, one membership change, one delete, one new group."""
        if len(self.ids) < 3:
            return self.create(1)
        users = self._synced_users()
        renamed, changed, deleted = self.rng.sample(self.ids, 3)
        try:
            graph(
                self.cluster,
                "PATCH",
                f"/v1.0/groups/{renamed}",
                {"displayName": f"CloudWB {uuid.uuid4().hex[:6]}"},
            )
            group = next(g for g in self.cluster.state()["groups"] if g["id"] == changed)
            for m in group.get("members", [])[:1]:
                remove_member(self.cluster, changed, m)
            outside = [u for u in users if u not in group.get("members", [])]
            if outside:
                add_member(self.cluster, changed, self.rng.choice(outside))
            graph(self.cluster, "DELETE", f"/v1.0/groups/{deleted}")
            self.ids.remove(deleted)
        except (AssertionError, StopIteration) as exc:
            self.failed.append(f"churn: {exc}")
        self.create(1)


def written_back_guids(ep: LdapEndpoint, cloud_ou: str) -> set[str]:
    """The anchors of the groups in the writeback OU: not source groups of the Graph export."""
    return set(dns_by_guid(ep, cloud_ou))


def writeback_config_for(ep: LdapEndpoint, cloud_ou: str, secrets: Any) -> dict[str, Any]:
    from tests.writeback.helpers import writeback_config

    return writeback_config(ep, cloud_ou, secrets)
