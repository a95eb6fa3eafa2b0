"""Pending exports: the queue the exporter claims from and reports to (store.diff fills it).

One row per (object_type, anchor, kind, member_anchor). A newer computation replaces an older
one (a changed payload starts again with zero attempts); a row whose effect the target space
already shows is deleted — that is the confirmation. `record_result` only notes an export
attempt: a successful call marks the row exported, and the confirming import removes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg

from idsync.model import Quarantined
from idsync.store import quarantine, sets
from idsync.store.errors import StoreError


class StaleEpoch(StoreError):
    """An export claim carries an epoch older than one this store has already seen."""

    def __init__(self, epoch: int, seen: int) -> None:
        self.epoch = epoch
        self.seen = seen
        super().__init__(f"export epoch {epoch} is stale: this store has seen epoch {seen}")


OBJECT_KINDS = ("create", "update", "delete")
MEMBER_KINDS = ("member_add", "member_remove")
# A user's manager (PUT / DELETE /users/{id}/manager/$ref): member_anchor is the manager's anchor
# for manager_set, '' for manager_remove (it needs only the user's target id).
MANAGER_KINDS = ("manager_set", "manager_remove")
# Kinds whose object's target id comes from its link (it may not exist when the diff runs), and
# kinds that also need the target id of `member_anchor`; they wait until those ids exist.
_OWNER_LINKED = "p.kind IN ('member_add', 'member_remove', 'manager_set', 'manager_remove')"
_MEMBER_LINKED = "p.kind IN ('member_add', 'member_remove', 'manager_set')"


def waiting_sql(p: str) -> str:
    """SQL: the operation `p` (a table alias) waits for a link — a kind that needs its object's or
    its member's target id, and that object has no link yet (the `waiting` column of migration
    0010, which lets the claim skip such rows without looking at them)."""
    return (
        f"(({p}.kind IN ('member_add', 'member_remove', 'manager_set', 'manager_remove')"
        f"   AND NOT EXISTS (SELECT 1 FROM sync_link wl WHERE wl.anchor = {p}.anchor))"
        f" OR ({p}.kind IN ('member_add', 'member_remove', 'manager_set')"
        f"   AND NOT EXISTS (SELECT 1 FROM sync_link wm WHERE wm.anchor = {p}.member_anchor)))"
    )


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
    priority: int = 0  # the export order (users before groups, creates … deletes)
    target: str = "graph"  # where it is written: 'graph' (Entra ID) or 'ad' (writeback, migration 0009)


_SELECT = (
    "SELECT p.id, p.object_type, p.anchor, p.kind, p.member_anchor,"
    f" CASE WHEN {_OWNER_LINKED} THEN lg.target_id ELSE p.target_id END,"
    " lm.target_id, p.payload, p.attempts, p.last_error, p.exported_at, p.quarantined_at IS NOT NULL,"
    f" CASE WHEN {_OWNER_LINKED} AND lg.target_id IS NULL THEN p.anchor"
    f"  WHEN {_MEMBER_LINKED} AND lm.target_id IS NULL THEN p.member_anchor END,"
    " p.priority, p.target"
    " FROM pending_export p"
    f" LEFT JOIN sync_link lg ON lg.anchor = p.anchor AND {_OWNER_LINKED}"
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
        priority=int(r[13]),
        target=r[14],
    )


# --- the exporter's side ------------------------------------------------------------------------


# Fair sharing of the write quota (issue 16): the export order above holds within a lane, and a
# batch takes an equal share from every lane that has ready operations, so a backlog of one kind
# (200,000 member adds, or a rename touching every user) cannot starve the others. Lanes by the
# `priority` column of migration 0003 (0008 puts manager operations with member ones): creates,
# updates, member and manager operations, deletes.
LANES: tuple[tuple[int, int], ...] = ((0, 1), (2, 3), (4, 7), (8, 9))


def fair_shares(take: Callable[[tuple[int, int], int], list[int]], limit: int) -> list[int]:
    """Up to `limit` ids, an equal share from each lane (`take(lane, n)` claims up to n of it);
    what a lane cannot use goes to the others."""
    got: list[int] = []
    open_lanes = list(LANES)
    while len(got) < limit and open_lanes:
        share = max(1, (limit - len(got)) // len(open_lanes))
        for lane in list(open_lanes):
            n = min(share, limit - len(got))
            if n <= 0:
                break
            ids = take(lane, n)
            got += ids
            if len(ids) < n:
                open_lanes.remove(lane)
    return got


def claim(
    conn: psycopg.Connection,
    *,
    epoch: int,
    node: str,
    limit: int,
    held: bool,
    claim_timeout: timedelta = timedelta(minutes=5),
) -> list[PendingExport]:
    """Claim up to `limit` ready operations for an export batch: a fair share from every lane
    (`fair_shares`), in export order within each.

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

    def claim_lane(lane: tuple[int, int], n: int) -> list[int]:
        lo, hi = lane
        rows = conn.execute(
            "WITH ready AS (SELECT p.id FROM pending_export p"
            f" LEFT JOIN sync_link lg ON lg.anchor = p.anchor AND {_OWNER_LINKED}"
            " LEFT JOIN sync_link lm ON lm.anchor = p.member_anchor AND p.member_anchor <> ''"
            " WHERE p.exported_at IS NULL AND p.quarantined_at IS NULL AND NOT p.waiting"
            "  AND p.target = 'graph' AND p.priority BETWEEN %(lo)s AND %(hi)s"
            "  AND (p.not_before IS NULL OR p.not_before <= now())"
            "  AND (p.claimed_epoch IS DISTINCT FROM %(epoch)s OR p.claimed_at < now() - %(timeout)s)"
            f"  AND (NOT {_OWNER_LINKED} OR lg.target_id IS NOT NULL)"
            f"  AND (NOT {_MEMBER_LINKED} OR lm.target_id IS NOT NULL)"
            f" ORDER BY {_ORDER} LIMIT %(limit)s FOR UPDATE OF p SKIP LOCKED)"
            " UPDATE pending_export q"
            " SET claimed_epoch = %(epoch)s, claimed_by = %(node)s, claimed_at = now()"
            " FROM ready WHERE q.id = ready.id RETURNING q.id",
            {"epoch": epoch, "node": node, "limit": n, "timeout": claim_timeout, "lo": lo, "hi": hi},
        ).fetchall()
        return [r[0] for r in rows]

    ids = fair_shares(claim_lane, limit)
    if not ids:
        return []
    got = conn.execute(_SELECT + f" WHERE p.id = ANY(%s) ORDER BY {_ORDER}", (ids,)).fetchall()
    return [_op(r) for r in got]


# Above this many new links, release_waiting checks every waiting row instead.
RELEASE_SCAN = 20_000


def release_waiting(conn: psycopg.Connection) -> int:
    """Clear `waiting` on the operations whose missing link this sync formed (the anchors in the
    temporary table `_linked`, see store.links.link); returns how many are ready now.

    Found through their object (the anchor index), and through their member: the source
    memberships and the desired managers that name a newly linked anchor lead to the operations
    by their unique key, so a few new links never scan the queue.
    """
    if sets.more_than(conn, "_linked", RELEASE_SCAN):
        # Many new links (a bulk confirmation): one pass over the waiting rows is cheaper than
        # finding them link by link (22 s of 27 for 2,000,000 member adds at once).
        return conn.execute(
            f"UPDATE pending_export p SET waiting = false WHERE p.waiting AND NOT {waiting_sql('p')}"
        ).rowcount
    n = conn.execute(
        "UPDATE pending_export p SET waiting = false WHERE p.waiting AND p.id IN ("
        " SELECT q.id FROM _linked x JOIN pending_export q ON q.anchor = x.anchor"
        " UNION SELECT q.id FROM _linked x JOIN source_member m ON m.member_ref = x.anchor"
        "  JOIN pending_export q ON q.object_type = 'group' AND q.anchor = m.group_anchor"
        "   AND q.kind = 'member_add' AND q.member_anchor = x.anchor"
        " UNION SELECT q.id FROM _linked x JOIN desired_manager m ON m.manager_anchor = x.anchor"
        "  JOIN pending_export q ON q.object_type = 'user' AND q.anchor = m.anchor"
        "   AND q.kind = 'manager_set' AND q.member_anchor = x.anchor)"
        f" AND NOT {waiting_sql('p')}"
    ).rowcount
    return n


def claim_member_adds(
    conn: psycopg.Connection,
    *,
    epoch: int,
    node: str,
    extra: Mapping[str, int],
    creating: Mapping[str, int],
    limit: int | None = None,
    claim_timeout: timedelta = timedelta(minutes=5),
) -> list[PendingExport]:
    """Claim more ready member adds of groups already in the batch, so their binds fill up.

    `extra`: group anchor -> how many more adds of that (linked) group; `creating`: group anchor ->
    how many adds to bind into the group's create (the group has no link yet; the member must
    have one). Same readiness and claim rules as `claim` — except that a row given back by
    `hold_member_adds` (a delay without an error) is taken at once: its group's bind is being
    filled now — in id order per group, at most `limit` in all. Call it in the claim's
    transaction, after `claim` (which checked the epoch).
    """
    want = [(a, n, False) for a, n in extra.items() if n > 0] + [
        (a, n, True) for a, n in creating.items() if n > 0
    ]
    if limit is not None:
        trimmed, left = [], limit
        for a, n, c in want:
            if left <= 0:
                break
            trimmed.append((a, min(n, left), c))
            left -= min(n, left)
        want = trimmed
    if not want:
        return []
    rows = conn.execute(
        "WITH want AS (SELECT * FROM unnest(%(anchors)s::text[], %(ns)s::int[], %(creating)s::bool[])"
        "  AS w(anchor, n, creating)),"
        " cand AS (SELECT c.id, w.n, row_number() OVER (PARTITION BY w.anchor ORDER BY c.id) AS k"
        "  FROM want w, LATERAL (SELECT p.id FROM pending_export p"
        "   JOIN sync_link lm ON lm.anchor = p.member_anchor"
        "   LEFT JOIN sync_link lg ON lg.anchor = p.anchor"
        "   WHERE p.anchor = w.anchor AND p.object_type = 'group' AND p.kind = 'member_add'"
        "    AND p.exported_at IS NULL AND p.quarantined_at IS NULL"
        "    AND (p.not_before IS NULL OR p.not_before <= now() OR p.last_error IS NULL)"
        "    AND (p.claimed_epoch IS DISTINCT FROM %(epoch)s OR p.claimed_at < now() - %(timeout)s)"
        "    AND (lg.target_id IS NULL) = w.creating"
        "   ORDER BY p.id LIMIT %(most)s FOR UPDATE OF p SKIP LOCKED) c)"
        " UPDATE pending_export q SET claimed_epoch = %(epoch)s, claimed_by = %(node)s, claimed_at = now()"
        " FROM cand WHERE q.id = cand.id AND cand.k <= cand.n RETURNING q.id",
        {
            "anchors": [w[0] for w in want],
            "ns": [w[1] for w in want],
            "creating": [w[2] for w in want],
            "most": max(w[1] for w in want),
            "epoch": epoch,
            "node": node,
            "timeout": claim_timeout,
        },
    ).fetchall()
    ids = [r[0] for r in rows]
    if not ids:
        return []
    got = conn.execute(_SELECT + f" WHERE p.id = ANY(%s) ORDER BY {_ORDER}", (ids,)).fetchall()
    return [_op(r) for r in got]


def hold_member_adds(
    conn: psycopg.Connection,
    tails: Mapping[str, Sequence[int]],
    *,
    window: timedelta,
    delay: timedelta,
) -> set[int]:
    """Give back claimed member adds (`tails`: group anchor -> op ids of a bind of fewer than 20)
    when more members of the group are about to be ready: a member add waits on a member whose
    create was exported within `window` and is not confirmed yet. They come back after `delay`,
    with the others; no attempt, no journal entry. Returns the ids given back."""
    if not tails:
        return set()
    rows = conn.execute(
        "SELECT DISTINCT p.anchor FROM pending_export p"
        " JOIN pending_export c ON c.anchor = p.member_anchor AND c.kind = 'create'"
        " LEFT JOIN sync_link lm ON lm.anchor = p.member_anchor"
        " WHERE p.anchor = ANY(%s) AND p.kind = 'member_add' AND p.quarantined_at IS NULL"
        "  AND lm.anchor IS NULL AND c.quarantined_at IS NULL AND c.exported_at > now() - %s",
        (list(tails), window),
    ).fetchall()
    ids = [i for r in rows for i in tails[r[0]]]
    if not ids:
        return set()
    conn.execute(
        "UPDATE pending_export SET claimed_epoch = NULL, claimed_by = NULL, claimed_at = NULL,"
        " not_before = now() + %s WHERE id = ANY(%s)",
        (delay, ids),
    )
    return set(ids)


Outcome = Literal["ok", "adopted", "retry", "error"]


@dataclass(frozen=True)
class ResultRecorded:
    """What record_result did with the operation."""

    op_id: int
    attempts: int
    quarantined: bool
    gone: bool = False  # the operation was confirmed or dropped meanwhile
    superseded: bool = False  # recomputed while in flight: the new version still has to run
    waited: bool = False  # record_wait re-armed it without counting an attempt


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


def record_wait(
    conn: psycopg.Connection,
    op_id: int,
    *,
    epoch: int,
    node: str,
    error: str | None,
    http_status: int | None = None,
    request_id: str | None = None,
    max_wait: timedelta = timedelta(minutes=15),
) -> ResultRecorded:
    """A member add Graph answered "does not exist" for: Graph's replication lag, most likely.

    While the newer of the group's and the member's links is younger than `max_wait`, the
    operation waits: re-armed after half that age (2 to 60 s), not counted as an attempt. Older
    than that, the object is not lagging but gone or wrong: an error like any other (counted,
    quarantined after the usual attempts), its message saying how long it was not visible.
    """
    row = conn.execute(
        "SELECT extract(epoch FROM now() - greatest(lg.linked_at, lm.linked_at))::float8"
        " FROM pending_export p LEFT JOIN sync_link lg ON lg.anchor = p.anchor"
        " LEFT JOIN sync_link lm ON lm.anchor = p.member_anchor WHERE p.id = %s",
        (op_id,),
    ).fetchone()
    if row is None:
        return ResultRecorded(op_id, 0, False, gone=True)
    age = row[0]
    common: dict[str, Any] = {
        "epoch": epoch,
        "node": node,
        "http_status": http_status,
        "request_id": request_id,
    }
    if age is None or age >= max_wait.total_seconds():
        since = "no link" if age is None else f"linked {age:.0f} s ago"
        return record_result(conn, op_id, "error", error=f"{error}; still not visible ({since})", **common)
    wait = timedelta(seconds=min(60.0, max(2.0, age / 2)))
    rec = record_result(conn, op_id, "retry", error=error, retry_after=wait, **common)
    return replace(rec, waited=True)


# --- reading the queue (preview, guard, metrics) -----------------------------------------------


def listing(
    conn: psycopg.Connection,
    *,
    kinds: Sequence[str] | None = None,
    errors_only: bool = False,
    after: tuple[int, int] | None = None,
    limit: int | None = None,
    anchor: str | None = None,
) -> list[PendingExport]:
    """Pending operations in export order (optionally of some kinds, or only those with errors,
    or only those of one object's `anchor`).

    Page through a large queue with `limit` and `after` = (priority, id) of the last row seen.
    """
    where: list[str] = []
    params: list[Any] = []
    if anchor is not None:
        where.append("p.anchor = %s")
        params.append(anchor)
    if kinds:
        where.append("p.kind = ANY(%s)")
        params.append(list(kinds))
    if errors_only:
        where.append("(p.last_error IS NOT NULL OR p.quarantined_at IS NOT NULL)")
    if after is not None:
        where.append("(p.priority, p.id) > (%s, %s)")
        params.extend(after)
    sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {_ORDER}"
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    return [_op(r) for r in conn.execute(sql, params).fetchall()]


def status_counts(conn: psycopg.Connection) -> dict[tuple[str, str, str], int]:
    """(kind, object_type, state) → how many; state is ready, waiting, exported, retrying or
    quarantined (the summary of `idsync pending`, counted in SQL however long the queue)."""
    rows = conn.execute(
        "SELECT p.kind, p.object_type, CASE WHEN p.quarantined_at IS NOT NULL THEN 'quarantined'"
        f"  WHEN {_OWNER_LINKED} AND lg.target_id IS NULL THEN 'waiting'"
        f"  WHEN {_MEMBER_LINKED} AND lm.target_id IS NULL THEN 'waiting'"
        "  WHEN p.exported_at IS NOT NULL THEN 'exported'"
        "  WHEN p.last_error IS NOT NULL THEN 'retrying' ELSE 'ready' END, count(*)"
        " FROM pending_export p"
        f" LEFT JOIN sync_link lg ON lg.anchor = p.anchor AND {_OWNER_LINKED}"
        " LEFT JOIN sync_link lm ON lm.anchor = p.member_anchor AND p.member_anchor <> ''"
        " GROUP BY 1, 2, 3"
    ).fetchall()
    return {(r[0], r[1], r[2]): int(r[3]) for r in rows}


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


def recent_delete_keys(conn: psycopg.Connection, window_seconds: float) -> list[str]:
    """Deletes exported in the last `window_seconds`, as 'object_type:anchor' keys."""
    rows = conn.execute(
        "SELECT DISTINCT object_type || ':' || anchor FROM export_journal WHERE kind = 'delete'"
        " AND outcome IN ('ok', 'adopted') AND at > now() - make_interval(secs => %s)",
        (window_seconds,),
    ).fetchall()
    return [r[0] for r in rows]


def approved_keys(conn: psycopg.Connection, approved: Sequence[str]) -> set[str]:
    """Every key of the held sets an operator approved."""
    if not approved:
        return set()
    rows = conn.execute(
        "SELECT DISTINCT unnest(keys) FROM deletion_hold WHERE fingerprint = ANY(%s)", (list(approved),)
    ).fetchall()
    return {r[0] for r in rows}


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
