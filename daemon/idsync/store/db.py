"""The connection pool of one instance's schema; every SQL statement in idsync goes through it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from idsync.store.errors import StoreError, StoreUnavailable

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def redact_dsn(dsn: str) -> str:
    """The DSN with any password hidden, for messages and logs."""
    dsn = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)(\S+)", r"\1***", dsn, flags=re.IGNORECASE)


def check_schema_name(schema: str) -> str:
    """A schema name must be a plain lower-case PostgreSQL identifier (no quoting games)."""
    if not _IDENT.match(schema):
        raise StoreError(
            f"schema name {schema!r} is not a plain identifier (lower-case letters, digits, _; max 63)"
        )
    return schema


class Store:
    """A psycopg pool whose connections all have `search_path` set to the instance's schema.

    Connections are synchronous: the importers run in worker threads (ldap3 is blocking), and the
    asyncio loop bridges to them with `asyncio.to_thread`.
    """

    def __init__(
        self,
        dsn: str,
        schema: str,
        *,
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout: float = 5.0,
        statement_timeout: float | None = None,
    ) -> None:
        self.dsn = dsn
        self.schema = check_schema_name(schema)
        self.connect_timeout = connect_timeout
        self._statement_timeout_ms = int(statement_timeout * 1000) if statement_timeout else 0
        self._pool = ConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            kwargs={"connect_timeout": max(1, int(connect_timeout)), "application_name": "idsync"},
            configure=self._configure,
            # A pooled connection may be dead after a PostgreSQL restart: test it on checkout.
            check=ConnectionPool.check_connection,
            open=False,
            name=f"idsync-{schema}",
        )

    def _configure(self, conn: psycopg.Connection) -> None:
        conn.autocommit = True
        conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(self.schema)))
        if self._statement_timeout_ms:
            conn.execute(sql.SQL("SET statement_timeout = {}").format(self._statement_timeout_ms))
        conn.autocommit = False

    def open(self) -> Store:
        """Open the pool and wait until PostgreSQL answers, or raise StoreUnavailable."""
        try:
            probe = psycopg.connect(self.dsn, connect_timeout=max(1, int(self.connect_timeout)))
            probe.close()
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(
                f"cannot reach PostgreSQL at {redact_dsn(self.dsn)}: {str(exc).strip()}"
            ) from exc
        self._pool.open(wait=True, timeout=self.connect_timeout)
        return self

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        try:
            with self._pool.connection(timeout=self.connect_timeout) as conn:
                yield conn
        except PoolTimeout as exc:
            raise StoreUnavailable(
                f"no PostgreSQL connection available within {self.connect_timeout}s ({redact_dsn(self.dsn)})"
            ) from exc

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection in autocommit mode, for reads and statements that manage their own scope."""
        with self.transaction() as conn:
            conn.autocommit = True
            try:
                yield conn
            finally:
                conn.autocommit = False
