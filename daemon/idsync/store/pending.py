"""Pending exports: computed from desired vs target in SQL, claimed by the exporter, confirmed by import.

One row per (object_type, anchor, kind, member_anchor). A newer computation replaces an older
one (a changed payload starts again with zero attempts); a row whose effect the target space
already shows is deleted — that is the confirmation. `record_result` only notes an export
attempt: a successful call marks the row exported, and the confirming import removes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg

from idsync.model import Quarantined
from idsync.store import quarantine
from idsync.store.errors import StoreError


class StaleEpoch(StoreError):
    """An export claim carries an epoch older than one this store has already seen."""

    def __init__(self, epoch: int, seen: int) -> None:
        self.epoch = epoch
        self.seen = seen
        super().__init__(f"export epoch {epoch} is stale: this store has seen epoch {seen}")


OBJECT_KINDS = ("create", "update", "delete")
MEMBER_KINDS = ("member_add", "member_remove")
# Export order (migration 0003's generated column): users before groups, creates before updates
# before member operations before deletes.
_ORDER = "p.priority, p.id"


@dataclass(frozen=True, slots=True)
class PendingExport:
    """One pending operation, with the target ids it needs resolved through the links.

    `target_id` is the object's Graph id (None for a create); for member operations
    `member_target_id` is the member's Graph id. `waiting_for` names the anchor whose target
    object does not exist yet (the operation cannot run before it does), else None.
    """

    id: int
    object_type: str
    anchor: str
    kind: str
    member_anchor: str
    target_id: str | None
    member_target_id: str | None
    payload: Mapping[str, Any]
    attempts: int
    last_error: str | None
    exported_at: datetime | None
    quarantined: bool
    waiting_for: str | None


_SELECT = (
    "SELECT p.id, p.object_type, p.anchor, p.kind, p.member_anchor,"
    " CASE WHEN p.kind IN ('member_add', 'member_remove') THEN lg.target_id ELSE p.target_id END,"
    " lm.target_id, p.payload, p.attempts, p.last_error, p.exported_at, p.quarantined_at IS NOT NULL,"
    " CASE WHEN p.kind IN ('member_add', 'member_remove') AND lg.target_id IS NULL THEN p.anchor"
    "  WHEN p.kind IN ('member_add', 'member_remove') AND lm.target_id IS NULL THEN p.member_anchor END"
    " FROM pending_export p"
    " LEFT JOIN sync_link lg ON lg.anchor = p.anchor AND p.kind IN ('member_add', 'member_remove')"
    " LEFT JOIN sync_link lm ON lm.anchor = p.member_anchor AND p.member_anchor <> ''"
)


def _op(r: Sequence[Any]) -> PendingExport:
    return PendingExport(
        id=int(r[0]),
        object_type=r[1],
        anchor=r[2],
        kind=r[3],
        member_anchor=r[4],
        target_id=r[5],
        member_target_id=r[6],
        payload=r[7],
        attempts=int(r[8]),
        last_error=r[9],
        exported_at=r[10],
        quarantined=bool(r[11]),
        waiting_for=r[12],
    )


# --- diff ---------------------------------------------------------------------------------------

_OPS = """
CREATE TEMP TABLE IF NOT EXISTS _ops (
    object_type text, anchor text, kind text, member_anchor text, target_id text, payload jsonb
) ON COMMIT DROP;
TRUNCATE _ops;
"""


def diff_objects(conn: psycopg.Connection, deprovision: Mapping[str, str]) -> dict[str, int]:
    """Recompute create/update/delete for the anchors in `_dirty` (see store.desired).

    create: desired, not linked — the full desired attributes (nulls left out).
    update: desired and linked — only the managed attributes whose value differs, each with its
        full desired value; null clears. Absent, null and [] are the same value (Graph reports an
        empty multi-valued attribute as [] and an unset single-valued one as null or not at all).
    delete / disable: linked, no longer desired, per the type's deprovision setting. Only linked
        objects (created, hard- or soft-matched by idsync) are ever deleted; `leave` unlinks.
    """
    conn.execute(_OPS.encode())
    conn.execute(
        "INSERT INTO _ops SELECT d.object_type, d.anchor, 'create', '', NULL, jsonb_strip_nulls(d.attrs)"
        " FROM _dirty x JOIN desired_object d ON d.anchor = x.anchor"
        " WHERE NOT EXISTS (SELECT 1 FROM sync_link l WHERE l.anchor = d.anchor)"
    )
    conn.execute(
        "INSERT INTO _ops SELECT d.object_type, d.anchor, 'update', '', t.id, p.payload"
        " FROM _dirty x JOIN desired_object d ON d.anchor = x.anchor"
        " JOIN sync_link l ON l.anchor = d.anchor"
        " JOIN target_object t ON t.id = l.target_id AND NOT t.deleted"
        " CROSS JOIN LATERAL (SELECT jsonb_object_agg(e.key, e.value) AS payload FROM jsonb_each(d.attrs) e"
        "  WHERE nullif(nullif(e.value, 'null'::jsonb), '[]'::jsonb)"
        "   IS DISTINCT FROM nullif(nullif(t.attrs -> e.key, 'null'::jsonb), '[]'::jsonb)) p"
        " WHERE p.payload IS NOT NULL"
    )
    by_mode: dict[str, list[str]] = {"delete": [], "disable": [], "leave": []}
    for object_type, mode in deprovision.items():
        by_mode[mode].append(object_type)
    orphans = (
        " FROM _dirty x JOIN sync_link l ON l.anchor = x.anchor"
        " JOIN target_object t ON t.id = l.target_id AND NOT t.deleted"
        " WHERE NOT EXISTS (SELECT 1 FROM desired_object d WHERE d.anchor = l.anchor)"
        " AND l.object_type = ANY(%s)"
    )
    conn.execute(
        "INSERT INTO _ops SELECT l.object_type, l.anchor, 'delete', '', t.id, '{}'::jsonb" + orphans,
        (by_mode["delete"],),
    )
    conn.execute(
        "INSERT INTO _ops SELECT l.object_type, l.anchor, 'update', '', t.id, '{\"accountEnabled\": false}'"
        + orphans
        + " AND coalesce(t.attrs -> 'accountEnabled', 'null'::jsonb) <> 'false'::jsonb",
        (by_mode["disable"],),
    )
    left = conn.execute(
        "DELETE FROM sync_link l USING _dirty x WHERE l.anchor = x.anchor AND l.object_type = ANY(%s)"
        " AND NOT EXISTS (SELECT 1 FROM desired_object d WHERE d.anchor = l.anchor)",
        (by_mode["leave"],),
    ).rowcount
    counts = _reconcile(conn, "_dirty", OBJECT_KINDS)
    counts["left"] = left
    return counts


def diff_members(conn: psycopg.Connection) -> dict[str, int]:
    """Recompute member_add / member_remove for the groups in `_dirty_groups`.

    Adds: desired members not in the target group (waiting, if group or member has no target
    object yet). Removes: target members that idsync links to a source anchor and that are no
    longer desired members; members idsync does not know (added in the cloud) are left alone.
    """
    conn.execute(_OPS.encode())
    conn.execute(
        "INSERT INTO _ops SELECT 'group', m.group_anchor, 'member_add', m.member_anchor, NULL, '{}'::jsonb"
        " FROM _dirty_groups g JOIN desired_member m ON m.group_anchor = g.anchor"
        " WHERE NOT EXISTS (SELECT 1 FROM sync_link lg JOIN sync_link lm ON lm.anchor = m.member_anchor"
        "  JOIN target_member tm ON tm.group_id = lg.target_id AND tm.member_id = lm.target_id"
        "  WHERE lg.anchor = m.group_anchor)"
    )
    conn.execute(
        "INSERT INTO _ops SELECT 'group', g.anchor, 'member_remove', lm.anchor, NULL, '{}'::jsonb"
        " FROM _dirty_groups g JOIN desired_object d ON d.anchor = g.anchor"
        " JOIN sync_link lg ON lg.anchor = g.anchor JOIN target_member tm ON tm.group_id = lg.target_id"
        " JOIN sync_link lm ON lm.target_id = tm.member_id"
        " WHERE NOT EXISTS (SELECT 1 FROM desired_member m"
        "  WHERE m.group_anchor = g.anchor AND m.member_anchor = lm.anchor)"
    )
    return _reconcile(conn, "_dirty_groups", MEMBER_KINDS)


def _reconcile(conn: psycopg.Connection, dirty: str, kinds: tuple[str, ...]) -> dict[str, int]:
    """Make the queue rows of the dirty anchors (of these kinds) equal to `_ops`."""
    confirmed = conn.execute(
        f"DELETE FROM pending_export p USING {dirty} x WHERE p.anchor = x.anchor AND p.kind = ANY(%s)"
        " AND NOT EXISTS (SELECT 1 FROM _ops o WHERE o.object_type = p.object_type AND o.anchor = p.anchor"
        "  AND o.kind = p.kind AND o.member_anchor = p.member_anchor)",
        (list(kinds),),
    ).rowcount
    # Same payload: keep attempts and quarantine, but re-arm an exported row (the target was
    # re-imported and still differs, so the export did not land). New payload: a fresh operation.
    written = conn.execute(
        "INSERT INTO pending_export AS p (object_type, anchor, kind, member_anchor, target_id, payload)"
        " SELECT object_type, anchor, kind, member_anchor, target_id, payload FROM _ops"
        " ON CONFLICT (object_type, anchor, kind, member_anchor) DO UPDATE SET"
        " target_id = excluded.target_id, payload = excluded.payload, computed_at = now(),"
        " exported_at = NULL, claimed_epoch = NULL, claimed_by = NULL, claimed_at = NULL,"
        " attempts = CASE WHEN p.payload = excluded.payload THEN p.attempts ELSE 0 END,"
        " last_error = CASE WHEN p.payload = excluded.payload THEN p.last_error END,"
        " not_before = CASE WHEN p.payload = excluded.payload THEN p.not_before END,"
        " quarantined_at = CASE WHEN p.payload = excluded.payload THEN p.quarantined_at END"
        " WHERE p.payload IS DISTINCT FROM excluded.payload OR p.exported_at IS NOT NULL"
        "  OR p.target_id IS DISTINCT FROM excluded.target_id"
    ).rowcount
    return {"confirmed": confirmed, "written": written}


def rearm_unconfirmed(conn: psycopg.Connection, older_than: timedelta) -> int:
    """Exported operations no import has confirmed for this long are exported again."""
    return conn.execute(
        "UPDATE pending_export SET exported_at = NULL, claimed_epoch = NULL, claimed_by = NULL,"
        " claimed_at = NULL WHERE exported_at < now() - %s",
        (older_than,),
    ).rowcount


# --- the exporter's side ------------------------------------------------------------------------


def claim(
    conn: psycopg.Connection,
    *,
    epoch: int,
    node: str,
    limit: int,
    held: bool,
    claim_timeout: timedelta = timedelta(minutes=5),
) -> list[PendingExport]:
    """Claim up to `limit` ready operations for an export batch, in export order.

    Ready: not exported, not quarantined, past its back-off, not claimed by a batch of this epoch
    within `claim_timeout` (a crashed batch's rows come back), and with every target id it needs.
    Nothing is claimed while the deletion guard holds (`held`): the exporter runs nothing at
    all, not a partial batch. Raises StaleEpoch when a newer epoch already claimed from this store.
    """
    if held:
        return []
    row = conn.execute("SELECT value FROM meta WHERE key = 'export_epoch' FOR UPDATE").fetchone()
    seen = int(row[0]) if row else 0
    if epoch < seen:
        raise StaleEpoch(epoch, seen)
    if epoch > seen:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('export_epoch', %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(epoch),),
        )
    rows = conn.execute(
        "WITH ready AS (SELECT p.id FROM pending_export p"
        " LEFT JOIN sync_link lg ON lg.anchor = p.anchor AND p.kind IN ('member_add', 'member_remove')"
        " LEFT JOIN sync_link lm ON lm.anchor = p.member_anchor AND p.member_anchor <> ''"
        " WHERE p.exported_at IS NULL AND p.quarantined_at IS NULL"
        "  AND (p.not_before IS NULL OR p.not_before <= now())"
        "  AND (p.claimed_epoch IS DISTINCT FROM %(epoch)s OR p.claimed_at < now() - %(timeout)s)"
        "  AND (p.kind NOT IN ('member_add', 'member_remove')"
        "   OR (lg.target_id IS NOT NULL AND lm.target_id IS NOT NULL))"
        f" ORDER BY {_ORDER} LIMIT %(limit)s FOR UPDATE OF p SKIP LOCKED)"
        " UPDATE pending_export q SET claimed_epoch = %(epoch)s, claimed_by = %(node)s, claimed_at = now()"
        " FROM ready WHERE q.id = ready.id RETURNING q.id",
        {"epoch": epoch, "node": node, "limit": limit, "timeout": claim_timeout},
    ).fetchall()
    ids = [r[0] for r in rows]
    if not ids:
        return []
    got = conn.execute(_SELECT + f" WHERE p.id = ANY(%s) ORDER BY {_ORDER}", (ids,)).fetchall()
    return [_op(r) for r in got]


Outcome = Literal["ok", "adopted", "retry", "error"]


@dataclass(frozen=True)
class ResultRecorded:
    """What record_result did with the operation."""

    op_id: int
    attempts: int
    quarantined: bool
    gone: bool = False  # the operation was confirmed or dropped meanwhile
    superseded: bool = False  # recomputed while in flight: the new version still has to run


def record_result(
    conn: psycopg.Connection,
    op_id: int,
    outcome: Outcome,
    *,
    epoch: int,
    node: str,
    error: str | None = None,
    http_status: int | None = None,
    request_id: str | None = None,
    target_id: str | None = None,
    max_attempts: int = 5,
    retry_after: timedelta | None = None,
) -> ResultRecorded:
    """Record one export attempt in the journal and on the operation.

    ok / adopted: the call succeeded; the row stays (exported) until the target import confirms it.
    `target_id` (of a create) is journaled; the link forms when the import shows the object.
    retry: a transient failure (throttling); retried after `retry_after`, not counted as an attempt.
    error: counted; after `max_attempts` the operation is quarantined (phase export) with the
    reason, and never blocks the others.
    An operation the sync recomputed while it was in flight (its claim was cleared) is only
    journaled: the result belongs to the old version, and the new one still has to run.
    """
    row = conn.execute(
        "SELECT object_type, anchor, kind, member_anchor, attempts, target_id, claimed_epoch"
        " FROM pending_export WHERE id = %s FOR UPDATE",
        (op_id,),
    ).fetchone()
    if row is None:
        return ResultRecorded(op_id, 0, False, gone=True)
    object_type, anchor, kind, member_anchor, attempts, old_target, claimed_epoch = row
    conn.execute(
        "INSERT INTO export_journal (epoch, node, object_type, anchor, kind, member_anchor, target_id,"
        " request_id, http_status, outcome, error) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            epoch,
            node,
            object_type,
            anchor,
            kind,
            member_anchor,
            target_id or old_target,
            request_id,
            http_status,
            outcome,
            error,
        ),
    )
    if claimed_epoch != epoch:
        return ResultRecorded(op_id, int(attempts), False, superseded=True)
    quarantined = False
    if outcome in ("ok", "adopted"):
        conn.execute(
            "UPDATE pending_export SET exported_at = now(), last_error = NULL, not_before = NULL,"
            " target_id = coalesce(%s, target_id) WHERE id = %s",
            (target_id, op_id),
        )
    elif outcome == "retry":
        conn.execute(
            "UPDATE pending_export SET not_before = now() + %s, last_error = %s, claimed_epoch = NULL"
            " WHERE id = %s",
            (retry_after if retry_after is not None else timedelta(seconds=30), error, op_id),
        )
    else:
        attempts = int(attempts) + 1
        quarantined = attempts >= max_attempts
        backoff = timedelta(seconds=min(3600, 30 * 2 ** (attempts - 1)))
        conn.execute(
            "UPDATE pending_export SET attempts = %s, last_error = %s, not_before = now() + %s,"
            " claimed_epoch = NULL, quarantined_at = CASE WHEN %s THEN now() END WHERE id = %s",
            (attempts, error, backoff, quarantined, op_id),
        )
        if quarantined:
            what = f"{kind} {member_anchor}".strip() if member_anchor else kind
            quarantine.put(
                conn,
                [Quarantined("export", anchor, f"{what} failed {attempts} times: {error}", object_type)],
            )
    return ResultRecorded(op_id, int(attempts), quarantined)


# --- reading the queue (preview, guard, metrics) -----------------------------------------------


def listing(
    conn: psycopg.Connection, *, kinds: Sequence[str] | None = None, errors_only: bool = False
) -> list[PendingExport]:
    """Every pending operation (optionally of some kinds, or only those with errors)."""
    where, params = [], []
    if kinds:
        where.append("p.kind = ANY(%s)")
        params.append(list(kinds))
    if errors_only:
        where.append("(p.last_error IS NOT NULL OR p.quarantined_at IS NOT NULL)")
    sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {_ORDER}"
    return [_op(r) for r in conn.execute(sql, params).fetchall()]


def counts(conn: psycopg.Connection) -> dict[str, int]:
    """Pending operations per kind (quarantined ones counted apart as 'quarantined')."""
    rows = conn.execute(
        "SELECT CASE WHEN quarantined_at IS NOT NULL THEN 'quarantined' ELSE kind END, count(*)"
        " FROM pending_export GROUP BY 1"
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def delete_keys(conn: psycopg.Connection) -> list[str]:
    """The pending deletes as sorted 'object_type:anchor' keys (the deletion guard's set)."""
    rows = conn.execute(
        "SELECT object_type || ':' || anchor FROM pending_export WHERE kind = 'delete'"
        " AND quarantined_at IS NULL ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def fingerprint(keys: Sequence[str]) -> str:
    """Stable fingerprint of a delete set (the same on every node that computes the same set)."""
    h = hashlib.sha256()
    for k in keys:
        h.update(k.encode())
        h.update(b"\n")
    return h.hexdigest()[:32]


def record_hold(conn: psycopg.Connection, fp: str, keys: Sequence[str]) -> None:
    """Remember a held delete set under its fingerprint (sets older than 30 days are forgotten)."""
    conn.execute("DELETE FROM deletion_hold WHERE held_at < now() - interval '30 days'")
    conn.execute(
        "INSERT INTO deletion_hold (fingerprint, keys, deletes) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
        (fp, list(keys), len(keys)),
    )


def approved_superset(conn: psycopg.Connection, keys: Sequence[str], approved: Sequence[str]) -> str | None:
    """The approved fingerprint whose held set contains every key, or None."""
    if not approved:
        return None
    row = conn.execute(
        "SELECT fingerprint FROM deletion_hold WHERE fingerprint = ANY(%s) AND keys @> %s::text[]"
        " ORDER BY held_at DESC LIMIT 1",
        (list(approved), list(keys)),
    ).fetchone()
    return None if row is None else str(row[0])


def holds(conn: psycopg.Connection) -> list[tuple[str, int, datetime]]:
    """Recorded held delete sets, newest first: (fingerprint, deletes, held_at)."""
    rows = conn.execute(
        "SELECT fingerprint, deletes, held_at FROM deletion_hold ORDER BY held_at DESC"
    ).fetchall()
    return [(r[0], int(r[1]), r[2]) for r in rows]
