"""Desired state: what the rules say the target should hold, written in bulk by the sync engine.

The engine streams changed source objects in pages (`changed_source`), evaluates the rules in
Python, COPYs the verdicts into a temporary table (`stage`), and `apply_staged` turns them into
set-based changes of `desired_object`. The anchors whose desired state changed land in the
temporary table `_dirty` (objects to diff) and groups whose membership may have changed in
`_dirty_groups`. Everything runs in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

_TEMP = """
CREATE TEMP TABLE IF NOT EXISTS _desired_in (
    anchor text PRIMARY KEY, object_type text NOT NULL, in_scope boolean NOT NULL,
    target_anchor text, attrs jsonb, manager_ref text
) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS _dirty (anchor text PRIMARY KEY) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS _dirty_groups (anchor text PRIMARY KEY) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS _presence (anchor text PRIMARY KEY) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS _applied (anchor text NOT NULL, inserted boolean) ON COMMIT DROP;
CREATE TEMP TABLE IF NOT EXISTS _dirty_managers (anchor text PRIMARY KEY) ON COMMIT DROP;
"""


# A source object as the engine reads it: (anchor, object_type, dn, attrs as JSON text — lower-case
# name → values, deleted, changed_seq). The text is parsed where the rules are evaluated, which
# may be a worker process (idsync.sync.pages).
RawRow = tuple[str, str, str, str, bool, int]
# A verdict ready for `stage`: (anchor, object_type, in_scope, target_anchor, attrs as JSON text
# with sorted keys or None, manager reference or None).
Staged = tuple[str, str, bool, str | None, str | None, str | None]


@dataclass(frozen=True)
class DesiredChanges:
    added: int
    updated: int
    removed: int


def prepare(conn: psycopg.Connection) -> None:
    """Create the engine's temporary tables for this transaction, and switch JIT off for it.

    The sync's statements are index lookups driven by a small dirty set, but anti-joins with
    poor row estimates cross jit_above_cost, and compiling them took ~250 ms of a 1,000-object
    delta sync (measured on 100,000 users) — longer than running them.
    """
    conn.execute("SET LOCAL jit = off")
    conn.execute(_TEMP.encode())


def stable_high_waters(conn: psycopg.Connection) -> tuple[int, int]:
    """The highest changed_seq of the source and the target space that no writer can undercut.

    A sequence value is taken when a row is written but becomes visible only at commit, so a
    plain max() could pass over a row an import is still committing (and the watermark would
    skip it for good). Taking SHARE locks waits for the writers in flight and holds new ones
    back only for the two max() reads; run it in its own short transaction, before the sync's.
    """
    conn.execute("LOCK TABLE source_object, target_object IN SHARE MODE")
    row = conn.execute(
        "SELECT (SELECT coalesce(max(changed_seq), 0) FROM source_object),"
        " (SELECT coalesce(max(changed_seq), 0) FROM target_object)"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def changed_source(
    conn: psycopg.Connection, after: int, upto: int, page: int = 2000
) -> Iterator[list[RawRow]]:
    """Pages of source objects with after < changed_seq <= upto, in changed_seq order (keyset)."""
    last = after
    while True:
        rows = conn.execute(
            "SELECT anchor, object_type, dn, attrs::text, deleted, changed_seq FROM source_object"
            " WHERE changed_seq > %s AND changed_seq <= %s ORDER BY changed_seq LIMIT %s",
            (last, upto, page),
        ).fetchall()
        if not rows:
            return
        yield rows  # type: ignore[misc]  # psycopg's rows are tuples of these types
        last = int(rows[-1][5])


def count_changed(conn: psycopg.Connection, after: int, upto: int) -> int:
    """How many source objects `changed_source(after, upto)` will return."""
    row = conn.execute(
        "SELECT count(*) FROM source_object WHERE changed_seq > %s AND changed_seq <= %s", (after, upto)
    ).fetchone()
    return int(row[0]) if row else 0


def stage(conn: psycopg.Connection, rows: Iterable[Staged]) -> int:
    """COPY a page of verdicts into `_desired_in`; returns how many."""
    n = 0
    with (
        conn.cursor() as cur,
        cur.copy(
            "COPY _desired_in (anchor, object_type, in_scope, target_anchor, attrs, manager_ref) FROM STDIN"
        ) as cp,
    ):
        for row in rows:
            cp.write_row(row)
            n += 1
    return n


_REMEMBER = (
    # A group's desired members go with it (migration 0010 dropped the foreign key that did this:
    # its check cost 11 s of a first sync of 1,000,000 users and 2,000,000 memberships).
    " gone_members AS (DELETE FROM desired_member m USING del WHERE m.group_anchor = del.anchor),"
    " kept AS (INSERT INTO desired_gone (anchor, object_type, target_anchor)"
    "  SELECT anchor, object_type, target_anchor FROM del WHERE target_anchor IS NOT NULL"
    "  ON CONFLICT (anchor) DO UPDATE SET object_type = excluded.object_type,"
    "  target_anchor = excluded.target_anchor, removed_at = now())"
    " INSERT INTO _applied SELECT anchor, NULL FROM del"
)


def apply_staged(conn: psycopg.Connection, rules_hash: str, *, full: bool) -> DesiredChanges:
    """Make desired_object agree with the staged verdicts; mark what changed as dirty.

    Rows whose attributes are unchanged keep their changed_seq and are not diffed again (unless
    the target changed). With `full`, desired rows whose source object is gone are removed too.
    """
    conn.execute("ANALYZE _desired_in")
    # What changed stays in the database (_applied: inserted true/false, NULL = removed): a full
    # sync changes every row, and holding a million anchors in Python cost ~500 MB.
    conn.execute("TRUNCATE _applied")
    # An UPDATE of the rows that changed and an INSERT (in key order) of the new ones, not
    # INSERT … ON CONFLICT, whose speculative insertion is slow in bulk (see store.diff._reconcile);
    # only the sync writes desired_object.
    conn.execute(
        "WITH u AS (UPDATE desired_object d SET object_type = i.object_type,"
        " target_anchor = i.target_anchor, attrs = i.attrs, rules_hash = %(hash)s,"
        " changed_seq = nextval('change_seq'), updated_at = now()"
        " FROM _desired_in i WHERE i.in_scope AND d.anchor = i.anchor"
        "  AND (d.attrs IS DISTINCT FROM i.attrs OR d.target_anchor IS DISTINCT FROM i.target_anchor"
        "   OR d.object_type <> i.object_type)"
        " RETURNING d.anchor),"
        " n AS (INSERT INTO desired_object (anchor, object_type, target_anchor, attrs, rules_hash)"
        " SELECT i.anchor, i.object_type, i.target_anchor, i.attrs, %(hash)s FROM _desired_in i"
        " WHERE i.in_scope AND NOT EXISTS (SELECT 1 FROM desired_object d WHERE d.anchor = i.anchor)"
        " ORDER BY i.anchor RETURNING anchor)"
        " INSERT INTO _applied SELECT anchor, false FROM u UNION ALL SELECT anchor, true FROM n",
        {"hash": rules_hash},
    )
    # What leaves the desired state is remembered with its target anchor (desired_gone), so that
    # the link step can still find and deprovision an object no link pointed to yet.
    conn.execute(
        "WITH del AS (DELETE FROM desired_object d USING _desired_in i WHERE d.anchor = i.anchor"
        "  AND NOT i.in_scope RETURNING d.anchor, d.object_type, d.target_anchor)," + _REMEMBER
    )
    if full:
        conn.execute(
            "WITH del AS (DELETE FROM desired_object d WHERE NOT EXISTS (SELECT 1 FROM source_object s"
            " WHERE s.anchor = d.anchor AND NOT s.deleted)"
            " RETURNING d.anchor, d.object_type, d.target_anchor)," + _REMEMBER
        )
    conn.execute("DELETE FROM desired_gone WHERE anchor IN (SELECT anchor FROM _applied WHERE inserted)")
    conn.execute("DELETE FROM desired_gone WHERE removed_at < now() - interval '7 days'")
    conn.execute("INSERT INTO _dirty (anchor) SELECT anchor FROM _applied ON CONFLICT DO NOTHING")
    conn.execute(
        "INSERT INTO _presence (anchor) SELECT anchor FROM _applied WHERE inserted IS NOT FALSE"
        " ON CONFLICT DO NOTHING"
    )
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted),"
        " count(*) FILTER (WHERE inserted IS NULL) FROM _applied"
    ).fetchone()
    added, updated, removed = (int(x) for x in row) if row else (0, 0, 0)
    return DesiredChanges(added=added, updated=updated, removed=removed)


def mark_dependents(conn: psycopg.Connection) -> None:
    """Groups to re-resolve: staged groups, and groups with a member that entered or left scope."""
    conn.execute(
        "INSERT INTO _dirty_groups (anchor) SELECT anchor FROM _desired_in WHERE object_type = 'group'"
        " ON CONFLICT DO NOTHING"
    )
    conn.execute(
        "INSERT INTO _dirty_groups (anchor) SELECT DISTINCT m.group_anchor FROM source_member m"
        " JOIN _presence p ON p.anchor = m.member_ref ON CONFLICT DO NOTHING"
    )


def mark_all(conn: psycopg.Connection) -> None:
    """A full sync diffs every desired or linked object and every desired group."""
    conn.execute(
        "INSERT INTO _dirty (anchor) SELECT anchor FROM desired_object"
        " UNION SELECT anchor FROM sync_link ON CONFLICT DO NOTHING"
    )
    conn.execute(
        "INSERT INTO _dirty_groups (anchor) SELECT anchor FROM desired_object WHERE object_type = 'group'"
        " ON CONFLICT DO NOTHING"
    )


def forget_dirty(conn: psycopg.Connection, object_types: list[str]) -> None:
    """Leave objects of these types out of this cycle's diff (their target import is incomplete;
    the engine owes them a full diff once it completes)."""
    conn.execute(
        "DELETE FROM _dirty x WHERE EXISTS (SELECT 1 FROM desired_object d"
        "  WHERE d.anchor = x.anchor AND d.object_type = ANY(%(t)s))"
        " OR EXISTS (SELECT 1 FROM sync_link l WHERE l.anchor = x.anchor AND l.object_type = ANY(%(t)s))",
        {"t": object_types},
    )
    if "group" in object_types:
        conn.execute("TRUNCATE _dirty_groups")


def analyze(conn: psycopg.Connection) -> None:
    """Give the planner the real size of the dirty sets (temp tables have no statistics)."""
    conn.execute("ANALYZE _dirty")
    conn.execute("ANALYZE _dirty_groups")


def refresh_members(conn: psycopg.Connection, member_types: list[str]) -> None:
    """Recompute desired_member of the dirty groups: source members that are themselves desired.

    A member that is in scope but whose target object does not exist yet is kept here; its
    member_add waits in the queue until the member's target object exists. Members out of scope
    (or not resolved to an anchor yet, `dn:` references) are not desired members.
    """
    conn.execute("ANALYZE _dirty_groups")
    conn.execute(
        "DELETE FROM desired_member m USING _dirty_groups g WHERE m.group_anchor = g.anchor"
        " AND NOT EXISTS (SELECT 1 FROM source_member s JOIN desired_object dm ON dm.anchor = s.member_ref"
        "  WHERE s.group_anchor = m.group_anchor AND s.member_ref = m.member_anchor)"
    )
    conn.execute(
        "DELETE FROM desired_member m USING _dirty_groups g, desired_object d"
        " WHERE m.group_anchor = g.anchor AND d.anchor = g.anchor AND NOT (d.object_type = ANY(%s))",
        (member_types,),
    )
    # The new memberships, in key order, not INSERT … ON CONFLICT (see store.diff._reconcile):
    # 2,000,000 took 39 s that way, 21 s this way.
    conn.execute(
        "INSERT INTO desired_member (group_anchor, member_anchor)"
        " SELECT s.group_anchor, s.member_ref FROM _dirty_groups g"
        " JOIN desired_object d ON d.anchor = g.anchor AND d.object_type = ANY(%s)"
        " JOIN source_member s ON s.group_anchor = g.anchor"
        " JOIN desired_object dm ON dm.anchor = s.member_ref"
        " WHERE NOT EXISTS (SELECT 1 FROM desired_member x WHERE x.group_anchor = s.group_anchor"
        "  AND x.member_anchor = s.member_ref)"
        " ORDER BY 1, 2",
        (member_types,),
    )


def refresh_managers(conn: psycopg.Connection, *, full: bool) -> None:
    """Make desired_manager agree with the staged users' manager references, and resolve them.

    A reference (the manager's DN) resolves to the anchor of the desired user with that DN; one
    naming nothing in scope resolves to NULL: no manager. A resolved reference follows its
    manager: it is resolved again only when the user's own value changes, or when the manager
    left (or, unresolved, may have entered) the desired state — so a renamed manager, whose old
    DN the user's row may still carry (AD rewrites a DN-valued link on read, and DirSync does not
    report the user), stays the manager. Users whose resolved manager changed land in
    `_dirty_managers`. Run after apply_staged (desired_object is current).
    """
    changed = conn.execute(
        "INSERT INTO desired_manager AS m (anchor, manager_ref)"
        " SELECT i.anchor, i.manager_ref FROM _desired_in i JOIN desired_object d ON d.anchor = i.anchor"
        " WHERE i.in_scope AND i.object_type = 'user' AND i.manager_ref IS NOT NULL"
        " ON CONFLICT (anchor) DO UPDATE SET manager_ref = excluded.manager_ref, manager_anchor = NULL"
        " WHERE m.manager_ref IS DISTINCT FROM excluded.manager_ref RETURNING m.anchor"
    ).fetchall()
    cleared = conn.execute(
        "DELETE FROM desired_manager m USING _desired_in i WHERE m.anchor = i.anchor"
        " AND i.in_scope AND i.manager_ref IS NULL RETURNING m.anchor"
    ).fetchall()
    # Which references to resolve (again): new or changed ones, those whose manager is no longer
    # desired, and unresolved ones whose DN names an object this sync staged.
    candidates = (
        "m.manager_anchor IS NULL OR NOT EXISTS (SELECT 1 FROM desired_object d"
        "  WHERE d.anchor = m.manager_anchor AND d.object_type = 'user') OR m.anchor = ANY(%(changed)s)"
        if full
        # A union of index lookups, so that a small delta sync does not scan every user's manager.
        else "m.anchor IN (SELECT unnest(%(changed)s::text[])"
        " UNION SELECT c.anchor FROM _presence p JOIN desired_manager c ON c.manager_anchor = p.anchor"
        " UNION SELECT c.anchor FROM _desired_in i JOIN source_object s ON s.anchor = i.anchor"
        "  JOIN desired_manager c ON lower(c.manager_ref) = lower(s.dn) AND c.manager_anchor IS NULL"
        "  WHERE i.in_scope AND i.object_type = 'user')"
    )
    # A join, not a lookup per reference: a hash join for a full sync, index lookups for a few.
    resolved = conn.execute(
        f"WITH c AS (SELECT m.anchor, m.manager_ref FROM desired_manager m WHERE {candidates}),"
        " r AS (SELECT c.anchor, min(s.anchor) AS found FROM c LEFT JOIN (source_object s"
        "  JOIN desired_object d ON d.anchor = s.anchor AND d.object_type = 'user')"
        "  ON lower(s.dn) = lower(c.manager_ref) AND s.anchor <> c.anchor GROUP BY c.anchor)"
        " UPDATE desired_manager m SET manager_anchor = r.found FROM r WHERE m.anchor = r.anchor"
        "  AND m.manager_anchor IS DISTINCT FROM r.found RETURNING m.anchor",
        {"changed": [r[0] for r in changed]},
    ).fetchall()
    with conn.cursor() as cur, cur.copy("COPY _dirty_managers (anchor) FROM STDIN") as cp:
        for a in {r[0] for r in (*changed, *cleared, *resolved)}:
            cp.write_row((a,))


def drop_managers(conn: psycopg.Connection) -> None:
    """The rules have no manager flow: no desired managers, and no manager operations queued."""
    conn.execute("DELETE FROM desired_manager")
    conn.execute("DELETE FROM pending_export WHERE kind IN ('manager_set', 'manager_remove')")


def count(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute("SELECT object_type, count(*) FROM desired_object GROUP BY object_type").fetchall()
    return {r[0]: int(r[1]) for r in rows}


def get(conn: psycopg.Connection, anchor: str) -> dict[str, Any] | None:
    """The desired attributes of one object, or None when it is not desired."""
    row = conn.execute("SELECT attrs FROM desired_object WHERE anchor = %s", (anchor,)).fetchone()
    return None if row is None else dict(row[0])


def members(conn: psycopg.Connection, group_anchor: str) -> list[str]:
    rows = conn.execute(
        "SELECT member_anchor FROM desired_member WHERE group_anchor = %s ORDER BY member_anchor",
        (group_anchor,),
    ).fetchall()
    return [r[0] for r in rows]


def get_meta(conn: psycopg.Connection, key: str) -> str | None:
    """A setting of this instance from `meta` (e.g. the rules hash of the last full sync)."""
    row = conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_meta(conn: psycopg.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (%s, %s)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def attrs_of(conn: psycopg.Connection, anchors: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Desired attributes of several objects by anchor (for names in previews)."""
    rows = conn.execute(
        "SELECT anchor, attrs FROM desired_object WHERE anchor = ANY(%s)", (list(anchors),)
    ).fetchall()
    return {r[0]: dict(r[1]) for r in rows}


def groups_by_dn(conn: psycopg.Connection, dns: Iterable[str]) -> dict[str, tuple[str, list[str]]]:
    """Live source groups whose DN (compared case-insensitively) is one of `dns`: lower-case DN →
    (anchor, its direct member references: anchors, or `dn:<dn>` when not resolved yet)."""
    wanted = [d.lower() for d in dns]
    if not wanted:
        return {}
    rows = conn.execute(
        "SELECT g.anchor, lower(g.dn),"
        " coalesce(array_agg(m.member_ref) FILTER (WHERE m.member_ref IS NOT NULL), '{}')"
        " FROM source_object g LEFT JOIN source_member m ON m.group_anchor = g.anchor"
        " WHERE lower(g.dn) = ANY(%s) AND g.object_type = 'group' AND NOT g.deleted GROUP BY g.anchor, g.dn",
        (wanted,),
    ).fetchall()
    return {r[1]: (r[0], list(r[2])) for r in rows}


def source_rows(
    conn: psycopg.Connection, anchors: Iterable[str], after: int, upto: int, page: int = 2000
) -> Iterator[list[RawRow]]:
    """Pages of the source objects among `anchors` that `changed_source(after, upto)` does not
    return (a cycle re-evaluates them for another reason: a pilot group's membership changed)."""
    todo = sorted(set(anchors))
    for i in range(0, len(todo), page):
        rows = conn.execute(
            "SELECT anchor, object_type, dn, attrs::text, deleted, changed_seq FROM source_object"
            " WHERE anchor = ANY(%s) AND NOT (changed_seq > %s AND changed_seq <= %s)",
            (todo[i : i + page], after, upto),
        ).fetchall()
        if rows:
            yield rows  # type: ignore[misc]
