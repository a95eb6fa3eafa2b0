"""Restore before create: a user whose anchor a soft-deleted user carries comes back from the
recycle bin (same object, its groups back), under both answers to what Microsoft does not document
(`deleted_immutable_id`: a deleted user's onPremisesImmutableId free or still taken)."""

from __future__ import annotations

from typing import Any

import pytest

from idsync.emulator.core import Emulator
from idsync.store.db import Store
from idsync.target import GraphTarget, recycle
from tests.target.conftest import TestFence, add_group, add_user, queue, user_payload

SETTINGS = ("free", "reserved")


def _queue_rows(store: Store) -> dict[str, tuple[bool, bool, str | None]]:
    """anchor -> (exported, quarantined, last_error) of the create rows."""
    with store.connection() as conn:
        rows = conn.execute(
            "SELECT anchor, exported_at IS NOT NULL, quarantined_at IS NOT NULL, last_error"
            " FROM pending_export WHERE kind = 'create'"
        ).fetchall()
    return {r[0]: (bool(r[1]), bool(r[2]), r[3]) for r in rows}


def _writes(em: Emulator, mark: int) -> list[tuple[str, str, int]]:
    return [(e.method, e.path, e.status) for e in em.log.since(mark) if e.write and e.item is not None]


@pytest.mark.parametrize("setting", SETTINGS)
async def test_a_deleted_user_is_restored_not_created_again(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence, setting: str
) -> None:
    em.configure(deleted_immutable_id=setting)
    old = add_user(em, "p1", immutable="imm-1", department="Old")
    cloud = add_group(em, "cloud-only", members=(old,))  # a membership made in the cloud
    em.store.soft_delete(old)
    queue(store, "user", "src-1", "create", user_payload(1))
    queue(store, "user", "src-2", "create", user_payload(2))  # never deleted: created
    mark = em.log.seq
    report = await target.exporter(store, lease).export()

    assert report.count("ok") == 2 and report.restored == 1, report.results
    by = {r.anchor: r for r in report.results}
    assert by["src-1"].target_id == old.id and "restored from the recycle bin" in str(by["src-1"].message)
    assert em.store.live("user", old.id) is not None and old.id in cloud.members  # user-delete.md
    writes = _writes(em, mark)
    assert ("POST", f"/directory/deletedItems/{old.id}/restore", 200) in writes
    assert [w for w in writes if w[1] == "/users"] == [("POST", "/users", 201)]  # src-2 only
    assert "1 restored from the recycle bin" in report.sentence()
    # the attributes are the update's business, once the import links it
    assert old.props["department"] == "Old"


@pytest.mark.parametrize("setting", SETTINGS)
async def test_a_restore_conflict_is_quarantined_and_nothing_is_created_beside_it(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence, setting: str
) -> None:
    em.configure(deleted_immutable_id=setting)
    old = add_user(em, "p1", immutable="imm-1")
    em.store.soft_delete(old)
    taker = add_user(em, "p1")  # a cloud-only user took p1@example.com meanwhile
    queue(store, "user", "src-1", "create", user_payload(1, userPrincipalName="p1@example.com"))
    queue(store, "user", "src-2", "create", user_payload(2))
    report = await target.exporter(store, lease).export()

    by = {r.anchor: r for r in report.results}
    assert by["src-2"].outcome == "ok"  # everything else syncs
    bad = by["src-1"]
    assert bad.outcome == "error" and bad.final and bad.error is not None
    assert f"restoring the deleted user {old.id}" in bad.error.message
    assert (
        "its userPrincipalName" in bad.error.message and "nothing was created beside it" in bad.error.message
    )
    exported, quarantined, why = _queue_rows(store)["src-1"]
    assert quarantined and not exported and why and "purge the deleted user" in why
    assert em.store.deleted(old.id) is not None  # still in the recycle bin: nothing lost
    holders = [o.id for o in em.store.objects.values() if o.props.get("onPremisesImmutableId") == "imm-1"]
    assert holders == [old.id]
    assert em.store.live("user", taker.id) is not None


async def test_a_create_that_conflicts_with_a_reserved_deleted_user_restores_it(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recycle-bin read missed it (answered before Graph replicated the deletion): the create
    conflicts on the immutable id the deleted user still holds, and the second look restores it."""
    em.configure(deleted_immutable_id="reserved")
    old = add_user(em, "p1", immutable="imm-1")
    em.store.soft_delete(old)
    real = recycle.pick
    calls: list[int] = []

    def late(sub: Any, anchor: str, value: str) -> recycle.DeletedUser | None:
        calls.append(1)
        return None if len(calls) == 1 else real(sub, anchor, value)

    monkeypatch.setattr(recycle, "pick", late)
    queue(store, "user", "src-1", "create", user_payload(1, userPrincipalName="p1-new@example.com"))
    mark = em.log.seq
    report = await target.exporter(store, lease).export()
    [res] = report.results
    assert res.outcome == "ok" and res.target_id == old.id, res
    statuses = [(m, p, s) for m, p, s in _writes(em, mark)]
    assert statuses == [("POST", "/users", 400), ("POST", f"/directory/deletedItems/{old.id}/restore", 200)]


async def test_a_deleted_user_purged_before_its_restore_is_created(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = recycle.pick
    calls: list[int] = []

    def stale(sub: Any, anchor: str, value: str) -> recycle.DeletedUser | None:
        calls.append(1)  # the first read saw a deleted user that is purged by the time of the restore
        if len(calls) == 1:
            return recycle.DeletedUser("00000000-0000-4000-8000-00000000dead", None, None)
        return real(sub, anchor, value)

    monkeypatch.setattr(recycle, "pick", stale)
    queue(store, "user", "src-1", "create", user_payload(1))
    mark = em.log.seq
    report = await target.exporter(store, lease).export()
    [res] = report.results
    assert res.outcome == "ok" and res.target_id and report.restored == 0, res
    assert [s for _, _, s in _writes(em, mark)] == [404, 201]
    assert em.store.objects[str(res.target_id)].props["onPremisesImmutableId"] == "imm-1"


async def test_only_idsyncs_deleted_users_are_restored(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    """A deleted user Entra Connect synchronized (onPremisesSyncEnabled true) is not idsync's to
    bring back, even with the same anchor: the create goes out as before."""
    old = add_user(em, "p1", immutable="imm-1", onPremisesSyncEnabled=True)
    em.store.soft_delete(old)
    queue(store, "user", "src-1", "create", user_payload(1, userPrincipalName="p1-new@example.com"))
    report = await target.exporter(store, lease).export()
    [res] = report.results
    assert res.outcome == "ok" and res.target_id != old.id and report.restored == 0
    assert em.store.deleted(old.id) is not None
