"""Links: which target object stands for which source anchor (the sync engine's join).

A link forms when a desired object's anchor value shows up on a target object (hard match: after
idsync created it, or an earlier installation did), or — only when soft match is enabled — when
exactly one unanchored target object has the same userPrincipalName/mail (it is adopted, and the
next update stamps the anchor on it). Only linked objects are ever updated, deprovisioned or
counted as members: a target object idsync never linked is not idsync's and is never deleted.

The target import's contract (see store.target_space): `target_object.anchor` is the value of the
type's anchor attribute, `attrs` holds the managed attributes under their Graph names, and a
change of a group's membership takes a new `changed_seq` on the group's row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import psycopg

from idsync.store import sets


def mark_changed(conn: psycopg.Connection, after: int, upto: int) -> int:
    """Mark source anchors whose target object changed (the confirming import) as dirty."""
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS _tchanged (id text PRIMARY KEY, object_type text, anchor text)"
        " ON COMMIT DROP"
    )
    n = conn.execute(
        "INSERT INTO _tchanged SELECT id, object_type, anchor FROM target_object"
        " WHERE changed_seq > %s AND changed_seq <= %s",
        (after, upto),
    ).rowcount
    # Linked objects, and desired objects whose twin just appeared (a create that landed).
    conn.execute(
        "INSERT INTO _dirty (anchor) SELECT l.anchor FROM _tchanged c JOIN sync_link l ON l.target_id = c.id"
        " UNION SELECT d.anchor FROM _tchanged c JOIN desired_object d"
        "  ON d.object_type = c.object_type AND d.target_anchor = c.anchor WHERE c.anchor IS NOT NULL"
        " ON CONFLICT DO NOTHING"
    )
    conn.execute(
        "INSERT INTO _dirty_groups (anchor) SELECT l.anchor FROM _tchanged c"
        " JOIN sync_link l ON l.target_id = c.id WHERE c.object_type = 'group' ON CONFLICT DO NOTHING"
    )
    return n


def link(conn: psycopg.Connection, soft_match: Mapping[str, str]) -> dict[str, int]:
    """Join the dirty desired objects to target objects; unlink targets that are gone.

    Hard match: a live target object of the same type whose anchor equals the desired
    target_anchor. Soft match (only for types in `soft_match`, type → attribute): exactly one live,
    unlinked target object *without* an anchor whose attribute equals the desired value
    (case-insensitively) — it is adopted, and the next update stamps the anchor on it.
    """
    # The anchors linked now (store.pending.release_waiting readies what waited for them).
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _linked (anchor text PRIMARY KEY) ON COMMIT DROP")
    conn.execute("TRUNCATE _linked")
    gone = conn.execute(
        f"DELETE FROM sync_link l WHERE {sets.among(conn, 'l.anchor', '_dirty')} AND NOT EXISTS"
        " (SELECT 1 FROM target_object t WHERE t.id = l.target_id AND NOT t.deleted) RETURNING l.anchor"
    ).rowcount
    hard = conn.execute(
        "WITH n AS (INSERT INTO sync_link (anchor, object_type, target_id, how)"
        " SELECT DISTINCT ON (d.anchor) d.anchor, d.object_type, t.id,"
        "  CASE WHEN EXISTS (SELECT 1 FROM pending_export p WHERE p.anchor = d.anchor AND p.kind = 'create'"
        "   AND p.exported_at IS NOT NULL) THEN 'created' ELSE 'hard' END"
        " FROM _dirty x JOIN desired_object d ON d.anchor = x.anchor"
        " JOIN target_object t ON t.object_type = d.object_type AND t.anchor = d.target_anchor"
        "  AND NOT t.deleted"
        " WHERE NOT EXISTS (SELECT 1 FROM sync_link l WHERE l.anchor = d.anchor)"
        "  AND NOT EXISTS (SELECT 1 FROM sync_link l WHERE l.target_id = t.id)"
        " ORDER BY d.anchor, t.id ON CONFLICT DO NOTHING RETURNING anchor)"
        " INSERT INTO _linked SELECT anchor FROM n"
    ).rowcount
    # An object that left the desired state before any link pointed to it (it left scope right
    # after its creation, or another node created it before a failover): desired_gone still has
    # the target anchor it carried. Link it, and mark it dirty so that the diff deprovisions it.
    orphans = conn.execute(
        "INSERT INTO sync_link (anchor, object_type, target_id, how)"
        " SELECT DISTINCT ON (g.anchor) g.anchor, g.object_type, t.id, 'hard'"
        " FROM desired_gone g"
        " JOIN target_object t ON t.object_type = g.object_type AND t.anchor = g.target_anchor"
        "  AND NOT t.deleted"
        " WHERE NOT EXISTS (SELECT 1 FROM desired_object d WHERE d.anchor = g.anchor)"
        "  AND NOT EXISTS (SELECT 1 FROM sync_link l WHERE l.anchor = g.anchor)"
        "  AND NOT EXISTS (SELECT 1 FROM sync_link l WHERE l.target_id = t.id)"
        " ORDER BY g.anchor, t.id ON CONFLICT DO NOTHING RETURNING anchor"
    ).fetchall()
    if orphans:
        conn.execute(
            "WITH o AS (SELECT unnest(%s::text[]) AS anchor),"
            " l AS (INSERT INTO _linked SELECT anchor FROM o ON CONFLICT DO NOTHING)"
            " INSERT INTO _dirty (anchor) SELECT anchor FROM o ON CONFLICT DO NOTHING",
            ([r[0] for r in orphans],),
        )
    hard += len(orphans)
    soft = 0
    for object_type, attribute in soft_match.items():
        soft += conn.execute(
            "WITH n AS (INSERT INTO sync_link (anchor, object_type, target_id, how)"
            " SELECT d.anchor, d.object_type, min(t.id), 'soft'"
            " FROM _dirty x JOIN desired_object d ON d.anchor = x.anchor AND d.object_type = %(t)s"
            " JOIN target_object t ON t.object_type = d.object_type AND t.anchor IS NULL AND NOT t.deleted"
            "  AND lower(t.attrs->>%(a)s) = lower(d.attrs->>%(a)s)"
            # Entra Connect's objects are never adopted (Graph cannot write them).
            "  AND t.attrs -> 'onPremisesSyncEnabled' IS DISTINCT FROM 'true'::jsonb"
            " WHERE NOT EXISTS (SELECT 1 FROM sync_link l WHERE l.anchor = d.anchor)"
            "  AND NOT EXISTS (SELECT 1 FROM sync_link l WHERE l.target_id = t.id)"
            " GROUP BY d.anchor, d.object_type HAVING count(*) = 1 ON CONFLICT DO NOTHING RETURNING anchor)"
            " INSERT INTO _linked SELECT anchor FROM n",
            {"t": object_type, "a": attribute},
        ).rowcount
    return {"unlinked": gone, "hard": hard, "soft": soft}


def target_id(conn: psycopg.Connection, anchor: str) -> str | None:
    """The target id linked to a source anchor, or None."""
    row = conn.execute("SELECT target_id FROM sync_link WHERE anchor = %s", (anchor,)).fetchone()
    return None if row is None else str(row[0])


def owned_count(conn: psycopg.Connection) -> int:
    """How many live target objects idsync owns (linked): the base of the percentage guard."""
    row = conn.execute(
        "SELECT count(*) FROM sync_link l JOIN target_object t ON t.id = l.target_id AND NOT t.deleted"
    ).fetchone()
    return int(row[0]) if row else 0


def target_attrs(conn: psycopg.Connection, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Target attributes of several objects by Graph id (the "old" side of a preview)."""
    rows = conn.execute("SELECT id, attrs FROM target_object WHERE id = ANY(%s)", (list(ids),)).fetchall()
    return {r[0]: dict(r[1]) for r in rows}


def linked_target_attrs(conn: psycopg.Connection, anchors: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Target attributes of linked objects by source anchor (names of objects no longer desired)."""
    rows = conn.execute(
        "SELECT l.anchor, t.attrs FROM sync_link l JOIN target_object t ON t.id = l.target_id"
        " WHERE l.anchor = ANY(%s)",
        (list(anchors),),
    ).fetchall()
    return {r[0]: dict(r[1]) for r in rows}
