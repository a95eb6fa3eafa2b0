"""Export: pending operations executed against Graph in `$batch` requests, idempotently.

Each batch of up to 20 operations is claimed in a PostgreSQL transaction that checks the fence
row (epoch and lease), then:

1. creates look their anchor up first (a retried POST, or an earlier leader, may have created
   the object already: it is adopted); deletes read the object and refuse (`NotOwned`) unless
   it carries idsync's anchor; a 404 there means the delete is already done;
2. the writes go in one `$batch`, paced by the write budget; `fence.ensure()` runs before each
   batch, and the HTTP transport checks the fence again right before the bytes go out, bounding
   the request by the lease's remainder (`GraphClient.send(fence=...)`); a batch holding a hard
   delete first gets a fresh quorum confirmation (`fence.confirm_now()`);
3. per item: 2xx is done; "already a member", a 404 on delete or member removal are done too;
   a 429 is retried after its own Retry-After; a 5xx, 424 or a dropped connection is retried
   with jittered backoff — a create whose outcome is unknown is looked up again first, so it is
   never sent twice; any other 4xx is an `ExportRejected` with Graph's code and message.

Results are recorded per operation (journal + queue bookkeeping) through `store.pending`.
Several batches are in flight at once (`max_concurrent_batches`).
"""

from __future__ import annotations

import asyncio
import secrets
import string
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx
import structlog

from idsync.fencing import Fence, Fenced
from idsync.model import InitialPassword
from idsync.store import fence as store_fence
from idsync.store import pending
from idsync.store.db import Store
from idsync.store.pending import PendingExport, StaleEpoch
from idsync.store.quarantine import PRIVILEGED_MARK
from idsync.target import batch, recycle
from idsync.target.batch import SubRequest, SubResponse
from idsync.target.budget import WriteBudget
from idsync.target.client import GraphClient, backoff, error_of, user_agent
from idsync.target.errors import (
    ExportRejected,
    GraphAuthError,
    GraphRequestError,
    GraphUnavailable,
    NotOwned,
    PasswordRefused,
)
from idsync.target.schema import SYNC_FLAG, TargetSchema, anchor_filter, nest, owned_anchor
from idsync.target.tenant import TenantReader

log = structlog.get_logger(__name__)

Outcome = Literal["ok", "adopted", "retry", "error"]
COLLECTION = {"user": "users", "group": "groups"}
ALREADY_MEMBER = "already exist"
RETRY_STATUSES = frozenset({500, 502, 503, 504, 424})


@dataclass(frozen=True)
class OpResult:
    """What happened to one pending operation."""

    op_id: int
    object_type: str
    anchor: str
    kind: str
    member_anchor: str
    outcome: Outcome
    target_id: str | None = None
    status: int | None = None
    request_id: str | None = None
    error: ExportRejected | None = None
    message: str | None = None
    retry_after: float | None = None
    final: bool = False  # a refusal no retry can fix (a privileged user): quarantined at once

    @property
    def done(self) -> bool:
        return self.outcome in ("ok", "adopted")


@dataclass
class ExportReport:
    """One export run: a result per operation, and how the run went."""

    results: list[OpResult] = field(default_factory=list)
    batches: int = 0  # write $batch requests sent
    read_batches: int = 0
    items: int = 0  # sub-requests sent (reads and writes)
    writes: int = 0
    throttled: int = 0  # sub-requests (or envelopes) answered 429
    restored: int = 0  # creates done by restoring a deleted user (recycle.py)
    seconds: float = 0.0
    fenced: str | None = None
    error: str | None = None  # why the run stopped early when Graph failed as a whole

    def count(self, *outcomes: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome in outcomes)

    def errors(self) -> list[ExportRejected]:
        return [r.error for r in self.results if r.error is not None]

    def sentence(self) -> str:
        """One line for the log and the operator."""
        s = (
            f"exported {self.count('ok')} ok, {self.count('adopted')} adopted,"
            f" {self.count('error')} rejected,"
            f" {self.count('retry')} to retry in {self.batches} batches ({self.writes} writes,"
            f" {self.throttled} throttled) in {self.seconds:.1f}s"
        )
        if self.restored:
            s += f"; {self.restored} restored from the recycle bin"
        if self.fenced:
            s += f"; stopped: {self.fenced}"
        if self.error:
            s += f"; stopped: {self.error}"
        return s


@dataclass
class _Item:
    op: PendingExport
    method: str = ""
    url: str = ""
    body: Any = None
    anchor_value: str | None = None
    attempts: int = 0
    not_before: float = 0.0
    recheck: bool = False  # a create whose outcome is unknown: look it up before sending again
    conflict: str | None = None  # Graph's message when a create met an ObjectConflict
    restore_of: str | None = None  # a create sent as the restore of this deleted user (recycle.py)
    create: tuple[str, str, Any] | None = None  # the create's own write, while it is a restore
    last: str = ""
    last_status: int | None = None
    request_id: str | None = None


def _password() -> str:
    """A random password meeting Entra ID's complexity rules (nobody knows it; sign-in is federated
    or set by the rules' own passwordProfile)."""
    alphabet = string.ascii_letters + string.digits + "!#%+-.:=?@^_~"
    core = "".join(secrets.choice(alphabet) for _ in range(28))
    return core + "aA1!"


class PasswordSource(Protocol):
    """Where user creates get their passwordProfile (sync.signin.InitialPasswords, from the rules)."""

    def profiles(self, anchors: Sequence[str]) -> Mapping[str, InitialPassword]: ...


class Exporter:
    """Runs pending exports under a fence. One per leader term (the fence names node and epoch)."""

    max_attempts = 6  # per operation and run, for transient failures

    def __init__(
        self,
        client: GraphClient,
        store: Store,
        fence: Fence,
        schema: TargetSchema,
        passwords: PasswordSource | None = None,
    ) -> None:
        # Without a password source a created user gets a random password, no forced change.
        self.passwords = passwords
        # Passwords of the claimed creates, by operation id: in memory only, dropped when sent.
        self._profiles: dict[int, InitialPassword] = {}
        self.client = client
        self.store = store
        self.fence = fence
        self.schema = schema
        settings = client.settings
        self.batch_size = settings.batch_size
        self.concurrency = settings.max_concurrent_batches
        self.budget: WriteBudget = client.write_budget
        self.agent = user_agent(fence.node, fence.epoch)
        self._ref_base = f"{settings.graph_endpoint}/v1.0/directoryObjects/"

    # --- the run -----------------------------------------------------------------------------
    async def export(self, limit: int | None = None, *, held: bool = False) -> ExportReport:
        """Export up to `limit` ready operations (all when None); a result for each one claimed.

        `held` is the deletion guard's decision (nothing at all is exported while it holds).
        Stops early when the fence no longer holds (`report.fenced` says why): nothing more is
        sent after that, and operations not yet sent are left for the next leader.
        """
        report = ExportReport()
        t0 = time.monotonic()
        state = {"claimed": 0, "stop": False}

        async def worker() -> None:
            while not state["stop"]:
                n = self.batch_size if limit is None else min(self.batch_size, limit - int(state["claimed"]))
                if n <= 0:
                    return
                try:
                    self.fence.ensure()
                    ops = await asyncio.to_thread(self._claim, n, held)
                except Fenced as e:
                    state["stop"] = True
                    report.fenced = report.fenced or e.reason
                    return
                if not ops:
                    return
                state["claimed"] = int(state["claimed"]) + len(ops)
                results, fenced = await self._run(ops, report)
                await asyncio.to_thread(self._record, results)
                report.results.extend(results)
                if fenced is not None:
                    state["stop"] = True
                    report.fenced = report.fenced or fenced.reason
                if report.error is not None:
                    state["stop"] = True  # Graph unreachable or refusing us: no point going on

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        report.seconds = time.monotonic() - t0
        log.info("export.run", summary=report.sentence(), epoch=self.fence.epoch)
        return report

    def _claim(self, n: int, held: bool) -> list[PendingExport]:
        epoch = self.fence.epoch
        with self.store.transaction() as conn:
            store_fence.check(conn, epoch)
            try:
                ops = pending.claim(conn, epoch=epoch, node=self.fence.node, limit=n, held=held)
            except StaleEpoch as e:
                raise Fenced(epoch, str(e)) from None
        self._initial_passwords(ops)
        return ops

    def _initial_passwords(self, ops: list[PendingExport]) -> None:
        """Compute the passwordProfiles of the claimed user creates now, at export time: they
        are never part of the stored payload (see sync/signin.py)."""
        creates = [op for op in ops if op.kind == "create" and op.object_type == "user"]
        if self.passwords is None or not creates:
            return
        got = self.passwords.profiles([op.anchor for op in creates])
        for op in creates:
            if op.anchor in got:
                self._profiles[op.id] = got[op.anchor]

    def _record(self, results: list[OpResult]) -> None:
        with self.store.transaction() as conn:
            for r in results:
                error = str(r.error) if r.error is not None else r.message
                pending.record_result(
                    conn,
                    r.op_id,
                    r.outcome,
                    epoch=self.fence.epoch,
                    node=self.fence.node,
                    error=error,
                    http_status=r.status,
                    request_id=r.request_id,
                    target_id=r.target_id,
                    retry_after=timedelta(seconds=r.retry_after) if r.retry_after is not None else None,
                    **({"max_attempts": 1} if r.final else {}),
                )

    # --- one batch of operations -------------------------------------------------------------
    async def _run(
        self, ops: list[PendingExport], report: ExportReport
    ) -> tuple[list[OpResult], Fenced | None]:
        results: dict[int, OpResult] = {}
        items: list[_Item] = []
        for op in ops:
            item = _Item(op)
            try:
                self._prepare(item)
            except ExportRejected as e:
                results[op.id] = self._result(item, "error", error=e, final=isinstance(e, PasswordRefused))
                continue
            items.append(item)
        fenced: Fenced | None = None
        try:
            await self._lookup([i for i in items if i.op.kind == "create"], results, report)
            await self._check_owned([i for i in items if i.op.kind == "delete"], results, report)
            await self._write([i for i in items if i.op.id not in results], results, report)
            await self._explain_denied(results)
        except Fenced as e:
            fenced = e
        except (GraphUnavailable, GraphRequestError, GraphAuthError) as e:
            # Graph as a whole failed this batch: its operations go again later.
            report.error = report.error or str(e)
            for i in items:
                if i.op.id not in results:
                    results[i.op.id] = self._result(i, "retry", message=str(e), retry_after=30.0)
        for i in items:
            if i.op.id not in results:
                why = f"fenced before it was sent: {fenced.reason}" if fenced else i.last or "not sent"
                results[i.op.id] = self._result(i, "retry", message=why, retry_after=0.0)
        return [results[op.id] for op in ops], fenced

    async def _explain_denied(self, results: dict[int, OpResult]) -> None:
        """A user change or delete refused with 403: when the user holds a directory role, that
        is why — an app-only caller without a privileged role of its own may not disable, delete
        or change the sensitive properties of an administrator (docs-contrib
        api-reference/v1.0/api/user-update.md and user-delete.md). Retrying cannot help: the
        operation is quarantined at once, its reason naming the roles and the fix."""
        for op_id, r in list(results.items()):
            if not (r.outcome == "error" and r.status == 403 and r.object_type == "user" and r.target_id):
                continue
            if r.kind not in ("update", "delete") or r.error is None:
                continue
            try:
                roles = await TenantReader(self.client).user_roles(r.target_id)
            except (GraphRequestError, GraphUnavailable) as e:
                log.info("export.roles_unknown", anchor=r.anchor, error=str(e))
                continue
            if not roles:
                continue
            action = "delete" if r.kind == "delete" else "change"
            err = ExportRejected(
                r.anchor,
                r.error.code,
                f"{r.error.message} — the user {PRIVILEGED_MARK} {', '.join(roles)}, and an app"
                f" without a privileged role of its own may not {action} it; quarantined (give the app's"
                " service principal the Privileged Authentication Administrator role, or handle the"
                " user by hand; a changed source value queues it again)",
                403,
            )
            log.warning("export.privileged_user", anchor=r.anchor, target_id=r.target_id, roles=roles)
            results[op_id] = replace(r, error=err, final=True)

    def _result(self, item: _Item, outcome: Outcome, **kw: Any) -> OpResult:
        op = item.op
        kw.setdefault("status", item.last_status)
        kw.setdefault("request_id", item.request_id)
        if "target_id" not in kw:
            kw["target_id"] = op.target_id
        return OpResult(op.id, op.object_type, op.anchor, op.kind, op.member_anchor, outcome, **kw)

    def _prepare(self, item: _Item) -> None:
        """The write for the operation (method, relative URL, body), or ExportRejected."""
        op = item.op
        coll = COLLECTION[op.object_type]
        anchor_attr = self.schema.anchor_attribute(op.object_type)  # type: ignore[arg-type]
        if op.kind == "create":
            body = {k: v for k, v in op.payload.items() if v is not None}
            value = body.get(anchor_attr)
            if not isinstance(value, str) or not value:
                raise ExportRejected(op.anchor, "NoAnchor", f"the create carries no {anchor_attr} value")
            item.anchor_value = value
            nested = nest(body)
            if op.object_type == "user" and "passwordProfile" not in nested:
                nested["passwordProfile"] = self._password_profile(op)
            item.method, item.url, item.body = "POST", f"/{coll}", nested
            return
        if op.kind in ("update", "delete") and not op.target_id:
            raise ExportRejected(op.anchor, "NoTargetId", f"the {op.kind} names no target object")
        if op.kind == "update":
            item.method, item.url, item.body = "PATCH", f"/{coll}/{op.target_id}", nest(dict(op.payload))
        elif op.kind == "delete":
            item.method, item.url = "DELETE", f"/{coll}/{op.target_id}"
        elif op.kind in ("manager_set", "manager_remove"):
            _manager_write(item, self._ref_base)
        else:
            gid, mid = op.target_id, op.member_target_id
            if not gid or not mid:
                raise ExportRejected(
                    op.anchor, "NoTargetId", f"{op.kind} {op.member_anchor}: ids not resolved"
                )
            if op.kind == "member_add":
                item.method, item.url = "POST", f"/groups/{gid}/members/$ref"
                item.body = {"@odata.id": self._ref_base + mid}
            else:
                item.method, item.url = "DELETE", f"/groups/{gid}/members/{mid}/$ref"

    def _password_profile(self, op: PendingExport) -> dict[str, Any]:
        """A user create's passwordProfile (passwordprofile.md: required on create); the password
        lives only in this request body. Raises PasswordRefused when the rules' one is unusable."""
        profile = self._profiles.pop(op.id, None) or InitialPassword()
        if profile.refused is not None:
            raise PasswordRefused(op.anchor, profile.refused)
        return {
            "password": profile.password or _password(),
            "forceChangePasswordNextSignIn": profile.force_change,
        }

    # --- reads ---------------------------------------------------------------------------------
    async def _read(self, reqs: list[SubRequest], report: ExportReport) -> dict[str, SubResponse]:
        """GET sub-requests in one batch, retried (reads are safe) until each has an answer."""
        answers: dict[str, SubResponse] = {}
        todo = list(reqs)
        for attempt in range(1, self.max_attempts + 1):
            if not todo:
                break
            wait = 0.0
            try:
                resp = await self.client.send("POST", "/$batch", body=batch.encode(todo), agent=self.agent)
                report.read_batches += 1
                report.items += len(todo)
            except httpx.TransportError:
                await asyncio.sleep(backoff(attempt, self.client.backoff_base))
                continue
            if resp.status != 200:
                if resp.status == 429 or resp.status >= 500:
                    report.throttled += resp.status == 429
                    await asyncio.sleep(resp.retry_after() or backoff(attempt, self.client.backoff_base))
                    continue
                code, message = resp.error()
                raise GraphRequestError("$batch of reads", resp.status, code, message)
            got = batch.decode(resp.content)
            rest = []
            for r in todo:
                sub = got.get(r.id)
                if sub is None or sub.status == 429 or sub.status >= 500:
                    if sub is not None and sub.status == 429:
                        report.throttled += 1
                        wait = max(wait, sub.retry_after() or 1.0)
                    else:
                        wait = max(wait, backoff(attempt, self.client.backoff_base))
                    rest.append(r)
                else:
                    answers[r.id] = sub
            todo = rest
            if todo:
                await asyncio.sleep(wait)
        if todo:
            raise GraphUnavailable(
                "$batch of reads", f"{len(todo)} reads unanswered after {self.max_attempts} tries"
            )
        return answers

    async def _lookup(self, creates: list[_Item], results: dict[int, OpResult], report: ExportReport) -> None:
        """Creates whose anchor is already in Entra ID are adopted instead of created again."""
        if not creates:
            return
        reqs = []
        for i, item in enumerate(creates):
            t = item.op.object_type
            attr = self.schema.anchor_attribute(t)  # type: ignore[arg-type]
            filt = quote(anchor_filter(attr, [item.anchor_value or ""]), safe="")
            url = f"/{COLLECTION[t]}?$filter={filt}&$select=id,{attr},{SYNC_FLAG}"
            reqs.append(SubRequest(str(i + 1), "GET", url, client_request_id=str(uuid.uuid4())))
            if recycle.restorable(t, attr):  # and in the recycle bin, in the same $batch
                reqs.append(recycle.lookup(f"d{i + 1}", item.anchor_value or ""))
        answers: dict[str, SubResponse] = {}
        size = batch.MAX_REQUESTS  # two reads per user create: up to two read batches, side by side
        for got in await asyncio.gather(
            *(self._read(reqs[k : k + size], report) for k in range(0, len(reqs), size))
        ):
            answers.update(got)
        for i, item in enumerate(creates):
            sub = answers[str(i + 1)]
            if sub.status != 200:
                code, message = error_of(sub.status, sub.body)
                err = ExportRejected(item.op.anchor, code, f"looking up the anchor: {message}", sub.status)
                results[item.op.id] = self._result(item, "error", error=err, status=sub.status)
                continue
            found = [o for o in (sub.body or {}).get("value", []) if isinstance(o, dict)]
            if not found:
                item.recheck = False
                deleted = recycle.pick(answers.get(f"d{i + 1}"), item.op.anchor, item.anchor_value or "")
                if deleted is not None:
                    self._as_restore(item, deleted)
                    continue
                self._as_create(item)
                if item.conflict is not None:  # the conflicting object is not ours
                    err = ExportRejected(item.op.anchor, "ObjectConflict", item.conflict, 400)
                    results[item.op.id] = self._result(item, "error", error=err, status=400)
                continue
            attr = self.schema.anchor_attribute(item.op.object_type)  # type: ignore[arg-type]
            mine = [o for o in found if owned_anchor(o, attr) == item.anchor_value]
            if not mine:
                err = ExportRejected(
                    item.op.anchor,
                    "ManagedElsewhere",
                    f"{found[0]['id']} carries the anchor {item.anchor_value} but is synchronized by Entra"
                    " Connect (onPremisesSyncEnabled)",
                )
                results[item.op.id] = self._result(item, "error", error=err, status=200)
                continue
            if len(mine) > 1:
                log.warning("export.duplicate_anchor", anchor=item.op.anchor, ids=[o["id"] for o in mine])
            tid = sorted(o["id"] for o in mine)[0]
            results[item.op.id] = self._result(item, "adopted", target_id=tid, status=200)

    def _as_restore(self, item: _Item, deleted: recycle.DeletedUser) -> None:
        """Send the create as the restore of the deleted user carrying its anchor."""
        if item.create is None:
            item.create = (item.method, item.url, item.body)
        item.restore_of = deleted.id
        item.conflict = None  # a create that conflicted with it: the restore answers that
        item.method, item.url, item.body = "POST", recycle.restore_url(deleted), recycle.RESTORE_BODY
        log.info("export.restore", anchor=item.op.anchor, deleted_id=deleted.id, deleted_at=deleted.deleted)

    def _as_create(self, item: _Item) -> None:
        """Back to the create (the deleted user is gone: purged, expired or restored meanwhile)."""
        if item.create is not None:
            item.method, item.url, item.body = item.create
            item.create = item.restore_of = None

    async def _check_owned(
        self, deletes: list[_Item], results: dict[int, OpResult], report: ExportReport
    ) -> None:
        """A delete runs only on an object carrying idsync's anchor; one already gone is done."""
        if not deletes:
            return
        reqs = []
        for i, item in enumerate(deletes):
            t = item.op.object_type
            attr = self.schema.anchor_attribute(t)  # type: ignore[arg-type]
            url = f"/{COLLECTION[t]}/{item.op.target_id}?$select=id,{attr},{SYNC_FLAG}"
            reqs.append(SubRequest(str(i + 1), "GET", url, client_request_id=str(uuid.uuid4())))
        answers = await self._read(reqs, report)
        for i, item in enumerate(deletes):
            sub = answers[str(i + 1)]
            op = item.op
            if sub.status == 404:
                results[op.id] = self._result(item, "ok", status=404, message="already deleted")
                continue
            if sub.status != 200:
                code, message = error_of(sub.status, sub.body)
                err = ExportRejected(op.anchor, code, f"reading before delete: {message}", sub.status)
                results[op.id] = self._result(item, "error", error=err, status=sub.status)
                continue
            attr = self.schema.anchor_attribute(op.object_type)  # type: ignore[arg-type]
            obj = sub.body if isinstance(sub.body, dict) else {}
            if owned_anchor(obj, attr) is None:
                reason = (
                    "it is synchronized by Entra Connect"
                    if obj.get(SYNC_FLAG) is True
                    else f"it carries no {attr}"
                )
                err = NotOwned(op.anchor, str(op.target_id), reason)
                log.warning("export.refused_delete", anchor=op.anchor, target_id=op.target_id, reason=reason)
                results[op.id] = self._result(item, "error", error=err, status=200)

    # --- writes --------------------------------------------------------------------------------
    async def _write(self, items: list[_Item], results: dict[int, OpResult], report: ExportReport) -> None:
        todo = list(items)
        attempt = 0
        while todo:
            attempt += 1
            recheck = [i for i in todo if i.recheck]
            if recheck:
                await self._lookup(recheck, results, report)
                todo = [i for i in todo if i.op.id not in results]
                if not todo:
                    return
            now = time.monotonic()
            first = min(i.not_before for i in todo)
            while first > now:  # Retry-After of an item; the fence is checked while waiting
                self.fence.ensure()
                await asyncio.sleep(min(first - now, 0.25))
                now = time.monotonic()
            now = time.monotonic()
            ready = [i for i in todo if i.not_before <= now]
            await self.budget.acquire(len(ready), check=self.fence.ensure)
            reqs = []
            for n, i in enumerate(ready):
                i.request_id = str(uuid.uuid4())
                reqs.append(SubRequest(str(n + 1), i.method, i.url, i.body, i.request_id))
            body = batch.encode(reqs)
            try:
                self.fence.ensure()
                if any(i.op.kind == "delete" for i in ready):
                    # A hard delete cannot be undone by the next cycle: confirm with a quorum now.
                    await asyncio.to_thread(self.fence.confirm_now)
            except Fenced:
                self.budget.refund(len(ready))
                raise
            for i in ready:
                i.attempts += 1
            try:
                # The transport checks the fence again at the wire and bounds the request by it.
                resp = await self.client.send(
                    "POST", "/$batch", body=body, agent=self.agent, fence=self.fence
                )
            except Fenced:
                self.budget.refund(len(ready))
                raise
            except httpx.TransportError as e:
                report.batches += 1
                log.info("export.batch_dropped", ops=len(ready), error=f"{type(e).__name__}: {e}")
                for i in ready:
                    self._transient(i, f"connection lost: {type(e).__name__}", None, None)
                todo = self._give_up(todo, results)
                continue
            report.batches += 1
            report.items += len(ready)
            report.writes += len(ready)
            if resp.status != 200:
                code, message = resp.error()
                if resp.status == 429:
                    report.throttled += 1
                    self.budget.throttled(resp.retry_after(), resp.headers.get("x-ms-throttle-scope"))
                if resp.status == 429 or resp.status >= 500:
                    for i in ready:
                        self._transient(
                            i, f"$batch {resp.status} {code}: {message}", resp.status, resp.retry_after()
                        )
                    todo = self._give_up(todo, results)
                    continue
                for i in ready:  # a malformed batch: idsync's bug, reported per operation
                    err = ExportRejected(i.op.anchor, code, f"$batch refused: {message}", resp.status)
                    results[i.op.id] = self._result(i, "error", error=err, status=resp.status)
                todo = [i for i in todo if i.op.id not in results]
                continue
            got = batch.decode(resp.content)
            for n, i in enumerate(ready):
                sub = got.get(str(n + 1))
                if sub is None:
                    self._transient(i, "no answer in the $batch response", None, None)
                    continue
                i.last_status = sub.status
                self.budget.observe(sub.headers)
                self._classify(i, sub, results, report)
            todo = self._give_up([i for i in todo if i.op.id not in results], results)

    def _transient(self, item: _Item, why: str, status: int | None, retry_after: float | None) -> None:
        item.last = why
        item.last_status = status
        wait = retry_after if retry_after is not None else backoff(item.attempts, self.client.backoff_base)
        item.not_before = time.monotonic() + wait
        if item.op.kind == "create":
            item.recheck = True  # it may have been applied: look before sending again

    def _give_up(self, todo: list[_Item], results: dict[int, OpResult]) -> list[_Item]:
        rest = []
        for i in todo:
            if i.op.id in results:
                continue
            if i.attempts >= self.max_attempts:
                results[i.op.id] = self._result(i, "retry", message=i.last, retry_after=60.0)
            else:
                rest.append(i)
        return rest

    def _classify(
        self, item: _Item, sub: SubResponse, results: dict[int, OpResult], report: ExportReport
    ) -> None:
        op = item.op
        st = sub.status
        if 200 <= st < 300:
            tid = op.target_id
            if op.kind == "create" and isinstance(sub.body, dict):
                tid = str(sub.body.get("id") or "") or None
            if item.restore_of is not None:
                report.restored += 1
                tid = tid or item.restore_of
                msg = f"restored from the recycle bin (deletedItems {item.restore_of})"
                results[op.id] = self._result(item, "ok", target_id=tid, status=st, message=msg)
                return
            results[op.id] = self._result(item, "ok", target_id=tid, status=st)
            return
        code, message = error_of(st, sub.body)
        if st == 429:
            report.throttled += 1
            ra = sub.retry_after()
            self.budget.throttled(ra, sub.headers.get("x-ms-throttle-scope"))
            self._transient(item, f"429 {code}: {message}", st, ra if ra is not None else 1.0)
            return
        if st in RETRY_STATUSES:
            self._transient(item, f"{st} {code}: {message}", st, sub.retry_after())
            return
        if item.restore_of is not None and st not in (401, 429) and st < 500:
            if st == 404:  # gone from the recycle bin meanwhile: look again, then create
                item.recheck = True
                item.last = f"{st} {code}: {message}"
                self._as_create(item)
                return
            err = recycle.refused(op.anchor, item.restore_of, st, sub.body)
            log.warning(
                "export.restore_refused", anchor=op.anchor, deleted_id=item.restore_of, error=str(err)
            )
            final = st == 403 or _is_conflict(sub.body)  # no retry fixes these: quarantined at once
            results[op.id] = self._result(item, "error", error=err, status=st, final=final)
            return
        if op.kind == "delete" and st == 404:
            results[op.id] = self._result(item, "ok", status=st, message="already deleted")
            return
        if op.kind == "member_remove" and st in (400, 404):
            results[op.id] = self._result(item, "ok", status=st, message="not a member")
            return
        if op.kind == "manager_remove" and st == 404:
            results[op.id] = self._result(item, "ok", status=st, message="no manager")
            return
        if op.kind == "member_add" and st == 400 and ALREADY_MEMBER in message:
            results[op.id] = self._result(item, "ok", status=st, message="already a member")
            return
        if op.kind == "create" and st == 400 and _is_conflict(sub.body):
            item.recheck = True  # our own earlier POST, or a foreign object: the lookup decides
            item.last = f"{st} {code}: {message}"
            item.conflict = f"{code}: {message}"
            return
        err = ExportRejected(op.anchor, code, message, st)
        results[op.id] = self._result(item, "error", error=err, status=st)


def _manager_write(item: _Item, ref_base: str) -> None:
    """PUT /users/{id}/manager/$ref with the manager's reference (docs-contrib
    api-reference/v1.0/api/user-post-manager.md), or DELETE it (user-delete-manager.md)."""
    op = item.op
    uid, mid = op.target_id, op.member_target_id
    if not uid or (op.kind == "manager_set" and not mid):
        raise ExportRejected(op.anchor, "NoTargetId", f"{op.kind} {op.member_anchor}: ids not resolved")
    item.url = f"/users/{uid}/manager/$ref"
    if op.kind == "manager_set":
        item.method, item.body = "PUT", {"@odata.id": ref_base + str(mid)}
    else:
        item.method = "DELETE"


def _is_conflict(body: Any) -> bool:
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return False
    details: Iterable[Any] = err.get("details") or []
    return any(isinstance(d, dict) and d.get("code") == "ObjectConflict" for d in details) or (
        "already exists" in str(err.get("message", ""))
    )
