"""Everything the store knows about one object, read in one snapshot (`idsync preview`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from idsync.model import SourceObject
from idsync.store import source_space


@dataclass(frozen=True)
class Link:
    """The target object a source anchor is linked to, and how the link formed."""

    target_id: str
    how: str  # created | hard | soft


@dataclass(frozen=True)
class Target:
    """A target object as the last target import saw it."""

    id: str
    anchor: str | None
    attrs: dict[str, Any]
    deleted: bool


@dataclass(frozen=True)
class Snapshot:
    """One source object with its desired state, link, target object and member view."""

    source: SourceObject
    deleted: bool
    desired: dict[str, Any] | None  # as the last sync left it
    link: Link | None
    target: Target | None  # the linked object
    candidates: tuple[Target, ...]  # live unlinked target objects carrying its target anchor
    desired_members: tuple[str, ...]  # group: member anchors as the last sync resolved them
    target_members: tuple[str, ...]  # group: source anchors of the target group's linked members
    unknown_members: int  # group: target members idsync does not link (cloud-added; left alone)
    entra_connect: str | None = None  # id of an Entra Connect object carrying its anchor
    entra_connect_by: str = ""  # "" (its anchor) or the unique value it shares (userPrincipalName)
    recycled: str | None = None  # id of a deleted user carrying its anchor (a create restores it)


def find(conn: psycopg.Connection, ident: str) -> str | None:
    """The anchor of the source object named by anchor or DN (case-insensitively), or None."""
    row = conn.execute(
        "SELECT anchor FROM source_object WHERE anchor = %s"
        " UNION ALL (SELECT anchor FROM source_object WHERE lower(dn) = lower(%s) ORDER BY deleted LIMIT 1)"
        " LIMIT 1",
        (ident, ident),
    ).fetchone()
    return None if row is None else str(row[0])


def snapshot(
    conn: psycopg.Connection, anchor: str, target_anchor: str | None, anchor_attribute: str | None = None
) -> Snapshot | None:
    """What the store holds about `anchor`; `target_anchor` (the anchor value the rules give it
    now, in `anchor_attribute`) finds the target objects a hard match would link, and an Entra
    Connect object carrying it (which idsync leaves alone)."""
    src = source_space.get(conn, anchor)
    if src is None:
        return None
    deleted = bool(source_space.is_deleted(conn, anchor))
    row = conn.execute("SELECT attrs FROM desired_object WHERE anchor = %s", (anchor,)).fetchone()
    desired = None if row is None else dict(row[0])
    row = conn.execute("SELECT target_id, how FROM sync_link WHERE anchor = %s", (anchor,)).fetchone()
    link = None if row is None else Link(row[0], row[1])
    target = None
    if link is not None:
        t = conn.execute(
            "SELECT id, anchor, attrs, deleted FROM target_object WHERE id = %s", (link.target_id,)
        ).fetchone()
        target = None if t is None else Target(t[0], t[1], dict(t[2]), bool(t[3]))
    candidates: tuple[Target, ...] = ()
    if link is None and target_anchor:
        rows = conn.execute(
            "SELECT id, anchor, attrs, deleted FROM target_object t WHERE object_type = %s AND anchor = %s"
            " AND NOT deleted AND NOT EXISTS (SELECT 1 FROM sync_link l WHERE l.target_id = t.id)"
            " ORDER BY id",
            (src.object_type, target_anchor),
        ).fetchall()
        candidates = tuple(Target(r[0], r[1], dict(r[2]), bool(r[3])) for r in rows)
    twin = None
    if link is None and target_anchor and anchor_attribute:
        row = conn.execute(
            "SELECT min(id) FROM target_object WHERE object_type = %s AND NOT deleted"
            " AND attrs -> 'onPremisesSyncEnabled' = 'true'::jsonb AND attrs ->> %s = %s",
            (src.object_type, anchor_attribute, target_anchor),
        ).fetchone()
        twin = row[0] if row else None
    twin_by = ""
    upn = (desired or {}).get("userPrincipalName")
    if link is None and twin is None and src.object_type == "user" and isinstance(upn, str):
        # a user Entra Connect holds the UPN of: the diff gives it no create either (store.diff)
        row = conn.execute(
            "SELECT min(id) FROM target_object WHERE object_type = 'user' AND NOT deleted"
            " AND attrs -> 'onPremisesSyncEnabled' = 'true'::jsonb"
            " AND lower(attrs ->> 'userPrincipalName') = lower(%s)",
            (upn,),
        ).fetchone()
        twin, twin_by = (row[0], "userPrincipalName") if row and row[0] else (None, "")
    recycled = None
    if link is None and not candidates and target_anchor and src.object_type == "user":
        row = conn.execute(
            "SELECT max(id) FROM target_object WHERE object_type = 'user' AND deleted AND anchor = %s",
            (target_anchor,),
        ).fetchone()
        recycled = row[0] if row else None
    want: tuple[str, ...] = ()
    have: tuple[str, ...] = ()
    unknown = 0
    if src.object_type == "group":
        want = tuple(
            r[0]
            for r in conn.execute(
                "SELECT member_anchor FROM desired_member WHERE group_anchor = %s ORDER BY 1", (anchor,)
            )
        )
        if link is not None:
            rows = conn.execute(
                "SELECT l.anchor FROM target_member m LEFT JOIN sync_link l ON l.target_id = m.member_id"
                " WHERE m.group_id = %s ORDER BY 1",
                (link.target_id,),
            ).fetchall()
            have = tuple(r[0] for r in rows if r[0] is not None)
            unknown = sum(1 for r in rows if r[0] is None)
    return Snapshot(
        src, deleted, desired, link, target, candidates, want, have, unknown, twin, twin_by, recycled
    )


@dataclass(frozen=True)
class ManagerView:
    """A user's manager as the last sync resolved it and as the target import shows it."""

    desired: str | None  # the manager's source anchor (None: no manager)
    target_id: str | None  # the target user's manager (None: none)
    target_anchor: str | None  # the source anchor linked to that target manager (None: not idsync's)


def manager_view(conn: psycopg.Connection, anchor: str, target_id: str) -> ManagerView:
    """The manager of the user `anchor`, linked to `target_id`, in the desired and target space."""
    row = conn.execute("SELECT manager_anchor FROM desired_manager WHERE anchor = %s", (anchor,)).fetchone()
    tm = conn.execute(
        "SELECT m.manager_id, l.anchor FROM target_manager m"
        " LEFT JOIN sync_link l ON l.target_id = m.manager_id WHERE m.user_id = %s",
        (target_id,),
    ).fetchone()
    return ManagerView(row[0] if row else None, tm[0] if tm else None, tm[1] if tm else None)


def names(conn: psycopg.Connection, anchors: list[str]) -> dict[str, str]:
    """Readable names (userPrincipalName, displayName, else the DN) of source anchors."""
    rows = conn.execute(
        "SELECT s.anchor, coalesce(d.attrs ->> 'userPrincipalName', d.attrs ->> 'displayName', s.dn)"
        " FROM source_object s LEFT JOIN desired_object d ON d.anchor = s.anchor WHERE s.anchor = ANY(%s)",
        (anchors,),
    ).fetchall()
    return {r[0]: r[1] for r in rows}
