"""`idsync preview DN`: one object through the pipeline, without exporting (Entra Connect's Preview).

Source attributes → each rule's result (the evaluator's own trace, so it cannot disagree with the
sync) → the desired state now and as the last sync left it → the link and the target object as
the last target import saw it → the operations the next sync would queue for it, next to those
already queued and its quarantine entries. Nothing is written.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import orjson
import psycopg

from idsync.store import desired, inspect, pending, quarantine
from idsync.store.db import Store
from idsync.sync.engine import pilot_scopes
from idsync.sync.errors import EvaluationError
from idsync.sync.evaluate import Evaluator, Step
from idsync.sync.preview import Change, PreviewItem, describe
from idsync.sync.rules import Rules
from idsync.sync.tenant import STORE_KEY as TENANT_KEY
from idsync.sync.tenant import TenantDomains


class NotFound(LookupError):
    """No source object has this anchor or DN in the node's source space."""

    def __init__(self, ident: str) -> None:
        self.ident = ident
        super().__init__(
            f"{ident}: no such object in this node's source space (anchor or DN; is it imported?)"
        )


@dataclass(frozen=True)
class Operation:
    """An operation the next sync would queue for the object (or a link it would form)."""

    kind: str  # create | update | delete | member_add | member_remove | manager_set | manager_remove | …
    target_id: str | None
    changes: tuple[Change, ...] = ()
    member: str = ""  # member operations: the member's name
    note: str = ""


@dataclass(frozen=True)
class Explanation:
    """One object through the pipeline."""

    anchor: str
    object_type: str
    dn: str
    name: str
    source_deleted: bool
    source: dict[str, list[str]]
    steps: tuple[Step, ...]
    in_scope: bool | None  # None: the rules failed for it (see error)
    error: str | None
    notice: str | None
    desired: dict[str, Any] | None  # what the rules give now
    last_desired: dict[str, Any] | None  # what the last sync stored
    link: str  # a sentence: linked (how) to id, would hard-match id, not linked
    target_id: str | None
    target: dict[str, Any] | None
    operations: tuple[Operation, ...]
    queued: tuple[PreviewItem, ...]
    quarantine: tuple[quarantine.Entry, ...]


def _norm(v: Any) -> Any:
    # The diff's equality: absent, null and [] are the same value (see store.diff.diff_objects).
    return None if v is None or v == [] else v


def explain(store: Store, rules: Rules, ident: str, *, soft_match: bool = False) -> Explanation:
    """Explain one object (by anchor or DN); raises NotFound."""
    with store.transaction() as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        anchor = inspect.find(conn, ident)
        if anchor is None:
            raise NotFound(ident)
        tenant_json = desired.get_meta(conn, TENANT_KEY)
        evaluator = Evaluator(rules, TenantDomains.from_json(tenant_json) if tenant_json else None)
        evaluator.pilot = pilot_scopes(conn, rules)
        first = inspect.snapshot(conn, anchor, None)
        assert first is not None
        src = first.source
        steps: list[Step] = []
        error = notice = None
        in_scope: bool | None = False
        now: dict[str, Any] | None = None
        target_anchor = None
        if not first.deleted:
            try:
                out = evaluator.evaluate(anchor, src.object_type, src.dn, src.attrs, trace=steps)
            except EvaluationError as exc:
                error, in_scope = str(exc), None
            else:
                in_scope, notice, target_anchor = out.in_scope, out.notice, out.target_anchor
                now = dict(out.attrs) if out.attrs is not None else None
        snap = inspect.snapshot(conn, anchor, target_anchor, rules.anchor_attribute(src.object_type))
        assert snap is not None
        link, target_id, target, ops = _plan(conn, rules, snap, in_scope, now, soft_match)
        queued = tuple(describe(conn, pending.listing(conn, anchor=anchor)))
        entries = tuple(e for e in quarantine.entries(conn) if e.key == anchor)
    shown = now or snap.desired or target or {}
    name = next((str(shown[k]) for k in ("userPrincipalName", "displayName") if shown.get(k)), src.dn)
    return Explanation(
        anchor=anchor,
        object_type=src.object_type,
        dn=src.dn,
        name=name,
        source_deleted=snap.deleted,
        source={k: list(v) for k, v in sorted(src.attrs.items())},
        steps=tuple(steps),
        in_scope=in_scope,
        error=error,
        notice=notice,
        desired=now,
        last_desired=snap.desired,
        link=link,
        target_id=target_id,
        target=target,
        operations=tuple(ops),
        queued=queued,
        quarantine=entries,
    )


def _plan(
    conn: psycopg.Connection,
    rules: Rules,
    snap: inspect.Snapshot,
    in_scope: bool | None,
    now: dict[str, Any] | None,
    soft_match: bool,
) -> tuple[str, str | None, dict[str, Any] | None, list[Operation]]:
    """(link sentence, target id, target attributes, operations) as the next sync would see them."""
    tr = rules.of(snap.source.object_type)
    ops: list[Operation] = []
    live = snap.target if snap.target is not None and not snap.target.deleted else None
    if snap.link is not None and live is not None:
        link = f"linked ({snap.link.how}) to {snap.link.target_id}"
    elif snap.link is not None:
        link = f"linked to {snap.link.target_id}, which is gone from the target: the link drops"
    elif snap.candidates:
        dup = (
            f" ({len(snap.candidates)} objects carry the anchor: a duplicate)"
            if len(snap.candidates) > 1
            else ""
        )
        live = snap.candidates[0] if in_scope else None
        link = f"not linked; a hard match on {tr.anchor_attribute} would link {snap.candidates[0].id}{dup}"
        if live is not None:
            ops.append(Operation("link", live.id, note=f"hard match on {tr.anchor_attribute}"))
    elif snap.entra_connect is not None:
        link = (
            f"not linked: Entra Connect synchronizes {snap.entra_connect} (onPremisesSyncEnabled), which"
            + (f" has its {snap.entra_connect_by}" if snap.entra_connect_by else " carries its anchor")
            + "; idsync never links, matches or writes it"
        )
        if in_scope:
            return link, None, None, []
    else:
        link = "not linked: no target object carries its anchor"
    target_id = live.id if live is not None else None
    target = dict(live.attrs) if live is not None else None
    if in_scope is None:
        return (
            link,
            target_id,
            target,
            [Operation("none", target_id, note="the rules failed: it keeps its previous desired state")],
        )
    if in_scope and now is not None:
        if live is None:
            payload = {k: v for k, v in sorted(now.items()) if v is not None}
            note = (
                f"soft match on {tr.soft_match} may adopt an existing object first"
                if soft_match and tr.soft_match
                else ""
            )
            if snap.recycled is not None:  # target/recycle.py
                note = (
                    f"restores the deleted user {snap.recycled} from the recycle bin if Graph still"
                    " holds it, else creates"
                )
            ops.append(
                Operation("create", None, tuple(Change(k, None, v) for k, v in payload.items()), note=note)
            )
        else:
            old = live.attrs
            changes = tuple(
                Change(k, old.get(k), v) for k, v in sorted(now.items()) if _norm(v) != _norm(old.get(k))
            )
            if changes:
                ops.append(Operation("update", live.id, changes))
            if snap.source.object_type == "group" and tr.members and snap.link is not None:
                ops.extend(_member_ops(conn, snap))
            if snap.source.object_type == "user" and tr.manager is not None and snap.link is not None:
                ops.extend(_manager_ops(conn, snap))
        return link, target_id, target, ops
    # Out of scope (or deleted in the source): deprovision what idsync linked, per the rules.
    if snap.link is None or live is None:
        return link, target_id, target, []
    if tr.deprovision == "delete":
        ops.append(Operation("delete", live.id, note="deprovision = delete (to the recycle bin)"))
    elif tr.deprovision == "disable":
        if live.attrs.get("accountEnabled") is not False:
            change = Change("accountEnabled", live.attrs.get("accountEnabled"), False)
            ops.append(Operation("update", live.id, (change,), note="deprovision = disable"))
    else:
        ops.append(Operation("unlink", live.id, note="deprovision = leave: the object is left as it is"))
    return link, target_id, target, ops


def _member_ops(conn: psycopg.Connection, snap: inspect.Snapshot) -> list[Operation]:
    """Member adds and removes, from the members the last sync resolved (as store.diff does)."""
    want, have = set(snap.desired_members), set(snap.target_members)
    adds, removes = sorted(want - have), sorted(have - want)
    names = inspect.names(conn, adds + removes)
    assert snap.link is not None
    gid = snap.link.target_id
    return [Operation("member_add", gid, member=names.get(a, a)) for a in adds] + [
        Operation("member_remove", gid, member=names.get(a, a)) for a in removes
    ]


def _manager_ops(conn: psycopg.Connection, snap: inspect.Snapshot) -> list[Operation]:
    """The manager set or removal, from the manager the last sync resolved (as store.diff does)."""
    assert snap.link is not None
    uid = snap.link.target_id
    view = inspect.manager_view(conn, snap.source.anchor, uid)
    if view.desired is not None and view.desired != view.target_anchor:
        name = inspect.names(conn, [view.desired]).get(view.desired, view.desired)
        return [Operation("manager_set", uid, member=name)]
    if view.desired is None and view.target_id is not None:
        name = view.target_anchor or view.target_id
        name = inspect.names(conn, [name]).get(name, name)
        return [Operation("manager_remove", uid, member=name, note="no manager in scope")]
    return []


# --- output ----------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    if value is None:
        return "∅"
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _rows(e: Explanation) -> list[tuple[str, str, str, str]]:
    """(section, item, value, note): the explanation flattened, for the table and CSV."""
    rows: list[tuple[str, str, str, str]] = [
        ("object", "type", e.object_type, ""),
        ("object", "name", e.name, ""),
        ("object", "anchor", e.anchor, ""),
        ("object", "dn", e.dn, "deleted in the source" if e.source_deleted else ""),
    ]
    rows += [("source", k, "; ".join(v), "") for k, v in e.source.items()]
    rows += [("rules", s.rule, _show(s.result), s.note or (s.expression or "")) for s in e.steps]
    if e.error:
        rows.append(("rules", "error", e.error, "quarantined by the sync"))
    verdict = "rules failed" if e.in_scope is None else "in scope" if e.in_scope else "out of scope"
    rows.append(("desired", "verdict", verdict, e.notice or ""))
    last = e.last_desired or {}
    for k in sorted(set(e.desired or {}) | set(last)):
        now = (e.desired or {}).get(k)
        note = "" if _norm(now) == _norm(last.get(k)) else f"last sync: {_show(last.get(k))}"
        rows.append(("desired", k, _show(now), note))
    rows.append(("target", "link", e.link, ""))
    rows += [("target", k, _show(v), "") for k, v in sorted((e.target or {}).items())]
    for op in e.operations:
        head = f"{op.kind} {op.member}".strip()
        if not op.changes:
            rows.append(("would export", head, op.target_id or "", op.note))
        for c in op.changes:
            value = _show(c.new) if op.kind == "create" else f"{_show(c.old)} → {_show(c.new)}"
            rows.append(("would export", f"{head} {c.attribute}", value, op.note))
    if not e.operations:
        rows.append(("would export", "nothing", "", "the target already holds the desired state"))
    for q in e.queued:
        head = f"{q.kind} {q.member_name}".strip()
        rows.append(("queued", head, f"#{q.id}", q.status))
    for qe in e.quarantine:
        rows.append(
            ("quarantine", qe.phase, qe.reason, f"{qe.attempts} attempt(s)" if qe.phase == "export" else "")
        )
    return rows


CSV_COLUMNS = ("section", "item", "value", "note")


def write(e: Explanation, fmt: str, out: TextIO) -> None:
    """The explanation as a table (sections), JSON or CSV (section, item, value, note)."""
    if fmt == "json":
        out.write(orjson.dumps(asdict(e), option=orjson.OPT_INDENT_2, default=str).decode() + "\n")
        return
    rows = _rows(e)
    if fmt == "csv":
        w = csv.writer(out)
        w.writerow(CSV_COLUMNS)
        w.writerows(rows)
        return
    section = ""
    for sec, item, value, note in rows:
        if sec != section:
            out.write(("\n" if section else "") + f"{sec}\n")
            section = sec
        width = max(len(i) for s, i, _, _ in rows if s == sec)
        out.write(f"  {item:<{width}}  {value}" + (f"   ({note})" if note else "") + "\n")


def render(e: Explanation, fmt: str = "table") -> str:
    buf = io.StringIO()
    write(e, fmt, buf)
    return buf.getvalue()
