"""`idsync pending`: what an operator reads before a switchover (old → new, names, errors)."""

from __future__ import annotations

import argparse
import csv
import io
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from idsync.commands import pending as pending_command
from idsync.store import pending
from idsync.store.db import Store
from idsync.sync import preview
from tests.sync.conftest import World, ad_group, ad_user, guid, make_world, node_config

G1 = guid(100_001)


@pytest.fixture
def busy(store: Store) -> World:
    """A queue with one of everything: update, delete, create, member add and remove, an error."""
    w = make_world(store, {"user": {"scope": {"include": ["OU=Staff,DC=example,DC=com"]}}})
    w.source(ad_user(1), ad_user(2), ad_user(3), ad_group(1, [guid(1), guid(2)]))
    for _ in range(2):
        w.sync()
        w.export_all()
    w.sync()
    assert w.ops() == []
    w.source(
        ad_user(1, department="Finance"),  # update
        ad_user(2, ou="OU=Gone"),  # delete (and its membership goes)
        ad_user(4),  # create
        ad_group(1, [guid(1), guid(3)]),  # member add (u3)
    )
    w.sync()
    [create] = w.ops("create")
    with store.transaction() as conn:
        for op in pending.claim(conn, epoch=1, node="a", limit=100, held=False):
            if op.id == create.id:
                error = "400 ObjectConflict: userPrincipalName"
                pending.record_result(conn, op.id, "error", epoch=1, node="a", error=error)
            else:  # the rest of the batch was not sent
                pending.record_result(conn, op.id, "retry", epoch=1, node="a", retry_after=timedelta(0))
    return w


def test_table_shows_every_operation_with_old_and_new_values(busy: World) -> None:
    text = preview.render(preview.collect(busy.store))
    lines = text.splitlines()
    assert "update        user  u1@example.com  [t-" in text
    assert "    department  Sales → Finance" in lines
    assert any(line.startswith("delete        user  u2@example.com  [t-") for line in lines)
    assert (
        "create        user  u4@example.com  (retrying (1 failed): 400 ObjectConflict: userPrincipalName)"
        in text
    )
    assert "    userPrincipalName      u4@example.com" in lines
    assert any(line.startswith("member_add    group Group 1 ← u3@example.com") for line in lines)
    assert any(line.startswith("member_remove group Group 1 ✕ u2@example.com") for line in lines)


def test_filters_summary_and_errors(busy: World) -> None:
    members = preview.collect(busy.store, op="member")
    assert {i.kind for i in members} == {"member_add", "member_remove"}
    errors = preview.collect(busy.store, errors_only=True)
    assert [(i.kind, i.name, i.attempts) for i in errors] == [("create", "u4@example.com", 1)]
    text = preview.summary(preview.status_counts(busy.store))
    assert "       1  delete user" in text
    assert "       5  total (ready 4, retrying 1)" in text


def test_pages_of_a_long_queue_come_in_export_order(busy: World) -> None:
    whole = preview.collect(busy.store)
    paged = list(preview.iter_items(busy.store, page=2))
    assert [i.id for i in paged] == [i.id for i in whole]
    assert [i.kind for i in whole] == ["create", "update", "member_add", "member_remove", "delete"]


def test_json_and_csv_carry_the_same_data(busy: World) -> None:
    items = preview.collect(busy.store, op="update")
    data = orjson.loads(preview.render(items, "json"))
    assert data[0]["name"] == "u1@example.com"
    assert data[0]["changes"] == [{"attribute": "department", "old": "Sales", "new": "Finance"}]
    rows = list(csv.DictReader(io.StringIO(preview.render(items, "csv"))))
    assert [(r["operation"], r["attribute"], r["old"], r["new"]) for r in rows] == [
        ("update", "department", "Sales", "Finance")
    ]


def test_a_waiting_member_says_what_it_waits_for(world: World) -> None:
    world.source(ad_user(1), ad_group(1, [guid(1)]))
    world.sync()
    [item] = preview.collect(world.store, op="member")
    assert item.status == "waiting for Group 1 to exist in the target"


def test_the_command_reads_the_nodes_own_store(
    busy: World, pg_dsn: str, pg_schema: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = node_config(tmp_path / "idsync.toml", pg_dsn, pg_schema, "deletion_threshold_count = 0")
    args = argparse.Namespace(config=str(cfg), op="delete", format="csv", summary=False, errors=False)
    assert pending_command.run(args) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["operation"], r["name"]) for r in rows] == [("delete", "u2@example.com")]
    args = argparse.Namespace(config=str(cfg), op=None, format="table", summary=True, errors=False)
    assert pending_command.run(args) == 0
    out = capsys.readouterr().out
    assert "total" in out and "deletion guard: clear: 1 pending deletes" in out
    bad = argparse.Namespace(
        config=str(tmp_path / "missing.toml"), op=None, format="table", summary=False, errors=False
    )
    assert pending_command.run(bad) == 2
