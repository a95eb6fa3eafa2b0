"""`idsync pending`: every pending operation with per-attribute old → new values.

The replacement for csexport + CSExportAnalyzer + Excel: readable names (userPrincipalName or
displayName, not DNs or GUIDs alone), the old value from the target space next to the new one,
member operations with both names, and the errors. Works on any node, leader or staging.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import orjson

from idsync.store import desired, links, pending
from idsync.store.db import Store

Format = Literal["table", "json", "csv"]
OP_FILTERS: dict[str, tuple[str, ...]] = {
    "create": ("create",),
    "update": ("update",),
    "delete": ("delete",),
    "member": ("member_add", "member_remove"),
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


def collect(store: Store, *, op: str | None = None, errors_only: bool = False) -> list[PreviewItem]:
    """The preview rows, read in one snapshot."""
    kinds = OP_FILTERS[op] if op else None
    with store.transaction() as conn:
        ops = pending.listing(conn, kinds=kinds, errors_only=errors_only)
        anchors = {o.anchor for o in ops} | {o.member_anchor for o in ops if o.member_anchor}
        desired_attrs = desired.attrs_of(conn, anchors)
        target_attrs = links.target_attrs(conn, {o.target_id for o in ops if o.target_id})
        linked = links.linked_target_attrs(conn, anchors)
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
        items.append(
            PreviewItem(
                id=o.id,
                kind=o.kind,
                object_type=o.object_type,
                anchor=o.anchor,
                name=names.get(o.anchor, o.anchor),
                target_id=o.target_id,
                member_anchor=o.member_anchor,
                member_name=names.get(o.member_anchor, o.member_anchor) if o.member_anchor else "",
                changes=changes,
                status=_status(o, names),
                attempts=o.attempts,
                last_error=o.last_error,
            )
        )
    return items


def _show(value: Any) -> str:
    if value is None:
        return "∅"
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def summary(items: Sequence[PreviewItem]) -> str:
    """Counts per operation and object type, and how many wait, are exported or failing."""
    if not items:
        return "no pending operations"
    by = Counter((i.kind, i.object_type) for i in items)
    lines = [f"{n:>8}  {kind} {t}" for (kind, t), n in sorted(by.items())]
    states = Counter(i.status.split(" ", 1)[0].rstrip(":") for i in items)
    lines.append(f"{len(items):>8}  total (" + ", ".join(f"{k} {v}" for k, v in sorted(states.items())) + ")")
    return "\n".join(lines)


def render(items: Sequence[PreviewItem], fmt: Format = "table") -> str:
    """The listing as a table (one line per attribute change), JSON or CSV."""
    if fmt == "json":
        return orjson.dumps([asdict(i) for i in items], option=orjson.OPT_INDENT_2).decode()
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(
            [
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
            ]
        )
        for i in items:
            rows = i.changes or (Change("", None, None),)
            for c in rows:
                w.writerow(
                    [
                        i.id,
                        i.kind,
                        i.object_type,
                        i.name,
                        i.anchor,
                        i.target_id or "",
                        i.member_name,
                        c.attribute,
                        "" if not c.attribute else _show(c.old),
                        "" if not c.attribute else _show(c.new),
                        i.status,
                    ]
                )
        return out.getvalue()
    if not items:
        return "no pending operations"
    lines = []
    for i in items:
        head = f"{i.kind:<13} {i.object_type:<5} {i.name}"
        if i.member_anchor:
            head += f" ← {i.member_name}" if i.kind == "member_add" else f" ✕ {i.member_name}"
        if i.target_id:
            head += f"  [{i.target_id}]"
        if i.status != "ready":
            head += f"  ({i.status})"
        lines.append(head)
        width = max((len(c.attribute) for c in i.changes), default=0)
        for c in i.changes:
            if i.kind == "create":
                lines.append(f"    {c.attribute:<{width}}  {_show(c.new)}")
            else:
                lines.append(f"    {c.attribute:<{width}}  {_show(c.old)} → {_show(c.new)}")
    return "\n".join(lines)
