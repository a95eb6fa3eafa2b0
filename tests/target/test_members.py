"""Member adds through `members@odata.bind`: 20 per write, split on refusal, waits for replication.

Against the emulator (Graph's all-or-nothing binds, its errors, its request log) and a real
PostgreSQL queue. Counted writes are the emulator's logged write requests (a `$batch` envelope is
not one, as in Graph).
"""

from __future__ import annotations

import math

import pytest

from idsync.emulator.core import Emulator
from idsync.emulator.model import DirObject
from idsync.store.db import Store
from idsync.target.graph import GraphTarget
from tests.target.conftest import (
    TestFence,
    add_group,
    add_user,
    group_payload,
    link,
    queue,
    user_payload,
)


def _writes(em: Emulator, mark: int) -> list[tuple[str, str, int]]:
    return [(e.method, e.path, e.status) for e in em.log.since(mark) if e.write]


def _rows(store: Store) -> dict[str, tuple[int, bool, bool, str | None]]:
    """member anchor -> (attempts, exported, quarantined, last_error)."""
    with store.connection() as conn:
        rows = conn.execute(
            "SELECT member_anchor, attempts, exported_at IS NOT NULL, quarantined_at IS NOT NULL, last_error"
            " FROM pending_export WHERE kind = 'member_add'"
        ).fetchall()
    return {r[0]: (int(r[1]), bool(r[2]), bool(r[3]), r[4]) for r in rows}


def _ready_again(store: Store) -> None:
    """Skip the back-off of operations not exported (the waits themselves are not under test)."""
    with store.transaction() as conn:
        conn.execute("UPDATE pending_export SET not_before = NULL WHERE exported_at IS NULL")


def _team(em: Emulator, store: Store, n: int, lagged: int | None = None) -> tuple[DirObject, list[DirObject]]:
    """A linked group and `n` linked users queued as its member adds (user `lagged` created while
    Graph replicates: linked, but not visible to writes yet)."""
    g = add_group(em, "team", anchor="g-1")
    link(store, "group", "src-g", g.id)
    users = []
    for k in range(n):
        if k == lagged:
            em.configure(replication_delay=300.0)
        users.append(add_user(em, f"m{k}", immutable=f"imm-{k}"))
        if k == lagged:
            em.configure(replication_delay=0.0)
        link(store, "user", f"src-{k}", users[-1].id)
        queue(store, "group", "src-g", "member_add", member_anchor=f"src-{k}")
    return g, users


async def test_twenty_members_are_one_write(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    g, users = _team(em, store, 50)
    mark = em.log.seq
    report = await target.exporter(store, lease).export()
    assert report.count("ok") == 50, report.results
    assert set(g.members) == {u.id for u in users}
    writes = _writes(em, mark)
    assert writes == [("PATCH", f"/groups/{g.id}", 204)] * math.ceil(50 / 20)


async def test_a_bad_member_among_twenty_is_found_and_the_others_land(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    g, users = _team(em, store, 19)
    queue(store, "group", "src-g", "member_add", member_anchor="src-g")  # the group in itself
    mark = em.log.seq
    report = await target.exporter(store, lease).export()
    assert report.count("ok") == 19 and report.count("error") == 1
    assert set(g.members) == {u.id for u in users}
    (bad,) = report.errors()
    assert bad.anchor == "src-g" and "src-g" in bad.message and "member of itself" in bad.message
    # bisection: 20 -> 10 + 10 -> ... ; far fewer than one write per member
    assert len(_writes(em, mark)) <= 1 + 2 * math.ceil(math.log2(20))
    rows = _rows(store)
    assert rows["src-g"][:3] == (1, False, False)
    assert all(exported for a, (_, exported, _, _) in rows.items() if a != "src-g")
    for _ in range(4):  # every later run refuses it again, until it is set aside
        _ready_again(store)
        await target.exporter(store, lease).export()
    attempts, exported, quarantined, error = _rows(store)["src-g"]
    assert (attempts, exported, quarantined) == (5, False, True)
    assert error is not None and "member of itself" in error


@pytest.mark.parametrize("answer", ["bad_request", "not_found"])
async def test_a_member_graph_does_not_show_yet_waits_uncounted_then_lands(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence, answer: str
) -> None:
    em.configure(unreplicated_member=answer)
    g, users = _team(em, store, 20, lagged=7)
    mark = em.log.seq
    report = await target.exporter(store, lease).export()
    assert report.count("ok") == 19 and report.count("retry") == 1 and not report.errors()
    (waiting,) = [r for r in report.results if r.outcome == "retry"]
    assert waiting.member_anchor == "src-7" and waiting.wait is not None
    assert set(g.members) == {u.id for k, u in enumerate(users) if k != 7}
    if answer == "not_found":  # Graph's 404 names the culprit: it alone is taken out
        assert len(_writes(em, mark)) == 2
    assert _rows(store)["src-7"][:3] == (0, False, False)  # not an attempt

    em.store.clock.advance(301.0)  # replicated now
    _ready_again(store)
    report = await target.exporter(store, lease).export()
    assert [(r.member_anchor, r.outcome) for r in report.results] == [("src-7", "ok")]
    assert users[7].id in g.members
    assert _rows(store)["src-7"][:3] == (0, True, False)


@pytest.mark.parametrize("answer", ["error", "ignore"])
async def test_members_already_there_are_done_whatever_graph_answers(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence, answer: str
) -> None:
    em.configure(bind_existing_member=answer)
    g, users = _team(em, store, 20)
    for u in users[5:8]:  # added meanwhile by someone else (or an earlier, unconfirmed export)
        em.store.add_member(g, u)
    mark = em.log.seq
    report = await target.exporter(store, lease).export()
    assert report.count("ok") == 20 and not report.errors()
    assert set(g.members) == {u.id for u in users}
    writes = _writes(em, mark)
    if answer == "ignore":
        assert len(writes) == 1
    else:  # documented all or nothing: split until the members already there are alone
        assert sum(1 for r in report.results if r.message == "already a member") == 3
        assert len(writes) <= 1 + 2 * 2 * math.ceil(math.log2(20))


async def test_a_new_group_takes_its_first_twenty_members_in_its_create(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    users = []
    for k in range(45):
        users.append(add_user(em, f"m{k}", immutable=f"imm-{k}"))
        link(store, "user", f"src-{k}", users[-1].id)
        queue(store, "group", "src-g", "member_add", member_anchor=f"src-{k}")
    queue(store, "group", "src-g", "create", group_payload(em, 1))
    mark = em.log.seq
    report = await target.exporter(store, lease).export()
    (created,) = [r for r in report.results if r.kind == "create"]
    g = em.store.objects[str(created.target_id)]
    assert len(g.members) == 20 and report.count("ok") == 21
    assert [w[0] for w in _writes(em, mark)] == ["POST"]
    # the other 25 wait for the group's link (the import showing it), then go 20 at a time
    assert report.count("retry") == 0 and len(report.results) == 21
    link(store, "group", "src-g", g.id)
    mark = em.log.seq
    report = await target.exporter(store, lease).export()
    assert report.count("ok") == 25
    assert set(g.members) == {u.id for u in users}
    assert _writes(em, mark) == [("PATCH", f"/groups/{g.id}", 204)] * 2


async def test_a_create_whose_members_are_refused_goes_again_without_them(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    u = add_user(em, "m0", immutable="imm-0")
    link(store, "user", "src-0", u.id)
    link(store, "user", "src-x", "00000000-0000-4000-8000-00000000dead")  # gone from Graph
    for m in ("src-0", "src-x"):
        queue(store, "group", "src-g", "member_add", member_anchor=m)
    queue(store, "group", "src-g", "create", group_payload(em, 1))
    report = await target.exporter(store, lease).export()
    (created,) = [r for r in report.results if r.kind == "create"]
    assert created.outcome == "ok" and not report.errors()
    g = em.store.objects[str(created.target_id)]
    assert g.members == {}
    assert {r.member_anchor: r.outcome for r in report.results if r.kind == "member_add"} == {
        "src-0": "retry",
        "src-x": "retry",
    }
    assert all(a == 0 for a, *_ in _rows(store).values())


async def test_a_short_bind_waits_for_members_whose_creates_are_on_their_way(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    g, users = _team(em, store, 23)
    for k in (23, 24):  # created a moment ago, not yet shown by the target import (no link)
        queue(store, "user", f"src-{k}", "create", user_payload(k))
        queue(store, "group", "src-g", "member_add", member_anchor=f"src-{k}")
    with store.transaction() as conn:
        conn.execute("UPDATE pending_export SET exported_at = now() WHERE kind = 'create'")
    mark = em.log.seq
    report = await target.exporter(store, lease).export()
    assert report.count("ok") == 20 and len(report.results) == 20  # the other 3 were given back
    assert len(_writes(em, mark)) == 1
    assert _rows(store)["src-20"][:3] == (0, False, False)
    late = [add_user(em, f"m{k}", immutable=f"imm-{k}") for k in (23, 24)]
    with store.transaction() as conn:  # the import shows them: linked, creates confirmed
        conn.execute("DELETE FROM pending_export WHERE kind = 'create'")
    for k, u in zip((23, 24), late, strict=True):
        link(store, "user", f"src-{k}", u.id)
    _ready_again(store)
    mark = em.log.seq
    report = await target.exporter(store, lease).export()
    assert report.count("ok") == 5 and len(_writes(em, mark)) == 1
    assert set(g.members) == {u.id for u in users + late}
