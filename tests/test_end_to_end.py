"""The whole path on real services: Samba AD -> `idsync run` -> the Graph emulator -> confirmed.

One standalone node (HA has its own tests) drives each scenario as an operator would: AD changes,
rules files, SIGHUP, and the emulator's state and request log as the judge.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from idsync.cli import main
from tests.cluster.checks import immutable_id
from tests.cluster.cluster import LocalCluster
from tests.cluster.directory import AdDirectory
from tests.cluster.instance import Instance, wait_for
from tests.conftest import ClusterFactory


@pytest.fixture
def ous(ad: AdDirectory, samba_ou: str) -> tuple[str, str]:
    """(in scope, out of scope), both under the test's OU."""
    return ad.ou("in", samba_ou), ad.ou("out", samba_ou)


@pytest.fixture
def world(local_cluster: ClusterFactory, ous: tuple[str, str]) -> Iterator[LocalCluster]:
    with local_cluster(
        cluster="e2e",
        include_ous=[ous[0]],
        deletion_threshold=100,
    ) as c:
        yield c


def user_by_anchor(c: LocalCluster, guid: str) -> dict[str, Any] | None:
    iid = immutable_id(guid)
    return next((u for u in c.state()["users"] if u.get("onPremisesImmutableId") == iid), None)


def queue_empty(node: Instance) -> bool:
    return node.last_sentence().endswith(", 0 pending") and "nothing to export" in node.last_sentence()


def start(c: LocalCluster, rules: str | None = None) -> Instance:
    node = c.add("a")
    if rules is not None:
        node.use_rules(rules)
    return node.start("--standalone")


def test_change_reaches_the_target_and_is_confirmed(
    world: LocalCluster, ad: AdDirectory, ous: tuple[str, str]
) -> None:
    u = ad.add_user(ous[0], f"e{uuid.uuid4().hex[:8]}", department="Sales")
    node = start(world)
    wait_for(lambda: user_by_anchor(world, u.guid), 60, "the user in the target")
    ad.replace(u.dn, department="Finance")
    wait_for(lambda: (user_by_anchor(world, u.guid) or {}).get("department") == "Finance", 30, "the update")
    wait_for(lambda: queue_empty(node), 30, "the queue to empty after the confirming import")


def test_leaving_scope_deprovisions_as_configured(
    world: LocalCluster, ad: AdDirectory, ous: tuple[str, str]
) -> None:
    keep = ad.add_user(ous[0], f"k{uuid.uuid4().hex[:8]}")
    gone = ad.add_user(ous[0], f"d{uuid.uuid4().hex[:8]}")
    start(world, rules='[user]\ndeprovision = "disable"\n')
    wait_for(lambda: user_by_anchor(world, gone.guid), 60, "the user in the target")
    ad.move(gone.dn, gone.dn.split(",", 1)[0], ous[1])  # out of scope
    wait_for(lambda: (user_by_anchor(world, gone.guid) or {}).get("accountEnabled") is False, 30, "disabled")
    assert (user_by_anchor(world, keep.guid) or {}).get("accountEnabled") is True


def test_a_member_outside_scope_waits_and_resolves_once_it_exists(
    world: LocalCluster, ad: AdDirectory, ous: tuple[str, str]
) -> None:
    inside = ad.add_user(ous[0], f"m{uuid.uuid4().hex[:8]}")
    outside = ad.add_user(ous[1], f"o{uuid.uuid4().hex[:8]}")
    group = ad.add_group(ous[0], f"g{uuid.uuid4().hex[:8]}", [inside.dn, outside.dn])
    gguid = ad.guid(group)
    node = start(world)

    def members() -> set[str]:
        st = world.state()
        ids = {u["id"]: u.get("onPremisesImmutableId") for u in st["users"]}
        g = next((g for g in st["groups"] if gguid in str(g)), None)
        return {ids.get(m, "?") for m in (g or {}).get("members", [])}

    wait_for(lambda: members() == {immutable_id(inside.guid)}, 60, "the group with its in-scope member")
    wait_for(lambda: "1 pending" in node.last_sentence(), 30, "the deferred member to stay pending")
    ad.move(outside.dn, outside.dn.split(",", 1)[0], ous[0])  # the member comes into scope
    want = {immutable_id(inside.guid), immutable_id(outside.guid)}
    wait_for(lambda: members() == want, 60, "the deferred member to be added")


def test_a_rules_change_resyncs_and_updates_only_affected_objects(
    world: LocalCluster, ad: AdDirectory, ous: tuple[str, str]
) -> None:
    sales = [ad.add_user(ous[0], f"s{uuid.uuid4().hex[:8]}", department="Sales") for _ in range(3)]
    others = [ad.add_user(ous[0], f"n{uuid.uuid4().hex[:8]}") for _ in range(4)]  # no department
    node = start(world, rules="")
    wait_for(
        lambda: all(user_by_anchor(world, u.guid) for u in sales + others), 60, "every user in the target"
    )
    wait_for(lambda: queue_empty(node), 30, "a quiet queue")
    since = world.emulator.get("/_emulator/requests?limit=0")["seq"]
    (node.workdir / "rules.toml").write_text('[user.flows]\ndepartment = "upper(source.department)"\n')
    node.signal(signal.SIGHUP)
    wait_for(
        lambda: all((user_by_anchor(world, u.guid) or {}).get("department") == "SALES" for u in sales),
        30,
        "upper",
    )
    wait_for(lambda: queue_empty(node), 30, "a quiet queue again")
    patched = {w["path"].rsplit("/", 1)[-1] for w in world.emulator.writes(since) if w["method"] == "PATCH"}
    assert len(patched) == len(sales)  # the four users without a department were not touched
    assert any(e.get("event") == "daemon.reloaded" for e in node.events())


def test_bad_rules_stop_the_daemon_with_a_clear_error(
    world: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    node = world.add("a")
    node.use_rules('[user.flows]\njobTitle = "upper(source.title"\n')
    assert main(["--config", str(node.config), "run", "--standalone", "--once"]) == 1
    err = capsys.readouterr().err
    assert "user.flows.jobTitle: CEL compile error" in err and "upper(source.title" in err


def test_a_store_of_the_previous_schema_is_upgraded_by_run_and_syncs(
    world: LocalCluster, ad: AdDirectory, ous: tuple[str, str], pg_dsn: str
) -> None:
    """A schema at the retired version 5 (0005_journal_creates, kept in tests/store/data, and the
    schema_migrations table of that build) is migrated by `idsync run`, which then syncs."""
    from idsync.store import migrate

    node = world.add("a")
    schema = world.schemas[-1]
    old_5 = (
        Path(__file__).parent / "store" / "data" / "schema_v5_journal_creates" / "0005_journal_creates.sql"
    )
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET search_path TO "{schema}", public')
        conn.execute(
            "CREATE TABLE schema_migrations (version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for mig in migrate.available()[:4]:
            conn.execute(mig.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (mig.version, mig.name)
            )
        conn.execute(old_5.read_bytes())
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (5, 'journal_creates')")
    node.use_rules('[user]\ndeprovision = "disable"\n')
    gone = ad.add_user(ous[0], f"u{uuid.uuid4().hex[:8]}")
    node.start("--standalone")
    wait_for(lambda: user_by_anchor(world, gone.guid), 60, "the user in the target")
    ad.move(gone.dn, gone.dn.split(",", 1)[0], ous[1])  # out of scope: deprovisioning uses desired_gone
    wait_for(lambda: (user_by_anchor(world, gone.guid) or {}).get("accountEnabled") is False, 30, "disabled")
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            f'SELECT version, name, checksum FROM "{schema}".schema_migrations ORDER BY 1'
        ).fetchall()
        gone_table = conn.execute("SELECT to_regclass(%s)", (f"{schema}.desired_gone",)).fetchone()
    assert [r[0] for r in rows] == list(range(1, migrate.code_version() + 1))
    assert rows[4][1] == "journal_creates" and all(r[2] for r in rows)
    assert gone_table and gone_table[0] is not None
