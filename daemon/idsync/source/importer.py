"""The source importer: the one entry point the daemon calls (blocking; run it in a thread).

`full_import()` reads everything and sweeps what it did not see; `delta_import()` continues from
the stored position in the configured mode and falls back to a full import (with a log event
saying why) when there is no usable position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import psycopg
import structlog

from idsync.model import OBJECT_TYPES
from idsync.source import dirsync, syncrepl, usn, watermark
from idsync.source.connection import LdapConnector, LdapSession
from idsync.source.controls import EXTENDED_DN_OID, Control, extended_dn_control
from idsync.source.errors import CookieRejected
from idsync.source.full import run_full
from idsync.source.normalize import Normalizer
from idsync.source.run import AfterCommit, RunContext
from idsync.source.scope import Scope, naming_context
from idsync.source.settings import LdapSourceSettings
from idsync.store import runs, source_space
from idsync.store.db import Store

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ImportResult:
    """What one import did. `fallback` says why a requested delta became a full import."""

    kind: str  # "full" | "delta"
    mode: str  # "paged" | "dirsync" | "usn" | "syncrepl"
    run_id: int
    added: int
    updated: int
    deleted: int
    unchanged: int
    errors: int
    seconds: float
    server: str
    watermark: str | None = None
    fallback: str | None = None

    @property
    def changed(self) -> int:
        return self.added + self.updated + self.deleted

    def sentence(self) -> str:
        """One line for the log and the operator."""
        why = f" (delta not possible: {self.fallback})" if self.fallback else ""
        return (
            f"{self.kind} import ({self.mode}) from {self.server}: {self.added} added, "
            f"{self.updated} updated, {self.deleted} deleted, {self.unchanged} unchanged, "
            f"{self.errors} quarantined in {self.seconds:.1f} s{why}"
        )


class SourceImporter:
    """Imports the directory into the source space of `store`, per `settings`."""

    def __init__(
        self,
        settings: LdapSourceSettings,
        store: Store,
        *,
        connector: LdapConnector | None = None,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.connector = connector or LdapConnector(settings)
        self.after_commit = after_commit
        self.scope = Scope.from_settings(settings)
        self.normalizer = Normalizer(settings.kind, self.scope.attribute_names, settings.max_value_bytes)

    def close(self) -> None:
        """Close this importer's directory connections."""
        self.connector.close()

    # --- helpers --------------------------------------------------------------------------------

    def _controls(self, session: LdapSession) -> list[Control]:
        if self.settings.kind == "ad" and EXTENDED_DN_OID in session.info.supported_controls:
            return [extended_dn_control()]
        return []

    def _ncs(self, session: LdapSession) -> list[str]:
        ncs: dict[str, None] = {}
        for base in self.scope.search_bases:
            ncs[naming_context(base, session.info.naming_contexts) or base] = None
        return list(ncs)

    def _context(self, session: LdapSession, run_id: int, kind: str) -> RunContext:
        return RunContext(
            self.settings,
            self.store,
            session,
            self.scope,
            self.normalizer,
            run_id,
            kind,
            after_commit=self.after_commit,
        )

    def _result(
        self, ctx: RunContext, kind: str, mode: str, wm: str | None, fallback: str | None
    ) -> ImportResult:
        c = ctx.counts
        result = ImportResult(
            kind, mode, ctx.run_id, c.added, c.updated, c.deleted, c.unchanged, c.errors,
            ctx.elapsed, ctx.session.info.name, wm, fallback,
        )  # fmt: skip
        log.info("source.import_done", sentence=result.sentence(), run=ctx.run_id, kind=kind, mode=mode)
        return result

    # --- full import ----------------------------------------------------------------------------

    def full_import(self, *, fallback: str | None = None) -> ImportResult:
        """Read every in-scope object, commit page by page, then mark unseen objects deleted.

        In a delta mode, the delta position is taken *before* reading, and stored with the
        sweep, so the next delta replays whatever changed while the full import ran.
        """
        session = self.connector.session(check=True)
        run_id = runs.start(self.store, "source.full")
        ctx = self._context(session, run_id, "full")
        log.info("source.import_start", kind="full", run=run_id, server=session.info.name, reason=fallback)
        try:
            save, summary = self._baseline(session)
            run_full(ctx, self._controls(session))
            with self.store.transaction() as conn:
                ctx.counts.deleted += source_space.sweep_unseen(conn, run_id, OBJECT_TYPES)
                source_space.resolve_dn_refs(conn)
                save(conn)
                ctx.counts.detail.update(pages=ctx.pages, fallback=fallback)
                runs.finish(conn, run_id, ctx.counts, watermark=summary)
        except BaseException as exc:
            runs.fail(self.store, run_id, ctx.counts, f"{type(exc).__name__}: {exc}")
            raise
        return self._result(ctx, "full", self.settings.delta_mode if summary else "paged", summary, fallback)

    def _baseline(self, session: LdapSession) -> tuple[Callable[[psycopg.Connection], None], str | None]:
        """The delta position to store after this full import, read now; (writer, summary)."""
        mode, fp = self.settings.delta_mode, self.scope.fingerprint()
        positions: list[tuple[str, watermark.Position]] = []
        if mode == "dirsync":
            for nc in self._ncs(session):
                pos = watermark.Position(session.info.name, fp, dirsync.baseline(session, nc))
                positions.append((dirsync.watermark_name(nc), pos))
        elif mode == "usn":
            hcu, inv = usn.position(session)
            positions.append(
                (
                    usn.WATERMARK,
                    watermark.Position(session.info.name, fp, state={"usn": hcu, "invocation_id": inv}),
                )
            )
        elif mode == "syncrepl":
            for base in self.scope.search_bases:
                cookie = syncrepl.baseline(session, base)
                if cookie:
                    positions.append(
                        (
                            f"{syncrepl.WATERMARK}:{base.lower()}",
                            watermark.Position(session.info.name, fp, cookie),
                        )
                    )

        def save(conn: psycopg.Connection) -> None:
            for name, pos in positions:
                watermark.save(conn, name, pos)

        summary = "; ".join(p.summary() for _, p in positions) or None
        return save, summary

    # --- delta import ---------------------------------------------------------------------------

    def delta_import(self) -> ImportResult:
        """Apply what changed since the stored position; a full import when there is none."""
        mode = self.settings.delta_mode
        if mode == "none":
            return self.full_import()
        session = self.connector.session(check=True)
        try:
            plan = self._delta_plan(session)
        except CookieRejected as exc:
            log.warning("source.delta_fallback", mode=mode, reason=exc.reason, server=exc.server)
            return self.full_import(fallback=exc.reason)
        run_id = runs.start(self.store, "source.delta")
        ctx = self._context(session, run_id, "delta")
        try:
            summary = plan(ctx)
            with self.store.transaction() as conn:
                source_space.resolve_dn_refs(conn)
                ctx.counts.detail.update(pages=ctx.pages)
                runs.finish(conn, run_id, ctx.counts, watermark=summary)
        except CookieRejected as exc:
            runs.fail(self.store, run_id, ctx.counts, str(exc))
            log.warning("source.delta_fallback", mode=mode, reason=exc.reason, server=exc.server)
            return self.full_import(fallback=exc.reason)
        except BaseException as exc:
            runs.fail(self.store, run_id, ctx.counts, f"{type(exc).__name__}: {exc}")
            raise
        return self._result(ctx, "delta", mode, summary, None)

    def _check(self, pos: watermark.Position | None, session: LdapSession, mode: str) -> watermark.Position:
        if pos is None:
            raise CookieRejected(mode, session.info.name, "no stored position (first run)")
        if pos.scope != self.scope.fingerprint():
            raise CookieRejected(
                mode, session.info.name, "the import scope changed since the position was taken"
            )
        if pos.server != session.info.name:
            raise CookieRejected(
                mode,
                session.info.name,
                f"position was issued by {pos.server}, connected to {session.info.name}",
            )
        return pos

    def _delta_plan(self, session: LdapSession) -> Callable[[RunContext], str]:
        """Check the stored positions now (before a run starts); return the function that applies them."""
        mode = self.settings.delta_mode
        if mode == "dirsync":
            with self.store.transaction() as conn:
                starts = [(nc, watermark.load(conn, dirsync.watermark_name(nc))) for nc in self._ncs(session)]
            checked = [(nc, self._check(pos, session, mode)) for nc, pos in starts]

            def apply_dirsync(ctx: RunContext) -> str:
                return "; ".join(dirsync.run_delta(ctx, nc, pos).summary() for nc, pos in checked)

            return apply_dirsync
        if mode == "usn":
            with self.store.transaction() as conn:
                pos = self._check(watermark.load(conn, usn.WATERMARK), session, mode)
            hcu, inv = usn.position(session)
            if inv != pos.state.get("invocation_id"):
                raise CookieRejected(mode, session.info.name, f"invocationId changed to {inv} (DC restored?)")
            since = int(pos.state.get("usn", 0))
            if hcu < since:
                raise CookieRejected(
                    mode, session.info.name, f"highestCommittedUSN {hcu} is below the stored {since}"
                )

            def apply_usn(ctx: RunContext) -> str:
                usn.run_delta(ctx, self._ncs(session), since, self._controls(session))
                new = watermark.Position(
                    session.info.name, pos.scope, state={"usn": hcu, "invocation_id": inv}
                )
                with self.store.transaction() as conn:
                    watermark.save(conn, usn.WATERMARK, new)
                return new.summary()

            return apply_usn
        if mode == "syncrepl":
            plans = []
            with self.store.transaction() as conn:
                for base in self.scope.search_bases:
                    name = f"{syncrepl.WATERMARK}:{base.lower()}"
                    plans.append((name, base, self._check(watermark.load(conn, name), session, mode)))

            def apply_syncrepl(ctx: RunContext) -> str:
                out = []
                for name, base, pos in plans:

                    def save(
                        conn: psycopg.Connection,
                        cookie: bytes,
                        name: str = name,
                        pos: watermark.Position = pos,
                    ) -> None:
                        watermark.save(conn, name, watermark.Position(pos.server, pos.scope, cookie))

                    cookie = syncrepl.run_delta(ctx, base, pos.cookie, save)
                    out.append(watermark.Position(pos.server, pos.scope, cookie).summary())
                return "; ".join(out)

            return apply_syncrepl
        raise CookieRejected(mode, session.info.name, f"unknown delta mode {mode!r}")
