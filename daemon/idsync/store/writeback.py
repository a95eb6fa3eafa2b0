"""The store's side of writeback to AD: what the cloud and the source space say AD should hold,
and the `target = 'ad'` rows of the pending queue (migration 0009).

Writeback rows share `pending_export` with the Graph export (the deletion guard, quarantine,
`idsync pending` and the journal see them), under anchors of their own (`ad:Group_<cloud id>`,
`ad:guid:<source anchor>`) so that no Graph row's key can meet them. The Graph claim takes only
`target = 'graph'`; `claim` here takes only `target = 'ad'`, under the same epoch checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from idsync.model import Quarantined
from idsync.store import fence as fence_row
from idsync.store import pending, quarantine

GROUP_PREFIX = "ad:"  # + Group_<cloud id>
GUID_PREFIX = "ad:guid:"  # + the user's source anchor (its objectGUID)
NOTE_PHASE = "writeback"  # quarantine phase of members left out of a written-back group


@dataclass(frozen=True)
class CloudGroup:
    """A cloud-only security group in the target space, with its members as AD DNs."""

    id: str
    display_name: str
    description: str | None
    member_dns: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # "<name> (<id>): why" for each member that cannot be written


@dataclass(frozen=True)
class UnstampedUser:
    """A synced user whose source object has no mS-DS-ConsistencyGuid yet."""

    anchor: str
    dn: str


@dataclass(frozen=True)
class AdOp:
    """One writeback operation as the planner computes it."""

    object_type: str
    anchor: str
    kind: str
    payload: Mapping[str, Any] = field(default_factory=dict)


def cloud_groups(conn: psycopg.Connection) -> list[CloudGroup]:
    """Live security groups created in the cloud: not idsync's (no anchor, no link), not synced by
    Entra Connect, not mail-enabled (Cloud Sync writes back security groups only)."""
    rows = conn.execute(
        "SELECT t.id, coalesce(t.attrs->>'displayName', ''), t.attrs->>'description' FROM target_object t"
        " WHERE t.object_type = 'group' AND NOT t.deleted AND t.anchor IS NULL"
        "  AND coalesce(t.attrs->>'securityEnabled', 'false') = 'true'"
        "  AND coalesce(t.attrs->>'mailEnabled', 'false') = 'false'"
        "  AND coalesce(t.attrs->>'onPremisesSyncEnabled', 'false') <> 'true'"
        "  AND NOT EXISTS (SELECT 1 FROM sync_link l WHERE l.target_id = t.id)"
        " ORDER BY t.id"
    ).fetchall()
    if not rows:
        return []
    ids = [r[0] for r in rows]
    members: dict[str, list[str]] = {i: [] for i in ids}
    skipped: dict[str, list[str]] = {i: [] for i in ids}
    for gid, mid, dn, otype, name in conn.execute(
        "SELECT tm.group_id, tm.member_id, s.dn, s.object_type,"
        " coalesce(m.attrs->>'userPrincipalName', m.attrs->>'displayName', tm.member_id)"
        " FROM target_member tm"
        " LEFT JOIN sync_link l ON l.target_id = tm.member_id"
        " LEFT JOIN source_object s ON s.anchor = l.anchor AND NOT s.deleted"
        " LEFT JOIN target_object m ON m.id = tm.member_id"
        " WHERE tm.group_id = ANY(%s) ORDER BY tm.group_id, tm.member_id",
        (ids,),
    ):
        if dn is not None and otype == "user":
            members[gid].append(dn)
        elif dn is not None:
            skipped[gid].append(f"{name} ({mid}): a group; nested groups are not written back")
        else:
            skipped[gid].append(f"{name} ({mid}): not a synced on-premises user")
    return [
        CloudGroup(gid, name, desc, tuple(sorted(members[gid], key=str.lower)), tuple(skipped[gid]))
        for gid, name, desc in rows
    ]


def unstamped_users(conn: psycopg.Connection) -> list[UnstampedUser]:
    """Synced (linked) users whose imported source object has no mS-DS-ConsistencyGuid."""
    rows = conn.execute(
        "SELECT s.anchor, s.dn FROM source_object s JOIN sync_link l ON l.anchor = s.anchor"
        " WHERE s.object_type = 'user' AND NOT s.deleted AND NOT s.attrs ? 'ms-ds-consistencyguid'"
        " ORDER BY s.anchor"
    ).fetchall()
    return [UnstampedUser(r[0], r[1]) for r in rows]


def reconcile(
    conn: psycopg.Connection,
    ops: Sequence[AdOp],
    settle: timedelta,
    object_types: Sequence[str] = ("user", "group"),
) -> dict[str, int]:
    """Make the queue's AD rows equal to `ops` (the planner's whole set, computed from AD as read
    now): rows no longer computed are confirmed (deleted); a new payload is a fresh operation; an
    exported row computed again with the same payload did not take and is exported again once
    `settle` has passed (the source import may not have seen a user's new value yet).
    Only rows of `object_types` (the types planned this time) are confirmed."""
    anchors = [o.anchor for o in ops]
    keys = [f"{o.object_type}|{o.anchor}|{o.kind}" for o in ops]
    confirmed = conn.execute(
        "DELETE FROM pending_export WHERE target = 'ad' AND object_type = ANY(%s)"
        " AND NOT (object_type || '|' || anchor || '|' || kind = ANY(%s))",
        (list(object_types), keys),
    ).rowcount
    written = 0
    for o in ops:
        row = conn.execute(
            "INSERT INTO pending_export AS p (object_type, anchor, kind, payload, target)"
            " VALUES (%(t)s, %(a)s, %(k)s, %(p)s, 'ad')"
            " ON CONFLICT (object_type, anchor, kind, member_anchor) DO UPDATE SET"
            " computed_at = now(), payload = excluded.payload,"
            " attempts = CASE WHEN p.payload <> excluded.payload THEN 0 ELSE p.attempts END,"
            " last_error = CASE WHEN p.payload <> excluded.payload THEN NULL ELSE p.last_error END,"
            " not_before = CASE WHEN p.payload <> excluded.payload THEN NULL ELSE p.not_before END,"
            " quarantined_at = CASE WHEN p.payload <> excluded.payload THEN NULL ELSE p.quarantined_at END,"
            " exported_at = NULL, claimed_epoch = NULL, claimed_by = NULL, claimed_at = NULL"
            " WHERE p.target = 'ad' AND (p.payload <> excluded.payload"
            "  OR (p.exported_at IS NOT NULL AND p.exported_at < now() - %(settle)s))"
            " RETURNING p.id",
            {"t": o.object_type, "a": o.anchor, "k": o.kind, "p": Jsonb(dict(o.payload)), "settle": settle},
        ).fetchone()
        written += row is not None
    # Quarantine entries of writeback operations that are no longer pending: gone with them.
    conn.execute(
        "DELETE FROM quarantine WHERE phase = 'export' AND key LIKE 'ad:%%' AND NOT (key = ANY(%s))",
        (anchors,),
    )
    return {"confirmed": confirmed, "written": written}


def note_skipped(conn: psycopg.Connection, groups: Sequence[CloudGroup]) -> None:
    """Record (and clear) the members each written-back group leaves out, with the reason."""
    notes = [
        Quarantined(
            NOTE_PHASE,
            GROUP_PREFIX + group_name(g.id),
            f"{len(g.skipped)} cloud member(s) of {g.display_name!r} not written back to AD: "
            + "; ".join(g.skipped),
            "group",
        )
        for g in groups
        if g.skipped
    ]
    keep = [q.key for q in notes]
    conn.execute("DELETE FROM quarantine WHERE phase = %s AND NOT (key = ANY(%s))", (NOTE_PHASE, keep))
    quarantine.put(conn, notes)


def group_name(cloud_id: str) -> str:
    """Entra Connect's name for a written-back group: `Group_<cloud object id>`."""
    return f"Group_{cloud_id}"


def claim(conn: psycopg.Connection, *, epoch: int, node: str, limit: int) -> list[pending.PendingExport]:
    """Claim up to `limit` ready AD operations, in export order, under the fence row and the
    store's export epoch (the same checks as the Graph claim; raises Fenced / StaleEpoch)."""
    fence_row.check(conn, epoch)
    row = conn.execute("SELECT value FROM meta WHERE key = 'export_epoch' FOR UPDATE").fetchone()
    seen = int(row[0]) if row else 0
    if epoch < seen:
        raise pending.StaleEpoch(epoch, seen)
    if epoch > seen:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('export_epoch', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(epoch),),
        )
    rows = conn.execute(
        "WITH ready AS (SELECT p.id FROM pending_export p"
        " WHERE p.target = 'ad' AND p.exported_at IS NULL AND p.quarantined_at IS NULL"
        "  AND (p.not_before IS NULL OR p.not_before <= now())"
        "  AND (p.claimed_epoch IS DISTINCT FROM %(epoch)s OR p.claimed_at < now() - interval '5 minutes')"
        " ORDER BY p.priority, p.id LIMIT %(limit)s FOR UPDATE OF p SKIP LOCKED)"
        " UPDATE pending_export q SET claimed_epoch = %(epoch)s, claimed_by = %(node)s, claimed_at = now()"
        " FROM ready WHERE q.id = ready.id RETURNING q.id",
        {"epoch": epoch, "node": node, "limit": limit},
    ).fetchall()
    ids = [r[0] for r in rows]
    if not ids:
        return []
    got = conn.execute(pending._SELECT + " WHERE p.id = ANY(%s) ORDER BY p.priority, p.id", (ids,)).fetchall()
    return [pending._op(r) for r in got]


def release(conn: psycopg.Connection, ids: Sequence[int], epoch: int) -> int:
    """Give back claimed operations this epoch did not run (it was fenced or stopped between
    writes): the next export, of this leader or the next, claims them again at once."""
    if not ids:
        return 0
    return conn.execute(
        "UPDATE pending_export SET claimed_epoch = NULL, claimed_by = NULL, claimed_at = NULL"
        " WHERE id = ANY(%s) AND claimed_epoch = %s AND exported_at IS NULL",
        (list(ids), epoch),
    ).rowcount


def journal(conn: psycopg.Connection, anchor_prefix: str = "ad:") -> list[tuple[str, str, str, int]]:
    """(anchor, kind, outcome, epoch) of every AD export attempt, oldest first (tests, audits)."""
    rows = conn.execute(
        "SELECT anchor, kind, outcome, epoch FROM export_journal WHERE target = 'ad' AND anchor LIKE %s"
        " ORDER BY id",
        (anchor_prefix + "%",),
    ).fetchall()
    return [(r[0], r[1], r[2], int(r[3])) for r in rows]
