"""Versioned SQL migrations, applied at start-up under an advisory lock.

Two processes starting at once serialize on `pg_advisory_lock`; the second finds the work done.
Each migration runs in its own transaction together with its row in `schema_migrations`, which
records the SHA-256 of the file applied. A shipped migration is immutable: at start-up a recorded
migration whose file was edited or replaced stops the daemon (MigrationMismatch), and fixes ship
as new migrations.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
import structlog
from psycopg import sql

from idsync.store.db import Store, check_schema_name
from idsync.store.errors import MigrationError, MigrationMismatch, SchemaTooNew

log = structlog.get_logger(__name__)

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Advisory-lock namespace of idsync migrations (first key of the two-int form).
_LOCK_NS = 0x1D5C

# Migrations that were shipped once and then replaced under the same version, before versions
# carried checksums. A schema that recorded one of them is accepted; a later migration repairs
# what the replacement would have created (0006_desired_gone_repair for 0005_journal_creates).
RETIRED: dict[tuple[int, str], str] = {
    (5, "journal_creates"): "31ae5ffeafeb82a0b7dc2f7fcf0ac00431f3a8ddcdbf0d58516f1a98315f2b9d",
}


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"

    @property
    def checksum(self) -> str:
        """SHA-256 of the file as shipped (hex)."""
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AppliedMigration:
    """One row of `schema_migrations`; `checksum` is None for rows written before checksums."""

    version: int
    name: str
    checksum: str | None
    applied_at: str


@dataclass(frozen=True)
class MigrationStatus:
    """What `idsync migrate --status` prints: what the schema has and what this build would add."""

    schema: str
    applied: list[AppliedMigration]
    pending: list[Migration]


def available() -> list[Migration]:
    """The migrations shipped with this build, in version order."""
    out = []
    for entry in resources.files("idsync.store.migrations").iterdir():
        m = _FILE.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_bytes().decode("utf-8")))
    out.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in out]
    if versions != list(range(1, len(out) + 1)):
        raise MigrationError(f"migration versions must be 1..n without gaps, found {versions}")
    return out


def code_version() -> int:
    return len(available())


def _has_table(conn: psycopg.Connection, schema: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.schema_migrations",)).fetchone()
    return bool(row and row[0])


def _applied(conn: psycopg.Connection, schema: str) -> list[AppliedMigration]:
    if not _has_table(conn, schema):
        return []
    has_checksum = conn.execute(
        "SELECT 1 FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = 'schema_migrations' AND column_name = 'checksum'",
        (schema,),
    ).fetchone()
    checksum = sql.SQL("checksum" if has_checksum else "NULL::text")
    rows = conn.execute(
        sql.SQL(
            "SELECT version, name, {}, applied_at::text FROM {}.schema_migrations ORDER BY version"
        ).format(checksum, sql.Identifier(schema))
    ).fetchall()
    return [AppliedMigration(int(v), str(n), c, str(at)) for v, n, c, at in rows]


def verify(schema: str, applied: list[AppliedMigration], shipped: list[Migration]) -> None:
    """Raise unless every recorded migration is one this build ships unchanged (or a retired one).

    A row without a checksum (written before idsync recorded them) is checked by name only.
    """
    by_version = {m.version: m for m in shipped}
    for row in applied:
        if row.version > len(shipped):
            raise SchemaTooNew(schema, max(r.version for r in applied), len(shipped))
        mig = by_version[row.version]
        if row.name == mig.name and row.checksum in (None, mig.checksum):
            continue
        retired = RETIRED.get((row.version, row.name))
        if retired is not None and row.checksum in (None, retired):
            continue
        recorded = f"{row.version:04d}_{row.name}.sql (sha256 {row.checksum or 'not recorded'})"
        raise MigrationMismatch(schema, row.version, recorded, f"{mig.filename} (sha256 {mig.checksum})")


def _prepare_table(conn: psycopg.Connection, schema: str, shipped: list[Migration]) -> None:
    ident = sql.Identifier(schema)
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(), checksum text)"
        ).format(ident)
    )
    conn.execute(
        sql.SQL("ALTER TABLE {}.schema_migrations ADD COLUMN IF NOT EXISTS checksum text").format(ident)
    )
    verify(schema, _applied(conn, schema), shipped)
    # Rows from before checksums: record what this build ships under the name they recorded, now
    # that verify() has matched the names; retired rows keep the retired file's checksum.
    for mig in shipped:
        retired = [(name, sha) for (v, name), sha in RETIRED.items() if v == mig.version]
        for name, sha in [(mig.name, mig.checksum), *retired]:
            conn.execute(
                sql.SQL(
                    "UPDATE {}.schema_migrations SET checksum = %s"
                    " WHERE version = %s AND name = %s AND checksum IS NULL"
                ).format(ident),
                (sha, mig.version, name),
            )


def migrate(store: Store) -> list[int]:
    """Bring the instance schema up to this build's version; return the versions applied.

    Raises SchemaTooNew when the schema is ahead of the code (a newer idsync migrated it), and
    MigrationMismatch when a recorded migration differs from the file this build ships.
    """
    schema = check_schema_name(store.schema)
    migrations = available()
    applied: list[int] = []
    with store.connection() as conn:
        conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_LOCK_NS, schema))
        try:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            _prepare_table(conn, schema, migrations)
            current = max((r.version for r in _applied(conn, schema)), default=0)
            for mig in migrations[current:]:
                try:
                    with conn.transaction():
                        conn.execute(
                            sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(schema))
                        )
                        conn.execute(mig.sql.encode())
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                            (mig.version, mig.name, mig.checksum),
                        )
                except psycopg.OperationalError:
                    raise  # the server went away: not the migration's fault, the caller may retry
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {mig.filename} failed on schema {schema!r}: {str(exc).strip()}"
                    ) from exc
                applied.append(mig.version)
                log.info("store.migrated", schema=schema, version=mig.version, name=mig.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_NS, schema))
    return applied


def status(store: Store) -> MigrationStatus:
    """Applied and pending migrations of the instance schema; raises as `migrate` would."""
    shipped = available()
    with store.connection() as conn:
        applied = _applied(conn, store.schema)
    verify(store.schema, applied, shipped)
    current = max((r.version for r in applied), default=0)
    return MigrationStatus(store.schema, applied, shipped[current:])


def check_version(store: Store) -> int:
    """The schema's version; raises SchemaTooNew if it is ahead of this build, MigrationMismatch
    if a recorded migration differs from the shipped file."""
    return max((r.version for r in status(store).applied), default=0)
