"""The source space: directory objects keyed by anchor, written in bulk with COPY.

All writers work inside the caller's transaction, so an importer can commit a page of objects
together with the cookie that produced it (nothing lost, nothing applied twice after a crash).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import orjson
import psycopg

from idsync.model import MemberDelta, SourceObject
from idsync.store.runs import RunCounts

_TEMP = """
CREATE TEMP TABLE IF NOT EXISTS _src_in (
    anchor text PRIMARY KEY, object_type text, dn text, attrs jsonb, attrs_hash bytea
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _mem_in (group_anchor text, member_ref text) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _grp_in (anchor text PRIMARY KEY) ON COMMIT DELETE ROWS;
"""

# An existing row differs from the incoming one (so it is an update, not "unchanged").
_DIFFERS = "(s.attrs_hash <> i.attrs_hash OR s.dn <> i.dn OR s.deleted OR s.object_type <> i.object_type)"


def attrs_json(attrs: object) -> bytes:
    """Canonical JSON of an attribute map (sorted keys), the input of the change hash."""
    return orjson.dumps(attrs, option=orjson.OPT_SORT_KEYS)


def _prepare(conn: psycopg.Connection) -> None:
    conn.execute(_TEMP.encode())


def upsert(
    conn: psycopg.Connection, objs: Sequence[SourceObject], *, seen_run: int | None = None
) -> RunCounts:
    """Insert or update objects (and the member lists given with groups).

    With `seen_run` (a full import), every row is stamped with the run so that a completed full
    import can sweep the objects it did not see. Unchanged rows keep their `changed_seq`, so the
    sync engine does not look at them again.
    """
    counts = RunCounts()
    if not objs:
        return counts
    _prepare(conn)
    by_anchor: dict[str, SourceObject] = {}
    for obj in objs:
        by_anchor[obj.anchor] = obj  # a later copy of the same object in one batch wins
    with conn.cursor() as cur:
        with cur.copy("COPY _src_in (anchor, object_type, dn, attrs, attrs_hash) FROM STDIN") as cp:
            for obj in by_anchor.values():
                doc = attrs_json(obj.attrs)
                cp.write_row(
                    (
                        obj.anchor,
                        obj.object_type,
                        obj.dn,
                        doc.decode(),
                        hashlib.blake2b(doc, digest_size=16).digest(),
                    )
                )
        row = cur.execute(
            "SELECT count(*) FILTER (WHERE s.anchor IS NULL),"
            f" count(*) FILTER (WHERE s.anchor IS NOT NULL AND {_DIFFERS}),"
            f" count(*) FILTER (WHERE s.anchor IS NOT NULL AND NOT {_DIFFERS})"
            " FROM _src_in i LEFT JOIN source_object s USING (anchor)"
        ).fetchone()
        assert row is not None
        counts.added, counts.updated, counts.unchanged = int(row[0]), int(row[1]), int(row[2])
        unchanged_groups = {
            r[0]
            for r in cur.execute(
                "SELECT i.anchor FROM _src_in i JOIN source_object s USING (anchor)"
                f" WHERE i.object_type = 'group' AND NOT {_DIFFERS}"
            )
        }
        changed = (
            "s.attrs_hash <> excluded.attrs_hash OR s.dn <> excluded.dn OR s.deleted"
            " OR s.object_type <> excluded.object_type"
        )
        if seen_run is None:
            cur.execute(
                "INSERT INTO source_object AS s (anchor, object_type, dn, attrs, attrs_hash)"
                " SELECT anchor, object_type, dn, attrs, attrs_hash FROM _src_in"
                " ON CONFLICT (anchor) DO UPDATE SET object_type = excluded.object_type, dn = excluded.dn,"
                " attrs = excluded.attrs, attrs_hash = excluded.attrs_hash, deleted = false,"
                f" changed_seq = nextval('change_seq'), updated_at = now() WHERE {changed}"
            )
        else:
            cur.execute(
                "INSERT INTO source_object AS s (anchor, object_type, dn, attrs, attrs_hash, seen_run)"
                " SELECT anchor, object_type, dn, attrs, attrs_hash, %s FROM _src_in"
                " ON CONFLICT (anchor) DO UPDATE SET object_type = excluded.object_type, dn = excluded.dn,"
                " attrs = excluded.attrs, attrs_hash = excluded.attrs_hash, deleted = false,"
                " seen_run = excluded.seen_run,"
                f" changed_seq = CASE WHEN {changed} THEN nextval('change_seq') ELSE s.changed_seq END,"
                f" updated_at = CASE WHEN {changed} THEN now() ELSE s.updated_at END",
                (seen_run,),
            )
        groups = [o for o in by_anchor.values() if o.members is not None]
        if groups:
            membership_changed = _replace_members(cur, groups)
            _touch(cur, membership_changed)
            # A group whose only change is its membership is still an updated object.
            moved = len(membership_changed & unchanged_groups)
            counts.unchanged -= moved
            counts.updated += moved
    return counts


def _replace_members(cur: psycopg.Cursor, groups: Sequence[SourceObject]) -> set[str]:
    """Make each group's member rows equal to its given list; returns groups that changed."""
    with cur.copy("COPY _grp_in (anchor) FROM STDIN") as cp:
        for g in groups:
            cp.write_row((g.anchor,))
    with cur.copy("COPY _mem_in (group_anchor, member_ref) FROM STDIN") as cp:
        for g in groups:
            for ref in dict.fromkeys(g.members or ()):
                cp.write_row((g.anchor, ref))
    removed = cur.execute(
        "DELETE FROM source_member m USING _grp_in g WHERE m.group_anchor = g.anchor"
        " AND NOT EXISTS (SELECT 1 FROM _mem_in i"
        "  WHERE i.group_anchor = m.group_anchor AND i.member_ref = m.member_ref)"
        " RETURNING m.group_anchor"
    ).fetchall()
    added = cur.execute(
        "INSERT INTO source_member (group_anchor, member_ref)"
        " SELECT DISTINCT group_anchor, member_ref FROM _mem_in"
        " ON CONFLICT DO NOTHING RETURNING group_anchor"
    ).fetchall()
    return {r[0] for r in removed} | {r[0] for r in added}


def _touch(cur: psycopg.Cursor, anchors: Iterable[str]) -> None:
    anchors = list(anchors)
    if anchors:
        cur.execute(
            "UPDATE source_object SET changed_seq = nextval('change_seq'), updated_at = now()"
            " WHERE anchor = ANY(%s)",
            (anchors,),
        )


def apply_member_deltas(conn: psycopg.Connection, deltas: Sequence[MemberDelta]) -> int:
    """Apply incremental membership changes; returns how many groups changed."""
    changed: set[str] = set()
    with conn.cursor() as cur:
        for d in deltas:
            if d.added:
                rows = cur.execute(
                    "INSERT INTO source_member (group_anchor, member_ref)"
                    " SELECT %s, unnest(%s::text[]) ON CONFLICT DO NOTHING RETURNING group_anchor",
                    (d.group_anchor, list(d.added)),
                ).fetchall()
                if rows:
                    changed.add(d.group_anchor)
            if d.removed:
                rows = cur.execute(
                    "DELETE FROM source_member WHERE group_anchor = %s AND member_ref = ANY(%s)"
                    " RETURNING group_anchor",
                    (d.group_anchor, list(d.removed)),
                ).fetchall()
                if rows:
                    changed.add(d.group_anchor)
        _touch(cur, changed)
    return len(changed)


def delete(conn: psycopg.Connection, anchors: Iterable[str]) -> int:
    """Mark objects deleted (their rows stay as tombstones); returns how many were live."""
    anchors = list(anchors)
    if not anchors:
        return 0
    rows = conn.execute(
        "UPDATE source_object SET deleted = true, changed_seq = nextval('change_seq'), updated_at = now()"
        " WHERE anchor = ANY(%s) AND NOT deleted RETURNING anchor",
        (anchors,),
    ).fetchall()
    conn.execute("DELETE FROM source_member WHERE group_anchor = ANY(%s)", (anchors,))
    return len(rows)


def drop_member_refs(conn: psycopg.Connection, refs: Iterable[str]) -> set[str]:
    """Remove deleted objects from every group they were in (the directory drops those links).

    Groups that lost a member get a new `changed_seq`; returns their anchors.
    """
    refs = list(refs)
    if not refs:
        return set()
    rows = conn.execute(
        "DELETE FROM source_member WHERE member_ref = ANY(%s) RETURNING group_anchor", (refs,)
    ).fetchall()
    groups = {r[0] for r in rows}
    with conn.cursor() as cur:
        _touch(cur, groups)
    return groups


def sweep_unseen(conn: psycopg.Connection, run_id: int, object_types: Sequence[str]) -> int:
    """After a completed full import: objects it did not see are deleted in the source."""
    rows = conn.execute(
        "UPDATE source_object SET deleted = true, changed_seq = nextval('change_seq'), updated_at = now()"
        " WHERE NOT deleted AND object_type = ANY(%s) AND seen_run IS DISTINCT FROM %s RETURNING anchor",
        (list(object_types), run_id),
    ).fetchall()
    anchors = [r[0] for r in rows]
    if anchors:
        conn.execute("DELETE FROM source_member WHERE group_anchor = ANY(%s)", (anchors,))
    return len(anchors)


def resolve_dn_refs(conn: psycopg.Connection) -> int:
    """Turn `dn:<dn>` member references into anchors where the DN is now known."""
    rows = conn.execute(
        "WITH r AS ("
        "  SELECT m.group_anchor, m.member_ref, s.anchor FROM source_member m"
        "  JOIN source_object s ON lower(s.dn) = lower(substr(m.member_ref, 4)) AND NOT s.deleted"
        "  WHERE m.member_ref LIKE 'dn:%%'),"
        " d AS (DELETE FROM source_member m USING r"
        "  WHERE m.group_anchor = r.group_anchor AND m.member_ref = r.member_ref)"
        " INSERT INTO source_member (group_anchor, member_ref) SELECT group_anchor, anchor FROM r"
        " ON CONFLICT DO NOTHING RETURNING group_anchor"
    ).fetchall()
    return len(rows)


def get(conn: psycopg.Connection, anchor: str) -> SourceObject | None:
    """One object (live or deleted) with its members, or None."""
    row = conn.execute(
        "SELECT anchor, object_type, dn, attrs, deleted FROM source_object WHERE anchor = %s", (anchor,)
    ).fetchone()
    if row is None:
        return None
    members = None
    if row[1] == "group":
        members = tuple(
            r[0]
            for r in conn.execute(
                "SELECT member_ref FROM source_member WHERE group_anchor = %s ORDER BY member_ref", (anchor,)
            )
        )
    attrs = {k: tuple(v) for k, v in row[3].items()}
    return SourceObject(anchor=row[0], object_type=row[1], dn=row[2], attrs=attrs, members=members)


def get_many(conn: psycopg.Connection, anchors: Iterable[str]) -> dict[str, SourceObject]:
    """The live objects among `anchors`, without their member lists (a delta merges into these)."""
    anchors = list(anchors)
    if not anchors:
        return {}
    rows = conn.execute(
        "SELECT anchor, object_type, dn, attrs FROM source_object WHERE anchor = ANY(%s) AND NOT deleted",
        (anchors,),
    ).fetchall()
    return {
        r[0]: SourceObject(
            anchor=r[0], object_type=r[1], dn=r[2], attrs={k: tuple(v) for k, v in r[3].items()}
        )
        for r in rows
    }


def live_anchors(conn: psycopg.Connection) -> dict[str, str]:
    """Anchor → DN of every live object (for a syncrepl present phase: who was not listed)."""
    return {r[0]: r[1] for r in conn.execute("SELECT anchor, dn FROM source_object WHERE NOT deleted")}


def is_deleted(conn: psycopg.Connection, anchor: str) -> bool | None:
    row = conn.execute("SELECT deleted FROM source_object WHERE anchor = %s", (anchor,)).fetchone()
    return None if row is None else bool(row[0])


def live_count(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT object_type, count(*) FROM source_object WHERE NOT deleted GROUP BY object_type"
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}
