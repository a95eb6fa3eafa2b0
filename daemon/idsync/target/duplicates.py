"""Duplicate groups in the tenant: two groups carrying one source anchor.

Users cannot be duplicated (Graph keeps `onPremisesImmutableId` unique), but the group anchor is
a directory extension attribute Graph does not keep unique, and create-idempotence rests on a
`$filter` lookup that replication lag can miss (right after a switchover, or after a create whose
outcome was unknown). The target import sees both; the leader then keeps the oldest by
`createdDateTime` (ties: the smaller id) and deletes the others that carry idsync's anchor,
before its first export batch, under its fence.

Graph: `createdDateTime` is a read-only group property
(api-reference/v1.0/resources/group.md, learn.microsoft.com/graph/api/resources/group);
DELETE /groups/{id} answers 204, and a security group is deleted permanently at once
(api-reference/v1.0/api/group-delete.md, learn.microsoft.com/graph/api/group-delete), so a fresh
quorum confirmation precedes each delete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import structlog

from idsync import metrics
from idsync.fencing import Fence, Fenced
from idsync.store import target_space
from idsync.store.db import Store
from idsync.target.client import GraphClient, user_agent
from idsync.target.schema import SYNC_FLAG, TargetSchema, anchor_filter, owned_anchor

log = structlog.get_logger(__name__)


@dataclass
class DuplicateReport:
    found: int = 0  # anchors with more than one group
    removed: list[str] = field(default_factory=list)  # ids deleted
    kept: dict[str, str] = field(default_factory=dict)  # anchor -> id kept
    errors: list[str] = field(default_factory=list)

    def sentence(self) -> str:
        if not self.found:
            return ""
        s = f"duplicate groups: {self.found} anchors, removed {len(self.removed)}"
        if self.errors:
            s += f", {len(self.errors)} failed ({self.errors[0]})"
        return s


def oldest_first(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The order of precedence: the oldest by createdDateTime first (ISO 8601 UTC sorts as text)."""
    return sorted(groups, key=lambda g: (str(g.get("createdDateTime") or "9999"), str(g.get("id"))))


async def resolve(client: GraphClient, store: Store, fence: Fence, schema: TargetSchema) -> DuplicateReport:
    """Delete the younger duplicates of every group anchor the target space holds twice."""
    report = DuplicateReport()
    with store.transaction() as conn:
        dups = target_space.duplicate_anchors(conn, "group")
    if not dups:
        return report
    report.found = len(dups)
    attr = schema.anchor_attribute("group")
    agent = user_agent(fence.node, fence.epoch)
    for anchor in sorted(dups):
        filt = quote(anchor_filter(attr, [anchor]), safe="")
        try:
            resp = await client.get(
                f"/groups?$filter={filt}&$select=id,createdDateTime,{attr},{SYNC_FLAG}",
                what="duplicate groups",
            )
        except Exception as exc:  # Graph unreachable: the next cycle looks again
            report.errors.append(f"{anchor}: lookup failed ({exc})")
            continue
        if resp.status != 200:
            report.errors.append(f"{anchor}: lookup answered {resp.status}")
            continue
        found = [g for g in (resp.json() or {}).get("value", []) if isinstance(g, dict)]
        ours = [g for g in found if owned_anchor(g, attr) == anchor]
        if len(ours) < 2:
            continue  # already resolved (or the lookup's replica is behind: next cycle looks again)
        keep, *extra = oldest_first(ours)
        report.kept[anchor] = str(keep["id"])
        for g in extra:
            gid = str(g["id"])
            try:
                fence.confirm_now()  # an irreversible delete needs a fresh quorum-confirmed lease
            except Fenced as exc:
                report.errors.append(f"{gid}: {exc}")
                return report
            try:
                resp = await client.send("DELETE", f"/groups/{gid}", agent=agent, fence=fence)
            except Fenced as exc:
                report.errors.append(f"{gid}: {exc}")
                return report
            except Exception as exc:  # outcome unknown: the next import shows it
                report.errors.append(f"{gid}: delete failed ({exc})")
                continue
            if resp.status in (204, 404):
                report.removed.append(gid)
                metrics.DUPLICATES_REMOVED.labels("group").inc()
                with store.transaction() as conn:
                    target_space.mark_deleted(conn, [gid])
                log.warning("target.duplicate_removed", anchor=anchor, removed=gid, kept=keep["id"])
            else:
                report.errors.append(f"{gid}: delete answered {resp.status}")
    return report
