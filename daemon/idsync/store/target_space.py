"""The target space as the sync engine sees it: joins (links) and what changed since the last sync.

The target connector fills `target_object` / `target_member` from Graph delta. Its contract with
the sync engine: `target_object.anchor` holds the value of the type's anchor attribute (see
`Rules.anchor_attribute`), `attrs` holds every managed attribute under its Graph name, and a
change of a group's membership takes a new `changed_seq` on the group's row. The writers here
(`upsert`, `mark_deleted`, `set_members`) follow that contract; tests and the connector can use them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg


@dataclass(frozen=True, slots=True)
class TargetObject:
    """One object of the target space (Graph id, type, anchor attribute value, attributes)."""

    id: str
    object_type: str
    anchor: str | None
    attrs: Mapping[str, Any]
    deleted: bool = False


# --- writers (the target import) ----------------------------------------------------------------


def upsert(conn: psycopg.Connection, objs: Sequence[TargetObject]) -> int:
    """Insert or update target objects; only real changes take a new changed_seq."""
    if not objs:
        return 0
    rows = conn.execute(
        "INSERT INTO target_object AS t (id, object_type, anchor, attrs, deleted)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[], %s::boolean[])"
        " ON CONFLICT (id) DO UPDATE SET object_type = excluded.object_type, anchor = excluded.anchor,"
        " attrs = excluded.attrs, deleted = excluded.deleted, changed_seq = nextval('change_seq'),"
        " updated_at = now()"
        " WHERE t.attrs IS DISTINCT FROM excluded.attrs OR t.anchor IS DISTINCT FROM excluded.anchor"
        "  OR t.deleted <> excluded.deleted RETURNING id",
        (
            [o.id for o in objs],
            [o.object_type for o in objs],
            [o.anchor for o in objs],
            [orjson.dumps(dict(o.attrs)).decode() for o in objs],
            [o.deleted for o in objs],
        ),
    ).fetchall()
    return len(rows)


def mark_deleted(conn: psycopg.Connection, ids: Iterable[str]) -> int:
    """The target import saw these objects deleted."""
    ids = list(ids)
    rows = conn.execute(
        "UPDATE target_object SET deleted = true, changed_seq = nextval('change_seq'), updated_at = now()"
        " WHERE id = ANY(%s) AND NOT deleted RETURNING id",
        (ids,),
    ).fetchall()
    conn.execute("DELETE FROM target_member WHERE group_id = ANY(%s) OR member_id = ANY(%s)", (ids, ids))
    return len(rows)


def set_members(
    conn: psycopg.Connection, group_id: str, added: Iterable[str] = (), removed: Iterable[str] = ()
) -> None:
    """Apply a membership delta of one group and bump the group's changed_seq."""
    conn.execute(
        "INSERT INTO target_member (group_id, member_id) SELECT %s, unnest(%s::text[])"
        " ON CONFLICT DO NOTHING",
        (group_id, list(added)),
    )
    conn.execute(
        "DELETE FROM target_member WHERE group_id = %s AND member_id = ANY(%s)", (group_id, list(removed))
    )
    conn.execute(
        "UPDATE target_object SET changed_seq = nextval('change_seq'), updated_at = now() WHERE id = %s",
        (group_id,),
    )


# --- what the sync engine reads -----------------------------------------------------------------


def high_water(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT coalesce(max(changed_seq), 0) FROM target_object").fetchone()
    return int(row[0]) if row else 0


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
    gone = conn.execute(
        "DELETE FROM sync_link l USING _dirty x WHERE l.anchor = x.anchor AND NOT EXISTS"
        " (SELECT 1 FROM target_object t WHERE t.id = l.target_id AND NOT t.deleted) RETURNING l.anchor"
    ).rowcount
    hard = conn.execute(
        "INSERT INTO sync_link (anchor, object_type, target_id, how)"
        " SELECT DISTINCT ON (d.anchor) d.anchor, d.object_type, t.id,"
        "  CASE WHEN EXISTS (SELECT 1 FROM pending_export p WHERE p.anchor = d.anchor AND p.kind = 'create'"
        "   AND p.exported_at IS NOT NULL) THEN 'created' ELSE 'hard' END"
        " FROM _dirty x JOIN desired_object d ON d.anchor = x.anchor"
        " JOIN target_object t ON t.object_type = d.object_type AND t.anchor = d.target_anchor"
        "  AND NOT t.deleted"
        " WHERE NOT EXISTS (SELECT 1 FROM sync_link l WHERE l.anchor = d.anchor)"
        "  AND NOT EXISTS (SELECT 1 FROM sync_link l WHERE l.target_id = t.id)"
        " ORDER BY d.anchor, t.id ON CONFLICT DO NOTHING"
    ).rowcount
    soft = 0
    for object_type, attribute in soft_match.items():
        soft += conn.execute(
            "INSERT INTO sync_link (anchor, object_type, target_id, how)"
            " SELECT d.anchor, d.object_type, min(t.id), 'soft'"
            " FROM _dirty x JOIN desired_object d ON d.anchor = x.anchor AND d.object_type = %(t)s"
            " JOIN target_object t ON t.object_type = d.object_type AND t.anchor IS NULL AND NOT t.deleted"
            "  AND lower(t.attrs->>%(a)s) = lower(d.attrs->>%(a)s)"
            " WHERE NOT EXISTS (SELECT 1 FROM sync_link l WHERE l.anchor = d.anchor)"
            "  AND NOT EXISTS (SELECT 1 FROM sync_link l WHERE l.target_id = t.id)"
            " GROUP BY d.anchor, d.object_type HAVING count(*) = 1 ON CONFLICT DO NOTHING",
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


def get(conn: psycopg.Connection, target_id: str) -> TargetObject | None:
    row = conn.execute(
        "SELECT id, object_type, anchor, attrs, deleted FROM target_object WHERE id = %s", (target_id,)
    ).fetchone()
    return None if row is None else TargetObject(row[0], row[1], row[2], row[3], bool(row[4]))


def members(conn: psycopg.Connection, group_id: str) -> list[str]:
    rows = conn.execute(
        "SELECT member_id FROM target_member WHERE group_id = %s ORDER BY member_id", (group_id,)
    ).fetchall()
    return [r[0] for r in rows]
