"""The leader's AD export: claim the queue's AD rows and write them, fenced like Graph writes.

Each batch is claimed in a transaction that checks the fence row and the store's export epoch;
the fence is asked again right before each LDAP write (directory.py). A Fenced stops the run
between writes; what was claimed and not written is claimed again by the next leader.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from idsync import metrics
from idsync.fencing import Fence, Fenced
from idsync.store import pending
from idsync.store import writeback as wbstore
from idsync.store.db import Store
from idsync.store.pending import PendingExport
from idsync.writeback.directory import AdDirectory, WritebackUnavailable, WriteResult

log = structlog.get_logger(__name__)


@dataclass
class AdExportReport:
    attempted: int = 0
    ok: int = 0
    failed: int = 0
    fenced: str = ""
    errors: list[str] = field(default_factory=list)

    def sentence(self) -> str:
        if not self.attempted and not self.fenced:
            return "AD: nothing to write"
        s = f"AD: wrote {self.attempted} ({self.ok} ok, {self.failed} rejected)"
        return s + (f"; stopped: {self.fenced}" if self.fenced else "")


class AdExporter:
    """Runs the AD operations of the queue against AD."""

    def __init__(self, store: Store, directory: AdDirectory, groups_ou: str | None, batch: int = 50) -> None:
        self.store = store
        self.directory = directory
        self.groups_ou = groups_ou
        self.batch = batch

    def export(self, fence: Fence) -> AdExportReport:
        rep = AdExportReport()
        unrun: list[int] = []
        try:
            while True:
                fence.ensure()
                with self.store.transaction() as conn:
                    ops = wbstore.claim(conn, epoch=fence.epoch, node=fence.node, limit=self.batch)
                if not ops:
                    return rep
                unrun = [o.id for o in ops]
                for op in ops:
                    fence.ensure()
                    res = self._apply(fence, op)
                    self._record(fence, op, res)
                    unrun.remove(op.id)
                    rep.attempted += 1
                    if res.outcome in ("ok", "adopted"):
                        rep.ok += 1
                    elif res.outcome == "error":
                        rep.failed += 1
                        rep.errors.append(res.error or "")
        except Fenced as exc:
            rep.fenced = exc.reason
        except pending.StaleEpoch as exc:
            rep.fenced = str(exc)
        except WritebackUnavailable as exc:
            log.error("writeback.unavailable", error=str(exc))
            rep.fenced = str(exc)
        finally:
            if unrun:
                with self.store.transaction() as conn:
                    wbstore.release(conn, unrun, fence.epoch)
        return rep

    def _record(self, fence: Fence, op: PendingExport, res: WriteResult) -> None:
        with self.store.transaction() as conn:
            pending.record_result(
                conn,
                op.id,
                res.outcome,  # type: ignore[arg-type]
                epoch=fence.epoch,
                node=fence.node,
                error=res.error,
                max_attempts=1 if res.final else 5,
            )
        metrics.WRITEBACK_WRITES.labels(f"{op.kind} {op.object_type}", res.outcome).inc()
        log.info(
            "writeback.write",
            op=op.kind,
            type=op.object_type,
            anchor=op.anchor,
            outcome=res.outcome,
            error=res.error,
        )

    def _apply(self, fence: Fence, op: PendingExport) -> WriteResult:
        p = op.payload
        d = self.directory
        if op.object_type == "user":
            return d.stamp_consistency_guid(fence, str(p["objectGUID"]))
        attrs = {
            "displayName": p.get("displayName"),
            "description": p.get("description"),
            "member": p.get("member"),
        }
        cloud_id = str(p["cloud_id"])
        ou = self.groups_ou
        if ou is None:
            return WriteResult("error", "writeback.groups_ou is not set", final=True)
        if op.kind == "create":
            found = d.find_group(ou, cloud_id)  # adds look up by anchor first (a crashed leader's add)
            if found is not None:
                res = d.replace(fence, found, attrs)
                return WriteResult("adopted") if res.outcome == "ok" else res
            return d.add_group(fence, ou, cloud_id, attrs)
        if op.kind == "update":
            return d.replace(fence, str(p["dn"]), attrs)
        if op.kind == "delete":
            return d.delete(fence, str(p["dn"]))
        return WriteResult("error", f"unknown writeback operation {op.kind}", final=True)
