"""`idsync quarantine` and `idsync preview`: what an operator does with a set-aside object, and how
one object goes through the rules, on a real store (PostgreSQL) through the commands themselves."""

from __future__ import annotations

import argparse
import csv
import io
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from idsync.commands import preview as preview_command
from idsync.commands import quarantine as quarantine_command
from idsync.store import pending, quarantine
from idsync.store.db import Store
from idsync.sync import explain
from tests.sync.conftest import World, ad_group, ad_user, guid, make_world, node_config

BAD_FLOW = {"flows": {"employeeId": "string(int(source.employeeid))"}}
RULES_TOML = """
[user]
deprovision = "disable"
[user.scope]
include = ["OU=Staff,DC=example,DC=com"]
[user.flows]
employeeId = "string(int(source.employeeid))"
"""
RULES = {"user": {"deprovision": "disable", "scope": {"include": ["OU=Staff,DC=example,DC=com"]}, **BAD_FLOW}}


def _fail(world: World, anchor: str, times: int, error: str = "403 Authorization_RequestDenied: no") -> None:
    """The exporter fails `anchor`'s operation `times` times (quarantined after 3)."""
    for _ in range(times):
        with world.store.transaction() as conn:
            for op in pending.claim(conn, epoch=1, node="a", limit=100, held=False):
                if op.anchor == anchor:
                    pending.record_result(
                        conn, op.id, "error", epoch=1, node="a", error=error, max_attempts=3
                    )
                else:
                    pending.record_result(conn, op.id, "retry", epoch=1, node="a", retry_after=timedelta(0))
            conn.execute("UPDATE pending_export SET not_before = NULL")  # skip the back-off


@pytest.fixture
def setaside(store: Store) -> World:
    """u1's create quarantined after 3 failed exports; u2 set aside by the rules (bad employeeid)."""
    w = make_world(store, RULES)
    w.source(ad_user(1, employeeid="1"), ad_user(2, employeeid="two"), ad_user(3, employeeid="3"))
    w.sync()
    _fail(w, guid(1), 3)
    return w


@pytest.fixture
def cfg(tmp_path: Path, pg_dsn: str, pg_schema: str) -> Path:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES_TOML)
    return node_config(tmp_path / "idsync.toml", pg_dsn, pg_schema, f'rules_file = "{rules}"')


def _q(cfg: Path, action: str, *ids: str, **kw: object) -> int:
    args = {"config": str(cfg), "action": action, "ids": list(ids), "all": False, "json": False}
    args.update({"phase": None, "csv": False} if action == "list" else {})
    args.update(kw)
    return quarantine_command.run(argparse.Namespace(**args))


def test_quarantine_list_gives_reason_attempts_and_operations_in_each_format(
    setaside: World, cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _q(cfg, "list") == 0
    table = capsys.readouterr().out
    assert f"export  user  u1@example.com  ({guid(1)}, 3 attempt(s)) [create]" in table
    assert "create failed 3 times: 403 Authorization_RequestDenied: no" in table
    assert f"sync    user  CN=User 2,OU=Staff,DC=example,DC=com  ({guid(2)})" in table
    assert "user.flows.employeeId" in table
    assert "2 quarantined" in table

    assert _q(cfg, "list", json=True) == 0
    doc = {e["key"]: e for e in orjson.loads(capsys.readouterr().out)}
    assert doc[guid(1)]["phase"] == "export" and doc[guid(1)]["attempts"] == 3
    assert doc[guid(1)]["operations"] == ["create"] and doc[guid(1)]["name"] == "u1@example.com"
    assert doc[guid(2)]["phase"] == "sync" and doc[guid(2)]["attempts"] == 0
    assert doc[guid(2)]["dn"] == "CN=User 2,OU=Staff,DC=example,DC=com"

    assert _q(cfg, "list", csv=True, phase="sync") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["phase"], r["key"]) for r in rows] == [("sync", guid(2))]
    assert "string(int(source.employeeid))" in rows[0]["reason"]


def test_retry_rearms_a_quarantined_export_which_then_lands(setaside: World, cfg: Path) -> None:
    w = setaside
    assert w.export_all() == 1  # u3; u1 is quarantined and never claimed
    assert _q(cfg, "retry", guid(1)) == 0
    [op] = [o for o in w.ops() if o.anchor == guid(1)]
    assert not op.quarantined and op.attempts == 0 and op.last_error is None
    assert w.export_all() == 1  # the leader's next batch takes it
    w.sync()
    assert w.target_of(guid(1)) is not None
    with w.store.connection() as conn:
        assert [e.key for e in quarantine.entries(conn)] == [guid(2)]


def test_a_retried_export_that_fails_again_is_quarantined_again_with_the_new_reason(
    setaside: World, cfg: Path
) -> None:
    assert _q(cfg, "retry", "no-such-anchor") == 1  # nothing by that name
    assert _q(cfg, "retry", guid(1)) == 0
    _fail(setaside, guid(1), 3, error="400 Request_BadRequest: still bad")
    with setaside.store.connection() as conn:
        [e] = quarantine.entries(conn, "export")
    assert e.attempts == 3 and "still bad" in e.reason


def test_retry_all_has_the_sync_evaluate_a_set_aside_object_again(
    setaside: World, cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = setaside
    assert w.sync().evaluated == 0  # nothing changed: u2 is not looked at again by itself
    capsys.readouterr()  # (the sync's log lines)
    assert _q(cfg, "retry", all=True, json=True) == 0
    done = {(d["phase"], d["key"]): d["sentence"] for d in orjson.loads(capsys.readouterr().out)}
    assert done == {
        ("export", guid(1)): "1 operation(s) re-armed for the next export",
        ("sync", guid(2)): "evaluated again by the next sync",
    }
    result = w.sync()
    assert result.evaluated == 1 and result.quarantined == 1  # the rules still fail on it
    with w.store.connection() as conn:
        assert {(e.phase, e.key) for e in quarantine.entries(conn)} == {("sync", guid(2))}


def test_clear_drops_the_quarantined_operation_until_the_object_changes(
    setaside: World, cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = setaside
    assert _q(cfg, "clear", "CN=Nobody,DC=example,DC=com") == 1
    assert "no such quarantine entry" in capsys.readouterr().err
    # By DN, any case: an export entry is named by its source object's DN.
    assert (
        _q(cfg, "clear", "cn=user 1,ou=staff,dc=example,dc=com", "CN=USER 2,OU=Staff,DC=example,DC=com") == 0
    )
    out = capsys.readouterr().out
    assert "1 quarantined operation(s) dropped" in out and "sync    " + guid(2) in out
    assert [o.anchor for o in w.ops()] == [guid(3)]
    with w.store.connection() as conn:
        assert quarantine.entries(conn) == []
    w.source(ad_user(1, employeeid="1", title="new"))
    w.sync()
    [op] = [o for o in w.ops() if o.anchor == guid(1)]
    assert op.kind == "create" and op.attempts == 0


def test_quarantine_usage_errors(setaside: World, cfg: Path, tmp_path: Path) -> None:
    assert _q(cfg, "retry") == 2  # neither IDs nor --all
    assert _q(cfg, "retry", guid(1), all=True) == 2
    assert _q(tmp_path / "missing.toml", "list") == 2


# --- idsync preview ----------------------------------------------------------------------------


def _preview(cfg: Path, ident: str, fmt: str = "table", *, local: bool = True) -> int:
    args = argparse.Namespace(
        config=str(cfg), ident=ident, json=fmt == "json", csv=fmt == "csv", local=local, timeout=0.5
    )
    return preview_command.run(args)


def test_preview_evaluates_the_rules_the_node_runs_not_its_local_file(
    synced: World,
    tmp_path: Path,
    pg_dsn: str,
    pg_schema: str,
    zk_hosts: str,
    zk_chroot: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The cluster's current version (ZooKeeper) decides, not the file on disk; `--local` shows
    the file; an unreachable ZooKeeper falls back to the file and says so."""
    from idsync.ha import rules_zk
    from idsync.ha.zk import Coordinator, ZkSettings

    rules = tmp_path / "local.toml"
    rules.write_text(RULES_TOML)
    cluster_text = RULES_TOML + 'department = "upper(source.department)"\n'
    coord = Coordinator(ZkSettings(zk_hosts + zk_chroot, session_timeout=2.0, retry_timeout=2.0), "pv", "x")
    coord.start(timeout=5)
    try:
        rules_zk.ensure(coord)
        rules_zk.seed(coord, cluster_text, by="test", note="cluster version")
    finally:
        coord.stop()
    cfg = node_config(tmp_path / "n.toml", pg_dsn, pg_schema, f'rules_file = "{rules}"')
    text = cfg.read_text().replace('hosts = "127.0.0.1:1"', f'hosts = "{zk_hosts}{zk_chroot}"')
    cfg.write_text(text.replace('[node]\nname = "a"', '[node]\nname = "a"\ncluster = "pv"'))
    capsys.readouterr()  # (the sync's and the seeding's log lines)

    assert _preview(cfg, guid(1), "json", local=False) == 0
    out = capsys.readouterr()
    assert "previewing with cluster rules v1" in out.err
    assert orjson.loads(out.out)["desired"]["department"] == "SALES"  # the cluster's flow

    assert _preview(cfg, guid(1), "json", local=True) == 0
    out = capsys.readouterr()
    assert f"previewing with {rules}" in out.err
    assert orjson.loads(out.out)["desired"]["department"] == "Sales"  # the file's (preset) flow

    cfg.write_text(text.replace(f"{zk_hosts}{zk_chroot}", "127.0.0.1:1"))
    assert _preview(cfg, guid(1), "json", local=False) == 0
    out = capsys.readouterr()
    assert "could not be read" in out.err and f"previewing with {rules}" in out.err


@pytest.fixture
def synced(store: Store) -> World:
    """u1..u3 exported and confirmed, a group of u1 and u2; the queue is empty."""
    w = make_world(store, RULES)
    w.source(*(ad_user(i, employeeid=str(i)) for i in (1, 2, 3)), ad_group(1, [guid(1), guid(2)]))
    for _ in range(2):
        w.sync()
        w.export_all()
    w.sync()
    assert w.ops() == []
    return w


def test_preview_of_an_object_in_step_shows_every_rule_and_no_operation(
    synced: World, cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _preview(cfg, "cn=user 1,ou=staff,dc=example,dc=com") == 0  # a DN, any case
    out = capsys.readouterr().out
    assert "  name    u1@example.com" in out
    assert "user.scope" in out and "DN in scope" in out
    assert "  user.flows.employeeId" in out and "string(int(source.employeeid))" in out
    assert "  department" in out and "Sales" in out
    assert f"linked (created) to t-{guid(1)}" in out
    assert "nothing" in out and "the target already holds the desired state" in out


def test_preview_shows_the_update_a_source_change_will_make_without_queueing_it(
    synced: World, cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    synced.source(ad_user(1, employeeid="1", department="Finance"))  # imported, not yet synced
    assert _preview(cfg, guid(1), "json") == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["in_scope"] is True
    assert doc["desired"]["department"] == "Finance" and doc["last_desired"]["department"] == "Sales"
    assert [(o["kind"], o["changes"]) for o in doc["operations"]] == [
        ("update", [{"attribute": "department", "old": "Sales", "new": "Finance"}])
    ]
    steps = {s["rule"]: s["result"] for s in doc["steps"]}
    assert steps["user.flows.department"] == "Finance" and steps["user.flows.employeeId"] == "1"
    assert synced.ops() == []  # nothing was queued or written
    synced.sync()
    [op] = synced.ops()
    assert (op.kind, dict(op.payload)) == ("update", {"department": "Finance"})  # the sync agrees


def test_preview_of_an_object_leaving_scope_shows_its_deprovisioning(
    synced: World, cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    synced.source(ad_user(2, employeeid="2", ou="OU=Leavers"))
    synced.sync()
    capsys.readouterr()  # (the sync's log lines)
    assert _preview(cfg, guid(2), "csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    by = {(r["section"], r["item"]): r for r in rows}
    assert by[("rules", "user.scope")]["note"] == "out of scope: the DN is outside the scope"
    assert by[("desired", "verdict")]["value"] == "out of scope"
    assert by[("would export", "update accountEnabled")]["value"] == "true → false"
    assert by[("would export", "update accountEnabled")]["note"] == "deprovision = disable"
    assert by[("queued", "update")]["note"] == "ready"  # the sync queued the same
    # and the group loses the member: previewed on the group
    assert _preview(cfg, guid(100_001)) == 0
    assert "member_remove u2@example.com" in capsys.readouterr().out


def test_preview_explains_a_rule_failure_and_the_quarantine(
    setaside: World, cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _preview(cfg, guid(2)) == 0
    out = capsys.readouterr().out
    assert "user.flows.employeeId: " in out and "quarantined by the sync" in out
    assert "rules failed" in out and "it keeps its previous desired state" in out
    assert "quarantine" in out
    assert _preview(cfg, guid(1)) == 0
    out = capsys.readouterr().out
    assert "quarantined after 3 attempts" in out and "3 attempt(s)" in out


def test_preview_of_an_object_an_earlier_installation_created_shows_the_hard_match(
    store: Store, cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from idsync.store.target_space import TargetRow

    w = make_world(store, RULES)
    w.source(ad_user(1, employeeid="1", title="Chef"))
    w.sync()
    [create] = w.ops("create")
    iid = create.payload["onPremisesImmutableId"]
    w.target("user", TargetRow("old-1", {**create.payload, "jobTitle": "Cook"}, iid, True))
    capsys.readouterr()  # (the sync's log lines)
    assert _preview(cfg, guid(1), "json") == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert "a hard match on onPremisesImmutableId would link old-1" in doc["link"]
    assert [(o["kind"], o["target_id"]) for o in doc["operations"]] == [
        ("link", "old-1"),
        ("update", "old-1"),
    ]
    assert doc["operations"][1]["changes"] == [{"attribute": "jobTitle", "old": "Cook", "new": "Chef"}]
    w.sync()
    assert [(o.kind, o.target_id, dict(o.payload)) for o in w.ops()] == [
        ("update", "old-1", {"jobTitle": "Chef"})
    ]


def test_preview_of_an_unknown_object_says_so(
    synced: World, cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _preview(cfg, "CN=Nobody,DC=example,DC=com") == 1
    assert "no such object in this node's source space" in capsys.readouterr().err
    with pytest.raises(explain.NotFound):
        from idsync.sync.rules import load_rules

        explain.explain(synced.store, load_rules(None, source_kind="ad"), "nope")
