"""`idsync pending`: every pending operation with per-attribute old → new values.

The replacement for csexport + CSExportAnalyzer + Excel: readable names (userPrincipalName or
displayName, not DNs or GUIDs alone), the old value from the target space next to the new one,
member operations with both names, and the errors. Works on any node, leader or staging.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, TextIO

import orjson
import psycopg

from idsync.store import desired, links, pending
from idsync.store.db import Store

Format = Literal["table", "json", "csv"]
OP_FILTERS: dict[str, tuple[str, ...]] = {
    "create": ("create",),
    "update": ("update",),
    "delete": ("delete",),
    "member": ("member_add", "member_remove"),
    "manager": ("manager_set", "manager_remove"),
}


@dataclass(frozen=True)
class Change:
    """One attribute of one operation: its value in the target now, and the value to be written."""

    attribute: str
    old: Any
    new: Any


@dataclass(frozen=True)
class PreviewItem:
    """One pending operation as an operator reads it."""

    id: int
    kind: str
    object_type: str
    anchor: str
    name: str
    target_id: str | None
    member_anchor: str
    member_name: str
    changes: tuple[Change, ...]
    status: str  # ready | waiting for <name> | exported, awaiting import | retry: … | quarantined: …
    attempts: int
    last_error: str | None
    target: str = "graph"  # where it is written: graph (Entra ID) or ad (writeback)


def _name(attrs: Mapping[str, Any] | None, fallback: str) -> str:
    if attrs:
        for key in ("userPrincipalName", "displayName", "mailNickname"):
            if attrs.get(key):
                return str(attrs[key])
    return fallback


def _status(op: pending.PendingExport, names: Mapping[str, str]) -> str:
    if op.quarantined:
        return f"quarantined after {op.attempts} attempts: {op.last_error}"
    if op.waiting_for:
        return f"waiting for {names.get(op.waiting_for, op.waiting_for)} to exist in the target"
    if op.exported_at is not None:
        return "exported, awaiting the confirming import"
    if op.last_error:
        return f"retrying ({op.attempts} failed): {op.last_error}"
    return "ready"


def iter_items(
    store: Store, *, op: str | None = None, errors_only: bool = False, page: int = 1000
) -> Iterator[PreviewItem]:
    """The preview rows in export order, read page by page from one snapshot (any queue size)."""
    kinds = OP_FILTERS[op] if op else None
    with store.transaction() as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        after: tuple[int, int] | None = None
        while True:
            ops = pending.listing(conn, kinds=kinds, errors_only=errors_only, after=after, limit=page)
            if not ops:
                return
            yield from _items(conn, ops)
            after = (ops[-1].priority, ops[-1].id)


def collect(store: Store, *, op: str | None = None, errors_only: bool = False) -> list[PreviewItem]:
    """All preview rows as a list (for small queues and tests; the command streams)."""
    return list(iter_items(store, op=op, errors_only=errors_only))


def describe(conn: psycopg.Connection, ops: Sequence[pending.PendingExport]) -> list[PreviewItem]:
    """Preview rows of some operations (`idsync preview` shows those of one object)."""
    return _items(conn, ops)


def _items(conn: psycopg.Connection, ops: Sequence[pending.PendingExport]) -> list[PreviewItem]:
    anchors = {o.anchor for o in ops} | {o.member_anchor for o in ops if o.member_anchor}
    desired_attrs = desired.attrs_of(conn, anchors)
    target_attrs = links.target_attrs(conn, {o.target_id for o in ops if o.target_id})
    linked = links.linked_target_attrs(conn, anchors - desired_attrs.keys())
    names = {a: _name(desired_attrs.get(a) or linked.get(a), a) for a in anchors}
    items = []
    for o in ops:
        old = target_attrs.get(o.target_id or "", {})
        if o.kind == "create":
            changes = tuple(Change(k, None, v) for k, v in sorted(o.payload.items()))
        elif o.kind == "update":
            changes = tuple(Change(k, old.get(k), v) for k, v in sorted(o.payload.items()))
        else:
            changes = ()
        name = names.get(o.anchor, o.anchor)
        if o.target == "ad":  # writeback: named by what it writes (no desired object behind it)
            name = str(o.payload.get("displayName") or o.payload.get("dn") or o.anchor)
        items.append(
            PreviewItem(
                id=o.id,
                kind=o.kind,
                object_type=o.object_type,
                anchor=o.anchor,
                name=name,
                target_id=o.target_id,
                member_anchor=o.member_anchor,
                member_name=names.get(o.member_anchor, o.member_anchor) if o.member_anchor else "",
                changes=changes,
                status=_status(o, names),
                attempts=o.attempts,
                last_error=o.last_error,
                target=o.target,
            )
        )
    return items


def status_counts(store: Store) -> dict[tuple[str, str, str], int]:
    """(kind, object_type, state) → count, counted by PostgreSQL."""
    with store.connection() as conn:
        return pending.status_counts(conn)


def _show(value: Any) -> str:
    if value is None:
        return "∅"
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def summary(counts: Mapping[tuple[str, str, str], int]) -> str:
    """Counts per operation and object type, then the total by state (see status_counts)."""
    if not counts:
        return "no pending operations"
    by: Counter[tuple[str, str]] = Counter()
    states: Counter[str] = Counter()
    for (kind, object_type, state), n in counts.items():
        by[(kind, object_type)] += n
        states[state] += n
    lines = [f"{n:>8}  {kind} {t}" for (kind, t), n in sorted(by.items())]
    total = sum(states.values())
    lines.append(f"{total:>8}  total (" + ", ".join(f"{k} {v}" for k, v in sorted(states.items())) + ")")
    return "\n".join(lines)


def render(items: Iterable[PreviewItem], fmt: Format = "table") -> str:
    """The listing as one string (see write)."""
    out = io.StringIO()
    write(items, fmt, out)
    return out.getvalue()


def write(items: Iterable[PreviewItem], fmt: Format, out: TextIO) -> int:
    """Write the listing as a table (one line per attribute change), JSON or CSV, as it streams.

    Returns how many operations were written.
    """
    n = 0
    if fmt == "json":
        out.write("[")
        for i in items:
            out.write(("," if n else "") + "\n  " + orjson.dumps(asdict(i)).decode())
            n += 1
        out.write("\n]\n" if n else "]\n")
        return n
    if fmt == "csv":
        w = csv.writer(out)
        w.writerow(CSV_COLUMNS)
        for i in items:
            n += 1
            for c in i.changes or (Change("", None, None),):
                old = "" if not c.attribute else _show(c.old)
                new = "" if not c.attribute else _show(c.new)
                head = [i.id, i.kind, i.object_type, i.name, i.anchor, i.target_id or "", i.member_name]
                w.writerow([*head, c.attribute, old, new, i.status, i.target])
        return n
    for i in items:
        n += 1
        out.write(_table_entry(i))
    if not n:
        out.write("no pending operations\n")
    return n


CSV_COLUMNS = (
    "id",
    "operation",
    "type",
    "name",
    "anchor",
    "target_id",
    "member",
    "attribute",
    "old",
    "new",
    "status",
    "target",
)


def reference_arrow(kind: str) -> str:
    """How a reference operation points at the object it names: a member added ← or removed ✕,
    a manager set (→ manager)."""
    return {"member_add": "←", "manager_set": "→ manager"}.get(kind, "✕")


def _table_entry(i: PreviewItem) -> str:
    head = f"{i.kind:<13} {i.object_type:<5} {i.name}"
    if i.target == "ad":
        head = f"{i.kind:<13} {i.object_type:<5} to AD: {i.name}"
    if i.member_anchor:
        head += f" {reference_arrow(i.kind)} {i.member_name}"
    if i.target_id:
        head += f"  [{i.target_id}]"
    if i.status != "ready":
        head += f"  ({i.status})"
    lines = [head]
    width = max((len(c.attribute) for c in i.changes), default=0)
    for c in i.changes:
        if i.kind == "create":
            lines.append(f"    {c.attribute:<{width}}  {_show(c.new)}")
        else:
            lines.append(f"    {c.attribute:<{width}}  {_show(c.old)} → {_show(c.new)}")
    return "\n".join(lines) + "\n"
