"""Member adds in bulk: up to 20 members of one group in one write, through `members@odata.bind`.

Graph adds up to 20 members in one `PATCH /groups/{id}` with `members@odata.bind`, and "if an
error condition exists in the request body, no members are added" (docs-contrib
api-reference/v1.0/api/group-post-members.md, example "Add multiple members to a group in a
single request"; group-update.md documents the same property); a new group takes its first
members in its create the same way (group-post-groups.md, `members@odata.bind`). Each such
request is one write toward the identity write quota, whatever it binds: "Any POST, PATCH, PUT or
DELETE costs 1 RU and 1 write" (concepts/throttling-limits.md, identity and access).

All or nothing means one bad member fails the other nineteen, so a refused set is split:
- a 404 that names one of the members takes that member out, the others go again at once;
- any other 400/404 of a set bisects it, until the culprit is alone;
- alone, a member Graph does not show yet (404 "Resource ... does not exist", or 400 "... don't
  exist" — group-post-members.md's note on replication delays) WAITS: it is re-armed, not counted
  as an attempt (`store.pending.record_wait`); "already a member" is done; anything else is an
  `ExportRejected` counted toward quarantine like any other refusal.
Removals stay one `DELETE .../members/{id}/$ref` each: Graph has no bulk remove.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from idsync.store.pending import PendingExport
from idsync.target.batch import SubResponse
from idsync.target.client import error_of
from idsync.target.errors import ExportRejected

if TYPE_CHECKING:
    from idsync.target.export import Exporter, ExportReport, OpResult, _Item

log = structlog.get_logger(__name__)

MAX_BINDS = 20  # members per request (group-post-members.md example 2)
BIND = "members@odata.bind"
ALREADY_MEMBER = "already exist"
RETRY_STATUSES = frozenset({500, 502, 503, 504, 424})
# Graph's words for a referenced object it does not show (yet): 404 "Resource '<id>' does not
# exist ...", or the 400 group-post-members.md quotes for objects still replicating.
_NOT_VISIBLE = ("does not exist", "do not exist", "don't exist")


def not_visible(status: int, message: str) -> bool:
    """Whether Graph's answer says a referenced object does not exist (or not yet)."""
    return status in (400, 404) and any(m in message for m in _NOT_VISIBLE)


@dataclass(eq=False)
class Bind:
    """Up to 20 member adds of one group, sent as one `PATCH /groups/{id}` (one write)."""

    group_id: str
    items: list[_Item]
    ref_base: str
    attempts: int = 0
    not_before: float = 0.0
    recheck: bool = False  # never: a member bind is safe to send again
    last: str = ""
    last_status: int | None = None
    request_id: str | None = None
    method: str = field(default="PATCH", init=False)

    @property
    def url(self) -> str:
        return f"/groups/{self.group_id}"

    @property
    def body(self) -> dict[str, Any]:
        return {BIND: [self.ref_base + str(i.op.member_target_id) for i in self.items]}

    def part(self, items: list[_Item]) -> Bind:
        """A new set of some of these members (sent at once, its own attempts)."""
        return Bind(self.group_id, items, self.ref_base)


def units(items: Iterable[_Item], ref_base: str) -> list[Any]:
    """The sub-requests for `items`: member adds of one group folded into Binds of up to 20 (in
    claim order), every other operation as itself."""
    out: list[Any] = []
    open_: dict[str, Bind] = {}
    for i in items:
        op = i.op
        if op.kind != "member_add" or not op.target_id or not op.member_target_id:
            out.append(i)
            continue
        b = open_.get(op.target_id)
        if b is None or len(b.items) >= MAX_BINDS:
            b = Bind(op.target_id, [], ref_base)
            open_[op.target_id] = b
            out.append(b)
        b.items.append(i)
    return out


def items_of(unit: Any) -> list[_Item]:
    """The operations a sub-request carries."""
    return list(unit.items) if isinstance(unit, Bind) else [unit]


def settled(unit: Any, results: dict[int, OpResult]) -> bool:
    return all(i.op.id in results for i in items_of(unit))


# --- claims: member adds of the same group come together -----------------------------------------


def slots(ops: Sequence[PendingExport]) -> int:
    """Sub-requests a claim needs: one per operation, one per 20 member adds of a linked group
    (member adds bound into a group's create need none of their own)."""
    adds = Counter(o.anchor for o in ops if o.kind == "member_add" and o.target_id)
    binds = sum(math.ceil(k / MAX_BINDS) for k in adds.values())
    return sum(1 for o in ops if o.kind != "member_add") + binds


def wanted(ops: Sequence[PendingExport], slots: int) -> tuple[dict[str, int], dict[str, int]]:
    """How many more ready member adds to claim per group so the batch's `slots` sub-requests
    carry full binds: (existing group anchor -> extra adds, created group anchor -> adds to bind
    into its create). Free slots are shared round-robin among the groups already in the claim."""
    adds = Counter(o.anchor for o in ops if o.kind == "member_add" and o.target_id)
    creating = {o.anchor: MAX_BINDS for o in ops if o.kind == "create" and o.object_type == "group"}
    used = sum(1 for o in ops if o.kind != "member_add") + sum(
        math.ceil(k / MAX_BINDS) for k in adds.values()
    )
    share = {a: math.ceil(k / MAX_BINDS) for a, k in adds.items()}
    free = slots - used
    while free > 0 and share:
        for a in share:
            if free <= 0:
                break
            share[a] += 1
            free -= 1
    extra = {a: share[a] * MAX_BINDS - adds[a] for a in share if share[a] * MAX_BINDS > adds[a]}
    return extra, creating


def partial_tails(ops: Sequence[PendingExport]) -> dict[str, list[int]]:
    """Per group, the op ids of its last bind when that one would carry fewer than 20 members."""
    by_group: dict[str, list[int]] = {}
    for o in ops:
        if o.kind == "member_add" and o.target_id and o.member_target_id:
            by_group.setdefault(o.anchor, []).append(o.id)
    return {a: ids[-(len(ids) % MAX_BINDS) :] for a, ids in by_group.items() if len(ids) % MAX_BINDS}


def attach(ops: Sequence[PendingExport]) -> dict[int, list[PendingExport]]:
    """Member adds of a group created in this batch, by the create's op id (at most 20 each):
    they ride on the create (`members@odata.bind` in `POST /groups`)."""
    creates = {o.anchor: o.id for o in ops if o.kind == "create" and o.object_type == "group"}
    out: dict[int, list[PendingExport]] = {}
    for o in ops:
        if o.kind == "member_add" and not o.target_id and o.member_target_id and o.anchor in creates:
            bound = out.setdefault(creates[o.anchor], [])
            if len(bound) < MAX_BINDS:
                bound.append(o)
    return out


def bind_create(item: _Item, ref_base: str) -> None:
    """Put the attached members into the group create's body."""
    if item.binds and isinstance(item.body, dict):
        item.body = {**item.body, BIND: [ref_base + str(b.op.member_target_id) for b in item.binds]}


def unbind_create(item: _Item) -> None:
    """The create goes again without its members (they follow by PATCH once it is linked)."""
    if isinstance(item.body, dict):
        item.body = {k: v for k, v in item.body.items() if k != BIND}
    item.binds = []


# --- answers ------------------------------------------------------------------------------------


def settle(
    exp: Exporter, bind: Bind, sub: SubResponse, results: dict[int, OpResult], report: ExportReport
) -> list[Bind]:
    """Results for a Bind's members from Graph's answer; returns the sets still to send (the
    same one after a transient failure, its parts after a refusal, none when all are settled)."""
    st = sub.status
    for i in bind.items:
        i.request_id, i.last_status = bind.request_id, st
    if 200 <= st < 300:
        for i in bind.items:
            results[i.op.id] = exp._result(i, "ok", status=st)
        return []
    code, message = error_of(st, sub.body)
    if st == 429:
        report.throttled += 1
        ra = sub.retry_after()
        exp.budget.throttled(ra)
        exp._transient(bind, f"429 {code}: {message}", st, ra if ra is not None else 1.0)
        return [bind]
    if st in RETRY_STATUSES:
        exp._transient(bind, f"{st} {code}: {message}", st, sub.retry_after())
        return [bind]
    if len(bind.items) > 1 and st in (400, 404):
        return _split(exp, bind, st, code, message, results)
    for i in bind.items:
        results[i.op.id] = _single(exp, i, st, code, message)
    return []


def _split(
    exp: Exporter, bind: Bind, st: int, code: str, message: str, results: dict[int, OpResult]
) -> list[Bind]:
    named = [i for i in bind.items if str(i.op.member_target_id) in message]
    if len(named) == 1 and not_visible(st, message):
        culprit = named[0]
        results[culprit.op.id] = _single(exp, culprit, st, code, message)
        log.info("export.bind_culprit", group=bind.group_id, member=culprit.op.member_anchor, status=st)
        return [bind.part([i for i in bind.items if i is not culprit])]
    if st == 404 and bind.group_id in message:  # the group itself is not (yet) there
        for i in bind.items:
            results[i.op.id] = _single(exp, i, st, code, message)
        return []
    half = len(bind.items) // 2
    log.info("export.bind_split", group=bind.group_id, members=len(bind.items), status=st, code=code)
    return [bind.part(bind.items[:half]), bind.part(bind.items[half:])]


def _single(exp: Exporter, item: _Item, st: int, code: str, message: str) -> OpResult:
    """One member's verdict: already a member is done, not visible waits, the rest is refused."""
    op = item.op
    if st == 400 and ALREADY_MEMBER in message:
        return exp._result(item, "ok", status=st, message="already a member")
    err = ExportRejected(op.anchor, code, f"adding member {op.member_anchor}: {message}", st)
    if not_visible(st, message):
        why = f"{st} {code}: {message} (member {op.member_anchor} not visible in Graph yet)"
        return exp._result(item, "retry", status=st, message=why, wait=err)
    return exp._result(item, "error", error=err, status=st)
