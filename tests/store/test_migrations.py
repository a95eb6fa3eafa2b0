"""Migrations: applied once under an advisory lock, refused when the schema is newer than the code."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from idsync.store import migrate
from idsync.store.db import Store
from idsync.store.errors import MigrationMismatch, SchemaTooNew, StoreError, StoreUnavailable
from tests.sync.conftest import node_config

DATA = Path(__file__).parent / "data"


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


def _tables_and_indexes(conn: psycopg.Connection, schema: str) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
        (schema,),
    ).fetchall()
    return {r[0] for r in rows}


def test_each_applied_migration_is_recorded_with_the_checksum_of_its_file(
    pg_dsn: str, pg_schema: str
) -> None:
    with Store(pg_dsn, pg_schema) as store:
        migrate.migrate(store)
        with store.connection() as conn:
            recorded = conn.execute(
                f'SELECT version, name, checksum FROM "{pg_schema}".schema_migrations ORDER BY version'
            ).fetchall()
    shipped = migrate.available()
    assert recorded == [(m.version, m.name, hashlib.sha256(m.sql.encode()).hexdigest()) for m in shipped]


def test_an_edited_migration_file_stops_the_daemon(
    pg_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(pg_dsn, pg_schema) as store:
        migrate.migrate(store)
        original = migrate.available()
        edited = [
            m
            if m.version != 3
            else migrate.Migration(m.version, m.name, m.sql + "\n-- edited after release\n")
            for m in original
        ]
        monkeypatch.setattr(migrate, "available", lambda: edited)
        with pytest.raises(MigrationMismatch) as err:
            migrate.migrate(store)
    message = str(err.value)
    assert "migration 0003 was applied as 0003_pending_order.sql" in message
    assert f"sha256 {original[2].checksum}" in message  # what the schema recorded
    assert f"sha256 {edited[2].checksum}" in message  # what this build ships
    assert "immutable" in message


def test_a_replaced_migration_is_refused(pg_dsn: str, pg_schema: str) -> None:
    with Store(pg_dsn, pg_schema) as store:
        migrate.migrate(store)
        with store.transaction() as conn:  # as if 0004 had shipped under another name and content
            conn.execute(
                "UPDATE schema_migrations SET name = 'pending_other', checksum = 'abc' WHERE version = 4"
            )
        with pytest.raises(
            MigrationMismatch,
            match=r"0004_pending_other\.sql \(sha256 abc\), but this build ships "
            r"0004_pending_exported\.sql",
        ):
            migrate.migrate(store)
        with pytest.raises(MigrationMismatch):
            migrate.check_version(store)


def test_a_store_at_the_old_version_5_gets_desired_gone(pg_dsn: str, pg_schema: str) -> None:
    """A schema migrated by the build that shipped 0005_journal_creates (kept as test data), with the
    schema_migrations table of that time (no checksum column), is upgraded and repaired."""
    old_5 = (DATA / "schema_v5_journal_creates" / "0005_journal_creates.sql").read_text()
    assert hashlib.sha256(old_5.encode()).hexdigest() == migrate.RETIRED[(5, "journal_creates")]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{pg_schema}", public')
        conn.execute(
            "CREATE TABLE schema_migrations (version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for mig in migrate.available()[:4]:  # 0001-0004 are byte-identical to that build's
            conn.execute(mig.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (mig.version, mig.name)
            )
        conn.execute(old_5.encode())
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (5, 'journal_creates')")
        before = _tables_and_indexes(conn, pg_schema)
    assert "desired_gone" not in before and "export_journal_recent_creates" in before

    with Store(pg_dsn, pg_schema) as store:
        assert migrate.migrate(store) == list(range(6, migrate.code_version() + 1))
        st = migrate.status(store)
        with store.connection() as conn:
            after = _tables_and_indexes(conn, pg_schema)
    assert {"desired_gone", "desired_gone_target"} <= after
    assert "export_journal_recent_creates" not in after
    assert [(r.version, r.name) for r in st.applied][4] == (5, "journal_creates")
    assert all(r.checksum for r in st.applied) and st.pending == []


def test_the_repair_migration_leaves_a_current_store_as_it_was(pg_dsn: str, pg_schema: str) -> None:
    with Store(pg_dsn, pg_schema) as store:
        migrate.migrate(store)
        with store.transaction() as conn:
            conn.execute(
                "INSERT INTO desired_gone (anchor, object_type, target_anchor) VALUES ('a', 'user', 't')"
            )
            conn.execute("DELETE FROM schema_migrations WHERE version >= 6")
        assert migrate.migrate(store) == list(range(6, migrate.code_version() + 1))
        with store.connection() as conn:
            rows = conn.execute("SELECT anchor FROM desired_gone").fetchall()
    assert rows == [("a",)]


def test_migrate_status_lists_applied_and_pending(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    config = node_config(tmp_path / "idsync.toml", pg_dsn, pg_schema)
    with Store(pg_dsn, pg_schema) as store:
        migrate.migrate(store)
        with store.transaction() as conn:
            conn.execute("DELETE FROM schema_migrations WHERE version = %s", (migrate.code_version(),))
    res = subprocess.run(
        [sys.executable, "-m", "idsync", "--config", str(config), "migrate", "--status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    last = migrate.available()[-1]
    assert "0001_core.sql" in res.stdout and "applied 20" in res.stdout
    assert last.filename in res.stdout and "pending" in res.stdout
    assert f"{migrate.code_version() - 1} applied, 1 pending" in res.stdout
