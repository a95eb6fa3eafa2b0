"""Writeback as one instance runs it: plan every cycle (every node), export on the leader."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

import structlog

from idsync.config import Config
from idsync.config.writeback import WritebackSettings
from idsync.fencing import Fence
from idsync.source.settings import LdapSourceSettings
from idsync.store import writeback as wbstore
from idsync.store.db import Store
from idsync.writeback.directory import AdConnection, AdDirectory, WritebackUnavailable
from idsync.writeback.export import AdExporter, AdExportReport
from idsync.writeback.plan import group_ops, guid_ops

log = structlog.get_logger(__name__)

EXCLUDE_FILTER = "(!(adminDescription=Group_*))"


@dataclass(frozen=True)
class PlanReport:
    ok: bool
    ops: int = 0
    confirmed: int = 0
    written: int = 0
    error: str = ""

    def sentence(self) -> str:
        if not self.ok:
            return f"writeback not planned: {self.error}"
        return f"writeback {self.ops} pending"


def source_settings(cfg: Config) -> LdapSourceSettings:
    """The source import's settings, with written-back groups kept out of it: the groups OU is
    excluded and groups marked Group_<id> are filtered out, so a group written back from the cloud
    never comes back up to Graph as a new group (no loop)."""
    s = LdapSourceSettings.from_config(cfg.source)
    wb = cfg.writeback
    if not (wb.enabled and wb.groups):
        return s
    excl = s.exclude_ous + ((wb.groups_ou,) if wb.groups_ou else ())
    gf = s.group_filter or "(objectClass=group)"
    return replace(s, exclude_ous=excl, group_filter=f"(&{gf}{EXCLUDE_FILTER})")


def connection(cfg: Config) -> AdConnection:
    wb = cfg.writeback
    ldap = cfg.source.ldap
    assert wb.bind_dn is not None  # writeback_problems() requires it when enabled
    return AdConnection(
        urls=tuple(ldap.urls),
        bind_dn=wb.bind_dn,
        password=wb.password,
        start_tls=ldap.start_tls,
        ca_file=ldap.ca_file,
        connect_timeout=ldap.connect_timeout_seconds,
        write_timeout=wb.write_timeout_seconds,
    )


class Writeback:
    """Plans and (on the leader) exports the writeback operations of one instance."""

    def __init__(
        self, settings: WritebackSettings, store: Store, directory: AdDirectory, settle: float
    ) -> None:
        self.settings = settings
        self.store = store
        self.directory = directory
        self.settle = timedelta(seconds=settle)
        self.exporter = AdExporter(store, directory, settings.groups_ou if settings.groups else None)

    @classmethod
    def from_config(cls, cfg: Config, store: Store) -> Writeback:
        return cls(cfg.writeback, store, AdDirectory(connection(cfg)), cfg.sync.export_settle_seconds)

    def plan(self, *, groups_complete: bool = True) -> PlanReport:
        """Read AD's written-back groups, compute the operations, refresh the queue's AD rows.
        Reads only: a staging node runs it too and writes nothing to AD.

        Groups are planned only after a complete import of the cloud's groups this cycle
        (`groups_complete`): a partial one (a first import still paging, a failed one) would
        look like deleted cloud groups. Until then their queue rows stay as they are."""
        wb = self.settings
        plan_groups = wb.groups and groups_complete
        try:
            ad = self.directory.groups(wb.groups_ou) if plan_groups and wb.groups_ou else {}
        except WritebackUnavailable as exc:
            log.error("writeback.plan_failed", error=str(exc))
            return PlanReport(False, error=str(exc))
        types = ["user"] + (["group"] if plan_groups else [])
        with self.store.transaction() as conn:
            ops = []
            if plan_groups:
                cloud = wbstore.cloud_groups(conn)
                ops += group_ops(cloud, ad, wb.in_scope)
                wbstore.note_skipped(conn, [g for g in cloud if wb.in_scope(g.display_name)])
            if wb.consistency_guid:
                ops += guid_ops(wbstore.unstamped_users(conn))
            got = wbstore.reconcile(conn, ops, self.settle, types)
        if wb.groups and not groups_complete:
            log.info("writeback.groups_held", reason="the cloud groups' import is not complete this cycle")
        return PlanReport(True, len(ops), got["confirmed"], got["written"])

    def export(self, fence: Fence) -> AdExportReport:
        return self.exporter.export(fence)

    def close(self) -> None:
        self.directory.close()
