"""The diff: desired state vs target space, written as pending exports (all set-based SQL).

Works on the anchors the engine marked dirty (`_dirty`, `_dirty_groups`, see store.desired) and
makes their queue rows equal to what they should be now: new operations appear, changed ones are
replaced, and operations whose effect the target space already shows are deleted — the
confirmation by import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
import psycopg

from idsync.model import Quarantined
from idsync.store import quarantine, sets
from idsync.store.pending import MANAGER_KINDS, MEMBER_KINDS, OBJECT_KINDS, waiting_sql

# An exported operation the next import shows did not take (the target still differs, or no
# import confirmed it in time) is exported again — but only this many times in all: a value Graph
# normalises or ignores would otherwise be re-exported forever. Then it is quarantined.
UNEQUAL_LIMIT = 5
UNEQUAL = "exported, but the target still differs"
UNCONFIRMED = "exported, but no import confirmed it"


@dataclass(frozen=True)
class Unequal:
    """An operation quarantined because its exports kept not taking."""

    object_type: str
    anchor: str
    kind: str
    attempts: int
    reason: str


_UNEQUAL = "CREATE TEMP TABLE IF NOT EXISTS _unequal (id bigint PRIMARY KEY) ON COMMIT DROP"
_OPS = """
CREATE TEMP TABLE IF NOT EXISTS _ops (
    object_type text, anchor text, kind text, member_anchor text, target_id text, payload jsonb
) ON COMMIT DROP;
TRUNCATE _ops;
"""


# Quarantine phase of desired objects Entra Connect synchronizes: idsync leaves them alone.
MANAGED = "managed"
# Graph keeps these of a user formerly synced by Entra Connect (onPremisesSyncEnabled false)
# read-only: "For a cloud-only user previously synced from on-premises Active Directory, these
# properties are read-only in Microsoft Graph" (docs-contrib api-reference/v1.0/resources/user.md,
# onPremisesExtensionAttributes). A taken-over user's update leaves them out.
READ_ONLY_AFTER_SYNC = "onPremisesExtensionAttributes."


def diff_objects(
    conn: psycopg.Connection,
    deprovision: Mapping[str, str],
    unequal_limit: int = UNEQUAL_LIMIT,
    anchor_attributes: Mapping[str, str] | None = None,
    *,
    settle: timedelta = timedelta(0),
    soft_match: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Recompute create/update/delete for the anchors in `_dirty` (see store.desired).

    create: desired, not linked — the full desired attributes (nulls left out).
    update: desired and linked — only the managed attributes whose value differs, each with its
        full desired value; null clears. Absent, null and [] are the same value (Graph reports an
        empty multi-valued attribute as [] and an unset single-valued one as null or not at all).
    delete / disable: linked, no longer desired, per the type's deprovision setting. Only linked
        objects (created, hard- or soft-matched by idsync) are ever deleted; `leave` unlinks.
    Entra Connect's objects (`onPremisesSyncEnabled` true) are never written: a desired object
    whose anchor one of them carries gets no create, but a `managed` quarantine entry saying so
    (`anchor_attributes`: type → its anchor attribute). A user Entra Connect synced once
    (`onPremisesSyncEnabled` false) is taken over without its read-only attributes. The same
    goes for one an Entra Connect object matches by a value a create would collide on
    (`soft_match`: type → the soft-match attribute; a user's userPrincipalName always).
    """
    conn.execute(_OPS.encode())
    managed = _entra_connect_twins(conn, anchor_attributes or {}, soft_match or {})
    conn.execute(
        "INSERT INTO _ops SELECT d.object_type, d.anchor, 'create', '', NULL, jsonb_strip_nulls(d.attrs)"
        " FROM _dirty x JOIN desired_object d ON d.anchor = x.anchor"
        " WHERE NOT EXISTS (SELECT 1 FROM sync_link l WHERE l.anchor = d.anchor)"
        "  AND NOT d.anchor = ANY(%s)",
        (list(managed),),
    )
    conn.execute(
        "INSERT INTO _ops SELECT d.object_type, d.anchor, 'update', '', t.id, p.payload"
        " FROM _dirty x JOIN desired_object d ON d.anchor = x.anchor"
        " JOIN sync_link l ON l.anchor = d.anchor"
        " JOIN target_object t ON t.id = l.target_id AND NOT t.deleted"
        " CROSS JOIN LATERAL (SELECT jsonb_object_agg(e.key, e.value) AS payload FROM jsonb_each(d.attrs) e"
        "  WHERE nullif(nullif(e.value, 'null'::jsonb), '[]'::jsonb)"
        "   IS DISTINCT FROM nullif(nullif(t.attrs -> e.key, 'null'::jsonb), '[]'::jsonb)"
        "   AND NOT (coalesce(t.attrs -> 'onPremisesSyncEnabled' = 'false'::jsonb, false)"
        "    AND starts_with(e.key, %s))) p"
        " WHERE p.payload IS NOT NULL",
        (READ_ONLY_AFTER_SYNC,),
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
    counts = _reconcile(conn, "_dirty", OBJECT_KINDS, unequal_limit, settle)
    counts["left"] = left
    return counts


def _entra_connect_twins(
    conn: psycopg.Connection, anchor_attributes: Mapping[str, str], soft_match: Mapping[str, str]
) -> set[str]:
    """The dirty, unlinked desired objects whose anchor an Entra Connect object carries
    (`onPremisesSyncEnabled` true: Graph refuses to write it, docs-contrib
    api-reference/v1.0/resources/user.md), or that one matches by a unique value: the
    soft-match attribute (link() never adopts Connect's objects) and a user's userPrincipalName
    (unique in the tenant: the create could only conflict). Each gets a `managed` quarantine
    entry naming the object, and no create; the other dirty anchors lose theirs."""
    rows: list[tuple[str, str, str, str, str, str]] = []
    # The candidates first: a delta sync of linked objects has none, and then no query looks for
    # twins at all (they cost 0.7 s at 1,000,000 target objects: no index on a user's UPN).
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _unlinked (anchor text PRIMARY KEY) ON COMMIT DROP")
    conn.execute("TRUNCATE _unlinked")
    unlinked = conn.execute(
        "INSERT INTO _unlinked SELECT x.anchor FROM _dirty x"
        " WHERE EXISTS (SELECT 1 FROM desired_object d WHERE d.anchor = x.anchor)"
        " AND NOT EXISTS (SELECT 1 FROM sync_link l WHERE l.anchor = x.anchor)"
    ).rowcount
    conn.execute("ANALYZE _unlinked")
    twin = (
        "SELECT d.anchor, d.object_type, min(t.id), min(coalesce(t.attrs ->> 'userPrincipalName',"
        "  t.attrs ->> 'displayName', t.id)), min(s.dn), %(how)s"
        " FROM _unlinked x JOIN desired_object d ON d.anchor = x.anchor AND d.object_type = %(t)s"
        " JOIN target_object t ON t.object_type = d.object_type AND NOT t.deleted"
        "  AND t.attrs -> 'onPremisesSyncEnabled' = 'true'::jsonb AND {match}"
        " LEFT JOIN source_object s ON s.anchor = d.anchor"
        " GROUP BY d.anchor, d.object_type"
    )
    for object_type, attribute in anchor_attributes.items() if unlinked else ():
        rows += conn.execute(
            twin.format(match="t.attrs ->> %(a)s = d.target_anchor"),
            {"t": object_type, "a": attribute, "how": ""},
        ).fetchall()
    unique = {t: {a} for t, a in soft_match.items()}
    unique.setdefault("user", set()).add("userPrincipalName")
    found = {r[0] for r in rows}
    for object_type, attributes in unique.items() if unlinked else ():
        for attribute in sorted(attributes):
            got = conn.execute(
                twin.format(match="lower(t.attrs ->> %(a)s) = lower(d.attrs ->> %(a)s)"),
                {"t": object_type, "a": attribute, "how": attribute},
            ).fetchall()
            rows += [r for r in got if r[0] not in found]
            found |= {r[0] for r in got}
    conn.execute(
        f"DELETE FROM quarantine WHERE phase = %s AND {sets.among(conn, 'key', '_dirty')}"
        " AND NOT key = ANY(%s)",
        (MANAGED, list(found)),
    )
    quarantine.put(
        conn,
        [
            Quarantined(
                MANAGED,
                anchor,
                f"Entra Connect synchronizes {name} ({tid}, onPremisesSyncEnabled)"
                + (f", which has this object's {how}" if how else "")
                + ": idsync never links, matches or writes it"
                + (", and creates nothing beside it" if how else "")
                + "; to move it to idsync, stop Entra Connect syncing it (see 'Migrating from Entra"
                " Connect')",
                object_type,
                dn,
            )
            for anchor, object_type, tid, name, dn, how in rows
        ],
    )
    return found


def diff_members(
    conn: psycopg.Connection, unequal_limit: int = UNEQUAL_LIMIT, *, settle: timedelta = timedelta(0)
) -> dict[str, int]:
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
    return _reconcile(conn, "_dirty_groups", MEMBER_KINDS, unequal_limit, settle)


def diff_managers(
    conn: psycopg.Connection, unequal_limit: int = UNEQUAL_LIMIT, *, settle: timedelta = timedelta(0)
) -> dict[str, int]:
    """Recompute manager_set / manager_remove for the dirty users (`_dirty`, `_dirty_managers`).

    Set: a desired user whose resolved manager is not its target manager (waiting, if user or
    manager has no target object yet); member_anchor is the manager's anchor, so a changed
    manager replaces the operation. Remove: a linked, desired user with no desired manager whose
    target user has one. A PUT replaces a manager, so a change needs no remove.
    """
    conn.execute(_OPS.encode())
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS _dirty_users (anchor text PRIMARY KEY) ON COMMIT DROP;"
        " TRUNCATE _dirty_users;"
        " INSERT INTO _dirty_users SELECT anchor FROM _dirty UNION SELECT anchor FROM _dirty_managers"
    )
    conn.execute(
        "INSERT INTO _ops SELECT 'user', m.anchor, 'manager_set', m.manager_anchor, NULL, '{}'::jsonb"
        " FROM _dirty_users x JOIN desired_manager m ON m.anchor = x.anchor"
        " WHERE m.manager_anchor IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM sync_link lu JOIN sync_link lm ON lm.anchor = m.manager_anchor"
        "  JOIN target_manager tm ON tm.user_id = lu.target_id AND tm.manager_id = lm.target_id"
        "  WHERE lu.anchor = m.anchor)"
    )
    conn.execute(
        "INSERT INTO _ops SELECT 'user', d.anchor, 'manager_remove', '', NULL, '{}'::jsonb"
        " FROM _dirty_users x JOIN desired_object d ON d.anchor = x.anchor AND d.object_type = 'user'"
        " JOIN sync_link lu ON lu.anchor = d.anchor JOIN target_manager tm ON tm.user_id = lu.target_id"
        " WHERE NOT EXISTS (SELECT 1 FROM desired_manager m WHERE m.anchor = d.anchor"
        "  AND m.manager_anchor IS NOT NULL)"
    )
    return _reconcile(conn, "_dirty_users", MANAGER_KINDS, unequal_limit, settle)


def _reconcile(
    conn: psycopg.Connection,
    dirty: str,
    kinds: tuple[str, ...],
    limit: int = UNEQUAL_LIMIT,
    settle: timedelta = timedelta(0),
) -> dict[str, int]:
    """Make the queue rows of the dirty anchors (of these kinds) equal to `_ops`.

    An exported row recomputed with the same payload more than `settle` after its export did not
    take: it is re-armed, counting an attempt, and quarantined on the `limit`-th (see
    `quarantine_unequal`). Within `settle` it is left waiting: Graph's replication lag can keep a
    write out of the next delta rounds, and counting those would quarantine writes that landed.
    """
    confirmed = conn.execute(
        f"DELETE FROM pending_export p WHERE {sets.among(conn, 'p.anchor', dirty)}"
        " AND p.kind = ANY(%s)"
        " AND NOT EXISTS (SELECT 1 FROM _ops o WHERE o.object_type = p.object_type AND o.anchor = p.anchor"
        "  AND o.kind = p.kind AND o.member_anchor = p.member_anchor)",
        (list(kinds),),
    ).rowcount
    # Same payload: keep attempts and quarantine, but re-arm an exported row (the target was
    # re-imported and still differs, so the export did not land) and count that as an attempt —
    # unless it was exported less than `settle` ago: then only note that an import saw it
    # differ (computed_at after exported_at); rearm_settled re-arms it once the window is over.
    # New payload: a fresh operation.
    settling = (
        "(p.payload = o.payload AND p.target_id IS NOT DISTINCT FROM o.target_id"
        " AND p.exported_at >= now() - %(settle)s)"
    )
    conn.execute(_UNEQUAL)
    conn.execute("ANALYZE _ops")  # a full sync's million operations join differently from a few
    # An UPDATE of the rows that exist and an INSERT of the others, not INSERT … ON CONFLICT:
    # the speculative insertion cost 19 of 50 s for the 3,000,000 operations of a first sync of
    # 1,000,000 users. Only the sync writes Graph operations, one transaction at a time, so no
    # other writer can insert a key between the two (were one to, the unique key would fail the
    # sync, which runs again).
    row = conn.execute(
        "WITH upd AS (UPDATE pending_export p SET"
        f" target_id = o.target_id, payload = o.payload, computed_at = now(), waiting = {waiting_sql('o')},"
        f" exported_at = CASE WHEN {settling} THEN p.exported_at END,"
        f" claimed_epoch = CASE WHEN {settling} THEN p.claimed_epoch END,"
        f" claimed_by = CASE WHEN {settling} THEN p.claimed_by END,"
        f" claimed_at = CASE WHEN {settling} THEN p.claimed_at END,"
        f" attempts = CASE WHEN {settling} THEN p.attempts WHEN p.payload <> o.payload THEN 0"
        "  WHEN p.exported_at IS NOT NULL THEN p.attempts + 1 ELSE p.attempts END,"
        f" unequal_exports = CASE WHEN {settling} THEN p.unequal_exports"
        "  WHEN p.payload <> o.payload THEN 0"
        "  WHEN p.exported_at IS NOT NULL THEN p.unequal_exports + 1 ELSE p.unequal_exports END,"
        f" last_error = CASE WHEN {settling} THEN p.last_error WHEN p.payload <> o.payload THEN NULL"
        "  WHEN p.exported_at IS NOT NULL THEN %(unequal)s ELSE p.last_error END,"
        " not_before = CASE WHEN p.payload = o.payload THEN p.not_before END,"
        f" quarantined_at = CASE WHEN {settling} THEN p.quarantined_at"
        "  WHEN p.payload <> o.payload THEN NULL"
        "  WHEN p.exported_at IS NOT NULL AND p.unequal_exports + 1 >= %(limit)s THEN now()"
        "  ELSE p.quarantined_at END"
        " FROM _ops o WHERE p.object_type = o.object_type AND p.anchor = o.anchor AND p.kind = o.kind"
        "  AND p.member_anchor = o.member_anchor"
        "  AND (p.payload IS DISTINCT FROM o.payload OR p.exported_at IS NOT NULL"
        "   OR p.target_id IS DISTINCT FROM o.target_id)"
        " RETURNING p.id, p.quarantined_at IS NOT NULL AND p.last_error = %(unequal)s AS q,"
        "  p.exported_at IS NULL AS armed),"
        # New operations, in key order (the key's index then grows at its end, not at random).
        " ins AS (INSERT INTO pending_export (object_type, anchor, kind, member_anchor, target_id, payload,"
        "  waiting)"
        " SELECT o.object_type, o.anchor, o.kind, o.member_anchor, o.target_id, o.payload,"
        f" {waiting_sql('o')}"
        " FROM _ops o WHERE NOT EXISTS (SELECT 1 FROM pending_export p WHERE p.object_type = o.object_type"
        "  AND p.anchor = o.anchor AND p.kind = o.kind AND p.member_anchor = o.member_anchor)"
        " ORDER BY o.object_type, o.anchor, o.kind, o.member_anchor RETURNING id),"
        " w AS (SELECT id, q, armed FROM upd UNION ALL SELECT id, false, true FROM ins),"
        # The rows this statement quarantined, for quarantine_unequal (no scan of the queue).
        " u AS (INSERT INTO _unequal SELECT id FROM w WHERE q ON CONFLICT DO NOTHING)"
        " SELECT count(*) FILTER (WHERE armed) FROM w",
        {"unequal": UNEQUAL, "limit": limit, "settle": settle},
    ).fetchone()
    written = int(row[0]) if row else 0
    return {"confirmed": confirmed, "written": written}


def rearm_settled(conn: psycopg.Connection, settle: timedelta, limit: int = UNEQUAL_LIMIT) -> int:
    """Exported operations an import showed still differing within their settle window (see
    `_reconcile`) are, once the window is over, exported again, counting an export that did not
    take (quarantined on the `limit`-th, see `quarantine_unequal`)."""
    conn.execute(_UNEQUAL)
    row = conn.execute(
        "WITH w AS (UPDATE pending_export SET exported_at = NULL, claimed_epoch = NULL, claimed_by = NULL,"
        " claimed_at = NULL, attempts = attempts + 1, unequal_exports = unequal_exports + 1,"
        " last_error = %(unequal)s,"
        " quarantined_at = CASE WHEN unequal_exports + 1 >= %(limit)s THEN now() END"
        " WHERE exported_at < now() - %(settle)s AND computed_at > exported_at"
        " RETURNING id, quarantined_at IS NOT NULL AS q),"
        " u AS (INSERT INTO _unequal SELECT id FROM w WHERE q ON CONFLICT DO NOTHING)"
        " SELECT count(*) FROM w",
        {"unequal": UNEQUAL, "limit": limit, "settle": settle},
    ).fetchone()
    return int(row[0]) if row else 0


def rearm_unconfirmed(conn: psycopg.Connection, older_than: timedelta, limit: int = UNEQUAL_LIMIT) -> int:
    """Exported operations no import has confirmed for this long are exported again (counting
    an attempt; quarantined on the `limit`-th, see `quarantine_unequal`)."""
    conn.execute(_UNEQUAL)
    row = conn.execute(
        "WITH w AS (UPDATE pending_export SET exported_at = NULL, claimed_epoch = NULL, claimed_by = NULL,"
        " claimed_at = NULL, attempts = attempts + 1, unequal_exports = unequal_exports + 1,"
        " last_error = %(unconfirmed)s,"
        " quarantined_at = CASE WHEN unequal_exports + 1 >= %(limit)s THEN now() END"
        " WHERE exported_at < now() - %(older)s RETURNING id, quarantined_at IS NOT NULL AS q),"
        " u AS (INSERT INTO _unequal SELECT id FROM w WHERE q ON CONFLICT DO NOTHING)"
        " SELECT count(*) FROM w",
        {"older": older_than, "unconfirmed": UNCONFIRMED, "limit": limit},
    ).fetchone()
    return int(row[0]) if row else 0


def quarantine_unequal(conn: psycopg.Connection) -> list[Unequal]:
    """Give the operations this transaction quarantined for not taking their reason (what Graph
    holds against what idsync writes) and a quarantine entry; returns them.

    Run after the diff and `rearm_unconfirmed`, in the same transaction (they note the rows).
    """
    conn.execute(_UNEQUAL)
    rows = conn.execute(
        "SELECT p.id, p.object_type, p.anchor, p.kind, p.member_anchor, p.payload, p.unequal_exports,"
        " p.last_error,"
        " t.attrs FROM _unequal x JOIN pending_export p ON p.id = x.id"
        " LEFT JOIN target_object t ON t.id = p.target_id ORDER BY p.id"
    ).fetchall()
    conn.execute("TRUNCATE _unequal")
    out: list[Unequal] = []
    for op_id, object_type, anchor, kind, member, payload, attempts, why, target in rows:
        what = f"{kind} {member}".strip()
        reason = (
            f"{what} {why} after {attempts} exports"
            + _differs(payload, target or {})
            + (
                "; quarantined: Graph normalises or ignores the value (write what Graph keeps, e.g."
                " its format, in the rule; `idsync quarantine retry` to try again)"
            )
        )
        conn.execute("UPDATE pending_export SET last_error = %s WHERE id = %s", (reason, op_id))
        out.append(Unequal(object_type, anchor, kind, int(attempts), reason))
    quarantine.put(conn, [Quarantined("export", u.anchor, u.reason, u.object_type) for u in out])
    return out


def _differs(payload: Mapping[str, Any], target: Mapping[str, Any]) -> str:
    """': Graph holds a = x where idsync writes y, …' for the attributes that still differ."""
    diffs: Sequence[str] = [
        f"{k} = {_show(target.get(k))} where idsync writes {_show(v)}"
        for k, v in sorted(payload.items())
        if target.get(k) != v
    ]
    return (": Graph holds " + ", ".join(diffs)) if diffs else ""


def _show(v: Any) -> str:
    return "∅" if v is None else orjson.dumps(v).decode()
