"""The daemon's view of the tenant: the fatal checks at start, and what every cycle needs.

At start (`startup()`): a token must be obtainable and carry the permissions idsync cannot work
without (users and, when groups are synced, groups); otherwise the daemon refuses to start and
says what is missing and how to fix it. A group anchor extension that is not registered is not
fatal: group imports and group diffs stop, with an error naming the fix (`idsync preflight
--fix`), and users go on. Every cycle (`refresh()`): the tenant's domains are re-read now and then
and kept in the store for the UPN rules, and a missing extension is looked for again, so that
groups resume by themselves once it is registered.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import structlog

from idsync.model import OBJECT_TYPES, ObjectType
from idsync.store import desired
from idsync.store.db import Store
from idsync.sync.tenant import STORE_KEY
from idsync.target.errors import GraphRequestError, GraphUnavailable, TargetError
from idsync.target.tenant import REQUIREMENTS, TenantReader, missing, token_roles

log = structlog.get_logger(__name__)

DOMAINS_EVERY = 600.0  # seconds between two reads of the tenant's domains


class TenantNotReady(TargetError):
    """The tenant or the app lacks what idsync cannot run without; the message says what and how."""


@dataclass
class TenantWatch:
    """Start-up checks and per-cycle tenant facts for one daemon."""

    reader: TenantReader
    store: Store
    group_anchor: str
    groups_enabled: bool = True
    blocked: dict[str, str] = field(default_factory=dict)  # object type -> why it is held back
    _domains_at: float = field(default=-1e18, init=False)
    _domains_denied: bool = field(default=False, init=False)

    @property
    def import_types(self) -> tuple[ObjectType, ...]:
        """The types the target import may read (a blocked type's $select would be refused)."""
        return tuple(t for t in OBJECT_TYPES if t not in self.blocked)

    async def startup(self) -> list[str]:
        """The fatal checks; raises TenantNotReady. Returns the warnings it logged."""
        warnings: list[str] = []
        token = await self.reader.token()  # GraphAuthError propagates: the daemon cannot start
        if token is not None:
            roles = token_roles(token)
            needed = [r for r in missing(roles) if r.fatal and (self.groups_enabled or "group" not in r.what)]
            if needed:
                lines = "; ".join(
                    f"to {r.what} it needs one of {', '.join(r.any_of)} ({r.page})" for r in needed
                )
                raise TenantNotReady(
                    f"the app's token lacks application permissions idsync cannot work without: {lines}."
                    f" Grant them (admin consent) and start again. It carries: {', '.join(roles) or 'none'}"
                )
            for r in missing(roles):
                if not r.fatal:
                    warnings.append(f"without one of {', '.join(r.any_of)} idsync cannot {r.what}")
        await self._check_extension()
        await self._read_domains(force=True)
        for w in warnings:
            log.warning("tenant.permission_missing", problem=w)
        return warnings

    async def refresh(self) -> None:
        """Per cycle: domains now and then, and the extension again while groups are held."""
        if "group" in self.blocked:
            await self._check_extension()
        await self._read_domains()

    async def _check_extension(self) -> None:
        if not self.groups_enabled:
            return
        try:
            state = await self.reader.extension(self.group_anchor)
        except (GraphRequestError, GraphUnavailable) as e:
            # Cannot tell (no permission to list extensions, Graph down): do not hold groups on a guess.
            log.warning("tenant.extension_unknown", extension=self.group_anchor, error=str(e))
            return
        if state.serves("Group"):
            if self.blocked.pop("group", None) is not None:
                log.info("tenant.group_exports_resumed", extension=self.group_anchor)
            return
        why = (
            f"the group anchor extension {self.group_anchor} is not registered for groups in the tenant"
            " (run `idsync preflight --fix`); group imports and exports are stopped, users go on"
        )
        if self.blocked.get("group") != why:
            log.error("tenant.group_exports_stopped", extension=self.group_anchor, reason=why)
        self.blocked["group"] = why

    async def _read_domains(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self._domains_denied or (not force and now - self._domains_at < DOMAINS_EVERY):
            return
        try:
            domains = await self.reader.domains()
        except GraphRequestError as e:
            if e.status == 403:
                self._domains_denied = True  # said once; the UPN check stays off
            log.warning("tenant.domains_unreadable", error=str(e), upn_check="off")
            return
        except GraphUnavailable as e:
            log.warning("tenant.domains_unreadable", error=str(e))
            return
        self._domains_at = now
        await asyncio.to_thread(self._save, domains.to_json())
        log.debug("tenant.domains", verified=sorted(domains.verified), initial=domains.initial)

    def _save(self, value: str) -> None:
        with self.store.transaction() as conn:
            if desired.get_meta(conn, STORE_KEY) != value:
                desired.set_meta(conn, STORE_KEY, value)


__all__ = ["REQUIREMENTS", "TenantNotReady", "TenantWatch"]
