"""Export of a user's manager against the emulator: PUT and DELETE /users/{id}/manager/$ref in
`$batch`, waiting for the links, idempotent when run again, and confirmed by the delta import."""

from __future__ import annotations

from dataclasses import replace

from idsync.emulator.core import Emulator
from idsync.store import target_space
from idsync.store.db import Store
from idsync.target import GraphTarget
from tests.target.conftest import TestFence, add_user, link, queue, rearm


async def test_manager_set_and_remove_land_and_run_again_harmlessly(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    ann, bob = add_user(em, "ann", "imm-a"), add_user(em, "bob", "imm-b")
    queue(store, "user", "src-a", "manager_set", member_anchor="src-b")
    # Neither user is linked yet: nothing is claimed, nothing is sent.
    report = await target.exporter(store, lease).export()
    assert report.results == [] and ann.manager is None
    link(store, "user", "src-a", ann.id)
    assert (await target.exporter(store, lease).export()).results == []  # the manager is not linked
    link(store, "user", "src-b", bob.id)
    report = await target.exporter(store, lease).export()
    assert [(r.kind, r.outcome, r.status) for r in report.results] == [("manager_set", "ok", 204)]
    assert ann.manager == bob.id
    rearm(store)
    report = await target.exporter(store, lease).export()  # a PUT again: the same manager, 204
    assert [(r.outcome, r.status) for r in report.results] == [("ok", 204)] and ann.manager == bob.id

    queue(store, "user", "src-a", "manager_remove")
    report = await target.exporter(store, lease).export()
    assert [(r.kind, r.outcome, r.status) for r in report.results] == [("manager_remove", "ok", 204)]
    assert ann.manager is None
    rearm(store, "manager_remove")
    report = await target.exporter(store, lease).export()  # no manager left: Graph's 404 is done
    assert [(r.kind, r.outcome, r.status) for r in report.results] == [("manager_remove", "ok", 404)]


async def test_the_delta_import_shows_the_manager_it_set(
    em: Emulator, store: Store, lease: TestFence, target: GraphTarget
) -> None:
    target.schema = target.importer.schema = replace(target.schema, manager=True)
    ann, bob = add_user(em, "ann", "imm-a"), add_user(em, "bob", "imm-b")
    link(store, "user", "src-a", ann.id)
    link(store, "user", "src-b", bob.id)
    queue(store, "user", "src-a", "manager_set", member_anchor="src-b")
    await target.exporter(store, lease).export()
    await target.import_delta(store, ("user",))
    with store.connection() as conn:
        assert target_space.manager(conn, ann.id) == bob.id
    em.store.set_manager(ann, None)  # someone clears it in the cloud
    await target.import_delta(store, ("user",))
    with store.connection() as conn:
        assert target_space.manager(conn, ann.id) is None
