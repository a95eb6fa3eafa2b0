"""The target space: Entra ID objects as Graph delta reported them, keyed by Graph object id.

The target import writes one delta page per transaction together with the link that continues
it (`watermark`), so a crash resumes at the next page and nothing is applied twice. A round that
starts without a delta link (first import, or a resync after Graph dropped the token) is a *full*
round: it rebuilds membership from scratch and, when it completes, marks every object it did not
see as deleted. Until a full round completes the target space is incomplete (`round_state`), and
nothing may be diffed against it.

`target_object.updated_at` is the last time an import saw the row (what the sweep compares);
`changed_seq` moves only when the row changed, so the sync engine looks only at real changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import psycopg

from idsync.model import ObjectType
from idsync.store import watermarks
from idsync.store.runs import RunCounts

WATERMARK = "target.delta.{}"


@dataclass(frozen=True, slots=True)
class TargetRow:
    """One object of a delta page: its id, the attributes the page carried (flattened names), and
    idsync's anchor when the page said something about it (`anchor_known`)."""

    id: str
    attrs: dict[str, Any]
    anchor: str | None = None
    anchor_known: bool = False


@dataclass(frozen=True)
class TargetPage:
    """What one delta page says about one object type."""

    object_type: ObjectType
    objects: Sequence[TargetRow] = ()
    removed: Sequence[str] = ()
    members_added: Sequence[tuple[str, str]] = ()  # (group id, member id)
    members_removed: Sequence[tuple[str, str]] = ()
    # users: (user id, manager id or None) where the page carried `manager@delta`; None = none
    managers: Sequence[tuple[str, str | None]] = ()


@dataclass(frozen=True)
class DeltaPosition:
    """Where the import of one object type stands (stored as a watermark).

    `link` is a nextLink (`complete` False: a round is under way) or a deltaLink (`complete`
    True). `full` says the round under way started from nothing; `round_start` is the database
    time it started (the sweep deletes rows not seen since). `select` is the attribute set the
    links were made for, `server` the Graph base URL.
    """

    link: str
    complete: bool
    full: bool
    select: str
    server: str
    round_start: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def load_position(conn: psycopg.Connection, object_type: ObjectType) -> DeltaPosition | None:
    """The stored position of `object_type`'s delta import, if any."""
    wm = watermarks.get(conn, WATERMARK.format(object_type))
    if wm is None:
        return None
    d = orjson.loads(wm.value)
    return DeltaPosition(
        link=d["link"],
        complete=bool(d["complete"]),
        full=bool(d["full"]),
        select=str(d.get("select", "")),
        server=wm.server or "",
        round_start=d.get("round_start"),
    )


def save_position(conn: psycopg.Connection, object_type: ObjectType, pos: DeltaPosition) -> None:
    """Store the position in the caller's transaction (with the page it follows)."""
    value = orjson.dumps(
        {
            "link": pos.link,
            "complete": pos.complete,
            "full": pos.full,
            "select": pos.select,
            "round_start": pos.round_start,
        }
    )
    watermarks.put(conn, WATERMARK.format(object_type), value, pos.server)


def round_state(conn: psycopg.Connection) -> dict[str, str]:
    """Per object type: "complete", "incremental" (a delta round under way; the space is whole),
    "full" (a full round under way: incomplete, do not diff) or "never" (never imported)."""
    out: dict[str, str] = {}
    for t in ("user", "group"):
        pos = load_position(conn, t)  # type: ignore[arg-type]
        if pos is None:
            out[t] = "never"
        elif pos.complete:
            out[t] = "complete"
        else:
            out[t] = "full" if pos.full else "incremental"
    return out


def begin_full_round(conn: psycopg.Connection, object_type: ObjectType) -> str:
    """Start a full round: membership of `object_type` groups is rebuilt from the round's pages.

    Returns the database time the round starts (as ISO text), for `sweep_unseen`.
    """
    if object_type == "group":
        conn.execute(
            "DELETE FROM target_member m USING target_object g"
            " WHERE g.id = m.group_id AND g.object_type = 'group'"
        )
    else:
        conn.execute("DELETE FROM target_manager")  # every user's manager comes again with the round
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    ts: datetime = row[0]
    return ts.isoformat()


def apply_page(conn: psycopg.Connection, page: TargetPage) -> RunCounts:
    """Apply one delta page: upsert objects (attributes merged: a page may carry only some),
    mark removed ones deleted, and merge `members@delta` into target_member."""
    counts = RunCounts()
    with conn.cursor() as cur:
        if page.objects:
            by_id: dict[str, TargetRow] = {}
            for r in page.objects:
                prev = by_id.get(r.id)
                if prev is not None:  # the same object twice in a page: merge, later wins
                    r = TargetRow(
                        r.id,
                        {**prev.attrs, **r.attrs},
                        r.anchor if r.anchor_known else prev.anchor,
                        r.anchor_known or prev.anchor_known,
                    )
                by_id[r.id] = r
            existing = {
                r[0] for r in cur.execute("SELECT id FROM target_object WHERE id = ANY(%s)", (list(by_id),))
            }
            new = [r for i, r in by_id.items() if i not in existing]
            if new:  # new objects (most of a first import) take the fast path
                with cur.copy("COPY target_object (id, object_type, anchor, attrs) FROM STDIN") as cp:
                    for r in new:
                        attrs = {k: v for k, v in r.attrs.items() if v is not None}  # null = absent
                        cp.write_row((r.id, page.object_type, r.anchor, orjson.dumps(attrs).decode()))
                counts.added += len(new)
            row = cur.execute("SELECT last_value FROM change_seq").fetchone()
            floor = int(row[0]) if row else 0
            for known in (True, False):
                rows = [r for i, r in by_id.items() if r.anchor_known is known and i in existing]
                if rows:
                    _upsert(cur, page.object_type, rows, known, floor, counts)
        if page.removed:
            counts.deleted = _delete(cur, page.removed)
        touched: set[str] = set()
        if page.members_added:
            added = cur.execute(
                "WITH i AS (INSERT INTO target_member (group_id, member_id)"
                " SELECT * FROM unnest(%s::text[], %s::text[]) ON CONFLICT DO NOTHING RETURNING group_id)"
                " SELECT DISTINCT group_id FROM i",
                ([g for g, _ in page.members_added], [m for _, m in page.members_added]),
            ).fetchall()
            touched.update(r[0] for r in added)
        if page.members_removed:
            gone = cur.execute(
                "WITH d AS (DELETE FROM target_member m USING unnest(%s::text[], %s::text[]) AS x(g, mm)"
                " WHERE m.group_id = x.g AND m.member_id = x.mm RETURNING m.group_id)"
                " SELECT DISTINCT group_id FROM d",
                ([g for g, _ in page.members_removed], [m for _, m in page.members_removed]),
            ).fetchall()
            touched.update(r[0] for r in gone)
        touched.update(_apply_managers(cur, page.managers))
        _touch(cur, touched)
    return counts


def _apply_managers(cur: psycopg.Cursor[Any], managers: Sequence[tuple[str, str | None]]) -> set[str]:
    """Record each user's manager as `manager@delta` gave it; returns the users whose changed."""
    if not managers:
        return set()
    last = dict(managers)  # the same user twice in a page: the later entry wins
    setting = [(u, m) for u, m in last.items() if m is not None]
    changed: set[str] = set()
    if setting:
        rows = cur.execute(
            "INSERT INTO target_manager AS t (user_id, manager_id)"
            " SELECT * FROM unnest(%s::text[], %s::text[])"
            " ON CONFLICT (user_id) DO UPDATE SET manager_id = excluded.manager_id"
            " WHERE t.manager_id <> excluded.manager_id RETURNING user_id",
            ([u for u, _ in setting], [m for _, m in setting]),
        ).fetchall()
        changed.update(r[0] for r in rows)
    clearing = [u for u, m in last.items() if m is None]
    if clearing:
        rows = cur.execute(
            "DELETE FROM target_manager WHERE user_id = ANY(%s) RETURNING user_id", (clearing,)
        ).fetchall()
        changed.update(r[0] for r in rows)
    return changed


def manager(conn: psycopg.Connection, user_id: str) -> str | None:
    """The target id of a user's manager, as the import last saw it."""
    row = conn.execute("SELECT manager_id FROM target_manager WHERE user_id = %s", (user_id,)).fetchone()
    return None if row is None else str(row[0])


_UPSERT = """
WITH i AS (
    SELECT * FROM unnest(%(ids)s::text[], %(attrs)s::jsonb[], %(anchors)s::text[]) AS i(id, attrs, anchor)
),
u AS (
    INSERT INTO target_object AS t (id, object_type, anchor, attrs)
    SELECT id, %(type)s, anchor, jsonb_strip_nulls(attrs) FROM i
    ON CONFLICT (id) DO UPDATE SET attrs = jsonb_strip_nulls(t.attrs || excluded.attrs), anchor = {anchor},
        deleted = false,
        changed_seq = CASE WHEN jsonb_strip_nulls(t.attrs || excluded.attrs) <> t.attrs OR t.deleted
            OR {anchor_changed}
            THEN nextval('change_seq') ELSE t.changed_seq END,
        updated_at = now()
    RETURNING xmax = 0 AS inserted, changed_seq
)
SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted AND changed_seq > %(floor)s),
    count(*) FILTER (WHERE NOT inserted AND changed_seq <= %(floor)s) FROM u
"""


def _upsert(
    cur: psycopg.Cursor[Any],
    object_type: str,
    rows: list[TargetRow],
    known: bool,
    floor: int,
    counts: RunCounts,
) -> None:
    """Insert or merge rows; `known`: the rows say what the anchor is (else it stays as it was)."""
    sql = _UPSERT.format(
        anchor="excluded.anchor" if known else "t.anchor",
        anchor_changed="excluded.anchor IS DISTINCT FROM t.anchor" if known else "false",
    )
    row = cur.execute(
        sql.encode(),
        {
            "ids": [r.id for r in rows],
            "attrs": [orjson.dumps(r.attrs).decode() for r in rows],
            "anchors": [r.anchor for r in rows],
            "type": object_type,
            "floor": floor,
        },
    ).fetchone()
    assert row is not None
    counts.added += int(row[0])
    counts.updated += int(row[1])
    counts.unchanged += int(row[2])


def _delete(cur: psycopg.Cursor[Any], ids: Iterable[str]) -> int:
    ids = list(ids)
    rows = cur.execute(
        "UPDATE target_object SET deleted = true, changed_seq = nextval('change_seq'), updated_at = now()"
        " WHERE id = ANY(%s) AND NOT deleted RETURNING id",
        (ids,),
    ).fetchall()
    # Graph takes a deleted object out of its groups without always saying so in the group delta.
    groups = cur.execute(
        "DELETE FROM target_member WHERE member_id = ANY(%s) OR group_id = ANY(%s) RETURNING group_id",
        (ids, ids),
    ).fetchall()
    # A deleted user has no manager, and is no one's manager (its reports are re-checked).
    reports = cur.execute(
        "DELETE FROM target_manager WHERE user_id = ANY(%s) OR manager_id = ANY(%s) RETURNING user_id",
        (ids, ids),
    ).fetchall()
    _touch(cur, ({r[0] for r in groups} | {r[0] for r in reports}) - set(ids))
    return len(rows)


def _touch(cur: psycopg.Cursor[Any], ids: set[str]) -> None:
    if ids:
        cur.execute(
            "UPDATE target_object SET changed_seq = nextval('change_seq') WHERE id = ANY(%s)", (list(ids),)
        )


def sweep_unseen(conn: psycopg.Connection, object_type: ObjectType, round_start: str) -> int:
    """End of a full round: objects of the type not seen since `round_start` are gone from Entra ID.

    Every group is touched too (its membership was rebuilt), so the sync engine re-checks them.
    """
    with conn.cursor() as cur:
        ids = [
            r[0]
            for r in cur.execute(
                "SELECT id FROM target_object WHERE object_type = %s AND NOT deleted AND updated_at < %s",
                (object_type, round_start),
            )
        ]
        n = _delete(cur, ids) if ids else 0
        if object_type == "group":
            cur.execute(
                "UPDATE target_object SET changed_seq = nextval('change_seq')"
                " WHERE object_type = 'group' AND NOT deleted"
            )
    return n


# --- reads for the exporter and for tests ----------------------------------------------------
@dataclass(frozen=True)
class TargetObject:
    """A row of the target space."""

    id: str
    object_type: ObjectType
    anchor: str | None
    attrs: dict[str, Any]
    deleted: bool


def get(conn: psycopg.Connection, target_id: str) -> TargetObject | None:
    """One target object by Graph id."""
    row = conn.execute(
        "SELECT id, object_type, anchor, attrs, deleted FROM target_object WHERE id = %s", (target_id,)
    ).fetchone()
    return TargetObject(*row) if row else None


def by_anchor(conn: psycopg.Connection, object_type: ObjectType, anchor: str) -> list[TargetObject]:
    """Live target objects carrying `anchor` (more than one means a duplicate in the tenant)."""
    rows = conn.execute(
        "SELECT id, object_type, anchor, attrs, deleted FROM target_object"
        " WHERE object_type = %s AND anchor = %s AND NOT deleted ORDER BY id",
        (object_type, anchor),
    ).fetchall()
    return [TargetObject(*r) for r in rows]


def duplicate_anchors(conn: psycopg.Connection, object_type: ObjectType) -> dict[str, list[str]]:
    """Anchors that more than one live object carries (a duplicate in the tenant), with their ids."""
    rows = conn.execute(
        "SELECT anchor, array_agg(id ORDER BY id) FROM target_object"
        " WHERE object_type = %s AND anchor IS NOT NULL AND NOT deleted"
        " GROUP BY anchor HAVING count(*) > 1",
        (object_type,),
    ).fetchall()
    return {str(a): list(ids) for a, ids in rows}


def mark_deleted(conn: psycopg.Connection, ids: Iterable[str]) -> int:
    """Record objects idsync deleted itself (the next delta says so too; this is at once)."""
    with conn.cursor() as cur:
        return _delete(cur, ids)


def members(conn: psycopg.Connection, group_id: str) -> set[str]:
    """Member ids of a group as imported."""
    rows = conn.execute("SELECT member_id FROM target_member WHERE group_id = %s", (group_id,))
    return {r[0] for r in rows}


def counts(conn: psycopg.Connection) -> dict[str, int]:
    """Live objects per type and member links (for reports and tests)."""
    out = {
        r[0]: int(r[1])
        for r in conn.execute(
            "SELECT object_type, count(*) FROM target_object WHERE NOT deleted GROUP BY object_type"
        )
    }
    row = conn.execute("SELECT count(*) FROM target_member").fetchone()
    out["member"] = int(row[0]) if row else 0
    return out
