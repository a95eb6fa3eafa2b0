"""Versioned SQL migrations, applied at start-up under an advisory lock.

Two processes starting at once serialize on `pg_advisory_lock`; the second finds the work done.
Each migration runs in its own transaction together with its row in `schema_migrations`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg
import structlog
from psycopg import sql

from idsync.store.db import Store, check_schema_name
from idsync.store.errors import MigrationError, SchemaTooNew

log = structlog.get_logger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Advisory-lock namespace of idsync migrations (first key of the two-int form).
_LOCK_NS = 0x1D5C


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """The migrations shipped with this build, in version order."""
    out = []
    for entry in resources.files("idsync.store.migrations").iterdir():
        m = _FILE.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    out.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in out]
    if versions != list(range(1, len(out) + 1)):
        raise MigrationError(f"migration versions must be 1..n without gaps, found {versions}")
    return out


def code_version() -> int:
    return len(available())


def _current_version(conn: psycopg.Connection, schema: str) -> int:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.schema_migrations",)).fetchone()
    if not row or not row[0]:
        return 0
    got = conn.execute(
        sql.SQL("SELECT coalesce(max(version), 0) FROM {}.schema_migrations").format(sql.Identifier(schema))
    ).fetchone()
    return int(got[0]) if got else 0


def migrate(store: Store) -> list[int]:
    """Bring the instance schema up to this build's version; return the versions applied.

    Raises SchemaTooNew when the schema is ahead of the code (a newer idsync migrated it).
    """
    schema = check_schema_name(store.schema)
    migrations = available()
    applied: list[int] = []
    with store.connection() as conn:
        conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_LOCK_NS, schema))
        try:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
                    " version int PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(sql.Identifier(schema))
            )
            current = _current_version(conn, schema)
            if current > len(migrations):
                raise SchemaTooNew(schema, current, len(migrations))
            for mig in migrations[current:]:
                try:
                    with conn.transaction():
                        conn.execute(
                            sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(schema))
                        )
                        conn.execute(mig.sql.encode())
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                            (mig.version, mig.name),
                        )
                except psycopg.OperationalError:
                    raise  # the server went away: not the migration's fault, the caller may retry
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {mig.version:04d}_{mig.name} failed on schema {schema!r}: "
                        f"{str(exc).strip()}"
                    ) from exc
                applied.append(mig.version)
                log.info("store.migrated", schema=schema, version=mig.version, name=mig.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_NS, schema))
    return applied


def check_version(store: Store) -> int:
    """The schema's version; raises SchemaTooNew if it is ahead of this build."""
    with store.connection() as conn:
        current = _current_version(conn, store.schema)
    if current > code_version():
        raise SchemaTooNew(store.schema, current, code_version())
    return current
