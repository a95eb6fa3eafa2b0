"""One live process per store schema: a PostgreSQL session advisory lock held for the process's
life on a dedicated connection (not a pooled one, which could be recycled and drop the lock).

PostgreSQL releases the lock when the holder's connection ends, so a crashed process frees it at
once; a second live process gets a clear error naming the holder (its application_name says node,
host and pid).
"""

from __future__ import annotations

import contextlib
import os
import socket

import psycopg
import structlog

from idsync.store.db import check_schema_name, redact_dsn
from idsync.store.errors import StoreError, StoreUnavailable

log = structlog.get_logger(__name__)

# The first key of idsync's two-key advisory locks ("ID"+"SY"); the second is the schema's hash.
LOCK_CLASS = 0x49445359


class SchemaInUse(StoreError):
    """Another live idsync process holds this schema."""

    def __init__(self, node: str, schema: str, holder: str) -> None:
        self.node = node
        self.schema = schema
        self.holder = holder
        super().__init__(
            f"node {node!r}: store schema {schema!r} is in use by another idsync process ({holder}); "
            "one process per schema: stop that one, or give this node its own [store] schema"
        )


class IdentityLock:
    """Holds `pg_try_advisory_lock(LOCK_CLASS, hashtext(schema))` while the process lives."""

    def __init__(self, dsn: str, schema: str, node: str, *, connect_timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.schema = check_schema_name(schema)
        self.node = node
        self.connect_timeout = connect_timeout
        self.conn: psycopg.Connection | None = None
        self.label = f"idsync node={node} host={socket.gethostname()} pid={os.getpid()}"

    def acquire(self) -> IdentityLock:
        """Take the lock or raise SchemaInUse (StoreUnavailable when PostgreSQL cannot be reached)."""
        try:
            conn = psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=max(1, int(self.connect_timeout)),
                application_name=self.label[:63],
            )
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(
                f"cannot reach PostgreSQL at {redact_dsn(self.dsn)}: {str(exc).strip()}"
            ) from exc
        row = conn.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s)), hashtext(%s)",
            (LOCK_CLASS, self.schema, self.schema),
        ).fetchone()
        assert row is not None
        if not row[0]:
            holder = self._holder(conn, int(row[1]))
            conn.close()
            raise SchemaInUse(self.node, self.schema, holder)
        self.conn = conn
        log.info("store.identity_locked", schema=self.schema, node=self.node)
        return self

    def _holder(self, conn: psycopg.Connection, key: int) -> str:
        rows = conn.execute(
            "SELECT a.pid, a.application_name, a.client_addr::text, a.backend_start"
            " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::bigint::oid"
            " AND l.objid = (%s::bigint & 4294967295)::oid AND l.objsubid = 2",
            (LOCK_CLASS, key),
        ).fetchall()
        if not rows:
            return "holder unknown"
        pid, app, addr, started = rows[0]
        where = f" from {addr}" if addr else ""
        return (
            f"{app or 'unnamed session'}{where}, PostgreSQL backend {pid} since {started:%Y-%m-%d %H:%M:%S%z}"
        )

    def check(self) -> None:
        """Between cycles: the lock still held (re-taken after a PostgreSQL restart) or SchemaInUse."""
        conn = self.conn
        if conn is not None and not conn.closed:
            try:
                conn.execute("SELECT 1")
                return
            except psycopg.Error:
                pass
        self.release()
        self.acquire()
        log.warning("store.identity_relocked", schema=self.schema)

    def release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()  # ends the session: PostgreSQL drops the lock with it
