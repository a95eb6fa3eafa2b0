"""Migrations: applied once under an advisory lock, refused when the schema is newer than the code."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psycopg
import pytest

from idsync.store import migrate
from idsync.store.db import Store
from idsync.store.errors import SchemaTooNew, StoreError, StoreUnavailable


def test_migrate_creates_every_table(pg_dsn: str, pg_schema: str) -> None:
    with Store(pg_dsn, pg_schema) as store:
        applied = migrate.migrate(store)
        assert applied == list(range(1, migrate.code_version() + 1))
        assert migrate.migrate(store) == []  # idempotent
        with store.connection() as conn:
            tables = {
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (pg_schema,)
                )
            }
    assert {
        "source_object",
        "source_member",
        "target_object",
        "target_member",
        "desired_object",
        "desired_member",
        "pending_export",
        "export_journal",
        "watermark",
        "run_history",
        "quarantine",
        "schema_migrations",
    } <= tables


def test_two_processes_migrating_at_once_apply_each_version_once(pg_dsn: str, pg_schema: str) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from idsync.store.db import Store
        from idsync.store import migrate
        with Store({pg_dsn!r}, {pg_schema!r}) as s:
            print(len(migrate.migrate(s)))
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [r[1] for r in results]
    applied_counts = sorted(int(out.strip().splitlines()[-1]) for out, _ in results)
    # Exactly one process applied everything; the others found the work done.
    assert applied_counts == [0, 0, 0, migrate.code_version()]
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            f'SELECT version, count(*) FROM "{pg_schema}".schema_migrations GROUP BY version'
        ).fetchall()
    assert all(count == 1 for _, count in rows)
    assert len(rows) == migrate.code_version()


def test_schema_newer_than_code_is_refused(pg_dsn: str, pg_schema: str) -> None:
    with Store(pg_dsn, pg_schema) as store:
        migrate.migrate(store)
        future = migrate.code_version() + 5
        with store.transaction() as conn:
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, 'from_the_future')", (future,)
            )
        with pytest.raises(SchemaTooNew) as err:
            migrate.migrate(store)
        assert f"version {future}" in str(err.value)
        assert "upgrade idsync" in str(err.value)
        with pytest.raises(SchemaTooNew):
            migrate.check_version(store)


def test_unreachable_postgres_is_a_clear_error() -> None:
    store = Store("postgresql://idsync:s3cret@127.0.0.1:1/idsync", "idsync_x", connect_timeout=2)
    with pytest.raises(StoreUnavailable) as err:
        store.open()
    message = str(err.value)
    assert "cannot reach PostgreSQL at postgresql://idsync:***@127.0.0.1:1/idsync" in message
    assert "s3cret" not in message


def test_bad_schema_name_is_refused() -> None:
    with pytest.raises(StoreError, match="not a plain identifier"):
        Store("postgresql://127.0.0.1/x", 'a"; drop table x; --')
