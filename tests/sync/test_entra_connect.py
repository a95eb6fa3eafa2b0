"""Living beside Entra Connect: its objects are never linked, matched or written; a user it synced
once (onPremisesSyncEnabled false) is taken over by its anchor, without its read-only attributes."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from idsync.commands import pending as pending_command
from idsync.store import quarantine
from idsync.store.db import Store
from idsync.store.target_space import TargetPage, TargetRow
from idsync.sync import explain
from idsync.sync.functions import FUNCTIONS
from tests.sync.conftest import ad_user, guid, make_world, node_config

EXT1 = "onPremisesExtensionAttributes.extensionAttribute1"
RULES = {"user": {"flows": {EXT1: "source.department"}}}


def _iid(i: int) -> str:
    return str(FUNCTIONS["immutable_id"](guid(i)))


def test_an_object_entra_connect_syncs_is_never_linked_or_written(
    store: Store, tmp_path: Path, pg_dsn: str, pg_schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    w = make_world(store, RULES, soft_match=True)
    synced = {
        "userPrincipalName": "u1@example.com",
        "displayName": "User 1",
        "onPremisesImmutableId": _iid(1),
        "onPremisesSyncEnabled": True,
    }
    # Entra Connect's twin of u1 (same anchor), and one of u2 only by UPN (soft match).
    w.target("user", TargetRow("ec-1", synced, None, True))
    w.target(
        "user",
        TargetRow("ec-2", {"userPrincipalName": "u2@example.com", "onPremisesSyncEnabled": True}, None, True),
    )
    w.source(ad_user(1), ad_user(2))
    w.sync()
    assert w.target_of(guid(1)) is None and w.target_of(guid(2)) is None
    # u1: none at all; u2: no create either — its UPN is Entra Connect's, so a create could
    # only conflict: it is shown as managed, naming the object it would collide with.
    assert w.ops() == []
    with store.connection() as conn:
        e, e2 = sorted(quarantine.entries(conn, "managed"), key=lambda q: q.key)
    assert e.key == guid(1) and "Entra Connect synchronizes u1@example.com (ec-1" in e.reason
    assert e2.key == guid(2) and e2.reason.startswith(
        "Entra Connect synchronizes u2@example.com (ec-2, onPremisesSyncEnabled), which has this"
        " object's userPrincipalName: idsync never links, matches or writes it, and creates nothing"
    )
    cfg = node_config(tmp_path / "idsync.toml", pg_dsn, pg_schema)
    args = argparse.Namespace(config=str(cfg), op=None, format="table", summary=False, errors=False)
    assert pending_command.run(args) == 0
    out = capsys.readouterr().out
    assert "left to Entra Connect" in out and "CN=User 1,OU=Staff,DC=example,DC=com" in out
    # `idsync preview` says the same, and shows no create.
    shown = explain.explain(store, w.rules, guid(1))
    assert shown.operations == () and "Entra Connect synchronizes ec-1" in shown.link
    assert [e.phase for e in shown.quarantine] == ["managed"]
    shown = explain.explain(store, w.rules, guid(2))  # the UPN twin: no create in the preview either
    assert shown.operations == () and "Entra Connect synchronizes ec-2" in shown.link
    assert "which has its userPrincipalName" in shown.link

    # Entra Connect stops syncing it (the object becomes cloud-only): idsync takes it over.
    w.target("user", TargetRow("ec-1", {**synced, "onPremisesSyncEnabled": False}, _iid(1), True))
    w.sync()
    t = w.target_of(guid(1))
    assert t is not None and t.id == "ec-1"
    with store.connection() as conn:
        assert [q.key for q in quarantine.entries(conn, "managed")] == [guid(2)]  # ec-2 is still Connect's


def test_a_formerly_synced_user_is_taken_over_without_its_read_only_attributes(store: Store) -> None:
    w = make_world(store, RULES)
    formerly = {
        "userPrincipalName": "u1@example.com",
        "displayName": "Old Name",
        "onPremisesImmutableId": _iid(1),
        "onPremisesSyncEnabled": False,
        EXT1: "Old",
    }
    w.target("user", TargetRow("was-1", formerly, _iid(1), True))
    w.source(ad_user(1, department="Sales"))
    w.sync()
    [op] = w.ops()
    assert op.kind == "update" and op.target_id == "was-1"
    assert op.payload["displayName"] == "Given1 Sur1"
    assert EXT1 not in op.payload  # read-only in Graph for a user Entra Connect synced once
    # A cloud-only user idsync created keeps the attribute managed.
    w.source(ad_user(2, department="Sales"))
    w.sync()
    [create] = [o for o in w.ops() if o.anchor == guid(2)]
    assert create.payload[EXT1] == "Sales"


def test_the_preview_of_a_user_whose_deleted_object_carries_its_anchor_says_it_restores(store: Store) -> None:
    w = make_world(store, RULES)
    w.target("user", TargetRow("t-1", {"userPrincipalName": "u1@example.com"}, _iid(1), True))
    w.target_page(TargetPage("user", removed=["t-1"]))  # deleted: in Graph's recycle bin
    w.source(ad_user(1))
    w.sync()
    assert {(o.kind, o.anchor) for o in w.ops()} == {("create", guid(1))}
    [op] = explain.explain(store, w.rules, guid(1)).operations
    assert op.kind == "create" and op.note.startswith("restores the deleted user t-1 from the recycle bin")
