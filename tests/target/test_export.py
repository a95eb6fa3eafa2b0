"""Export against the emulator: every operation, idempotence, conflicts, faults, fencing."""

from __future__ import annotations

from typing import Any

import pytest

from idsync.emulator.core import Emulator
from idsync.emulator.faults import Fault
from idsync.fencing import Fenced
from idsync.store import fence as store_fence
from idsync.store.db import Store
from idsync.target import ExportRejected, GraphTarget, NotOwned
from tests.target.conftest import (
    ANCHOR_EXT,
    EPOCH,
    TestFence,
    add_group,
    add_user,
    group_payload,
    link,
    queue,
    rearm,
    user_payload,
)


def _users(em: Emulator) -> list[dict[str, Any]]:
    return list(em.dump()["users"])


def _by_immutable(em: Emulator) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for u in _users(em):
        if u.get("onPremisesImmutableId"):
            out.setdefault(u["onPremisesImmutableId"], []).append(u["id"])
    return out


def _pending(store: Store) -> list[tuple[str, str, bool, str | None]]:
    with store.connection() as conn:
        rows = conn.execute(
            "SELECT kind, anchor, exported_at IS NOT NULL, last_error FROM pending_export ORDER BY id"
        ).fetchall()
    return [(r[0], r[1], bool(r[2]), r[3]) for r in rows]


def _journal(store: Store) -> list[tuple[str, str, str, int, str]]:
    with store.connection() as conn:
        rows = conn.execute(
            "SELECT kind, anchor, outcome, epoch, node FROM export_journal ORDER BY id"
        ).fetchall()
    return [(r[0], r[1], r[2], int(r[3]), r[4]) for r in rows]


async def test_every_operation_lands_in_graph(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    ext = em.cfg.extension_name(ANCHOR_EXT)
    queue(store, "user", "src-1", "create", user_payload(1))
    queue(
        store,
        "user",
        "src-2",
        "create",
        user_payload(2, **{"onPremisesExtensionAttributes.extensionAttribute3": "x3"}),
    )
    queue(store, "group", "src-g", "create", group_payload(em, 1))
    report = await target.exporter(store, lease).export()

    assert report.count("ok") == 3 and not report.errors(), report.results
    ids = {r.anchor: r.target_id for r in report.results}
    u1, u2, g = (
        em.store.objects[str(ids["src-1"])],
        em.store.objects[str(ids["src-2"])],
        em.store.objects[str(ids["src-g"])],
    )
    assert u1.props["onPremisesImmutableId"] == "imm-1" and u1.props["department"] == "Sales"
    assert u2.props["onPremisesExtensionAttributes"] == {"extensionAttribute3": "x3"}
    assert g.props[ext] == "g-1" and g.props["securityEnabled"] is True

    for anchor in ("src-1", "src-2", "src-g"):  # what the sync engine does once the import shows them
        link(store, "group" if anchor == "src-g" else "user", anchor, str(ids[anchor]))
    queue(store, "user", "src-1", "update", {"department": "Legal", "jobTitle": None}, target_id=u1.id)
    queue(store, "group", "src-g", "member_add", member_anchor="src-1")
    queue(store, "group", "src-g", "member_add", member_anchor="src-2")
    report = await target.exporter(store, lease).export()
    assert report.count("ok") == 3, report.results
    assert u1.props["department"] == "Legal" and u1.props.get("jobTitle") is None
    assert set(g.members) == {u1.id, u2.id}

    queue(store, "group", "src-g", "member_remove", member_anchor="src-2")
    queue(store, "user", "src-1", "delete", target_id=u1.id)
    report = await target.exporter(store, lease).export()
    assert report.count("ok") == 2, report.results
    assert set(g.members) == set()  # u2 removed; u1 left with its deletion
    assert em.store.deleted(u1.id) is not None  # a user goes to deletedItems

    queue(store, "group", "src-g", "delete", target_id=g.id)
    report = await target.exporter(store, lease).export()
    assert report.count("ok") == 1 and g.id not in em.store.objects  # security groups: hard delete
    assert all(j[2] == "ok" and j[3] == EPOCH and j[4] == "a" for j in _journal(store))
    assert all(done for _, _, done, _ in _pending(store))


async def test_the_same_export_twice_leaves_the_same_state(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    for n in range(25):
        queue(store, "user", f"src-{n}", "create", user_payload(n))
    queue(store, "group", "src-g", "create", group_payload(em, 1))
    first = await target.exporter(store, lease).export()
    assert first.count("ok") == 26
    state = em.dump()

    rearm(store)  # the confirming import never came: everything is exported again
    mark = em.log.seq
    second = await target.exporter(store, lease).export()
    assert second.count("adopted") == 26  # found by anchor, not created again
    assert {r.anchor: r.target_id for r in second.results} == {r.anchor: r.target_id for r in first.results}
    assert em.dump()["users"] == state["users"] and em.dump()["groups"] == state["groups"]
    assert not [e for e in em.log.since(mark) if e.write]

    ids = {r.anchor: str(r.target_id) for r in first.results}
    for n in range(25):
        link(store, "user", f"src-{n}", ids[f"src-{n}"])
    link(store, "group", "src-g", ids["src-g"])
    queue(store, "group", "src-g", "member_add", member_anchor="src-0")
    queue(store, "group", "src-g", "member_remove", member_anchor="src-1")
    queue(store, "user", "src-24", "delete", target_id=ids["src-24"])
    queue(store, "user", "src-23", "update", {"department": "Legal"}, target_id=ids["src-23"])
    await target.exporter(store, lease).export()
    state = em.dump()
    rearm(store, "member_add", "member_remove", "delete", "update")
    again = await target.exporter(store, lease).export()
    assert [r.outcome for r in again.results] == ["ok"] * 4, again.results
    assert {r.message for r in again.results} == {None, "already a member", "not a member", "already deleted"}
    assert em.dump()["users"] == state["users"] and em.dump()["groups"] == state["groups"]
    assert len(state["users"]) == 24


async def test_a_create_retried_after_a_dropped_connection_is_adopted_not_duplicated(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    for n in range(10):
        queue(store, "user", f"src-{n}", "create", user_payload(n))
    # The connection dies mid-batch: Graph ran the first create, then no answer ever came back.
    em.faults.add(Fault(kind="drop", after=True, count=1, in_batch=True, methods=["POST"], path="^/users$"))
    report = await target.exporter(store, lease).export()

    assert report.count("adopted") == 1 and report.count("ok") == 9, report.results
    assert sorted(_by_immutable(em)) == sorted(f"imm-{n}" for n in range(10))
    assert all(len(v) == 1 for v in _by_immutable(em).values())  # no duplicates


async def test_a_conflict_with_a_foreign_object_is_rejected_with_graphs_message(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    add_user(em, "p1")  # a cloud-only user already holds p1@example.com
    queue(store, "user", "src-1", "create", user_payload(1))
    report = await target.exporter(store, lease).export()
    (res,) = report.results
    assert res.outcome == "error" and isinstance(res.error, ExportRejected)
    assert res.error.anchor == "src-1" and res.error.code == "ObjectConflict"
    assert "userPrincipalName already exists" in res.error.message
    assert _pending(store)[0][3] is not None and "ObjectConflict" in str(_pending(store)[0][3])


async def test_an_object_already_carrying_the_anchor_is_adopted_without_a_write(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    earlier = add_user(em, "p1", immutable="imm-1")  # created by an earlier leader
    queue(store, "user", "src-1", "create", user_payload(1))
    mark = em.log.seq
    report = await target.exporter(store, lease).export()
    assert [(r.outcome, r.target_id) for r in report.results] == [("adopted", earlier.id)]
    assert not [e for e in em.log.since(mark) if e.write]
    assert _journal(store) == [("create", "src-1", "adopted", EPOCH, "a")]


async def test_deleting_an_object_idsync_does_not_own_is_refused(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    cloud = add_user(em, "cloudonly")
    connect = add_user(em, "fromconnect", immutable="x", onPremisesSyncEnabled=True)
    team = add_group(em, "team")
    queue(store, "user", "src-1", "delete", target_id=cloud.id)
    queue(store, "user", "src-2", "delete", target_id=connect.id)
    queue(store, "group", "src-3", "delete", target_id=team.id)
    mark = em.log.seq
    report = await target.exporter(store, lease).export()
    errors = {r.anchor: r.error for r in report.results}
    assert all(isinstance(e, NotOwned) for e in errors.values()), errors
    assert "carries no onPremisesImmutableId" in str(errors["src-1"])
    assert "Entra Connect" in str(errors["src-2"])
    assert (
        em.store.live("user", cloud.id)
        and em.store.live("user", connect.id)
        and em.store.live("group", team.id)
    )
    assert not [e for e in em.log.since(mark) if e.write]


async def test_a_429_storm_is_ridden_out_after_retry_after(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    for n in range(30):
        queue(store, "user", f"src-{n}", "create", user_payload(n))
    em.faults.add(Fault(kind="throttle", count=25, retry_after=1, in_batch=True, writes_only=True))
    report = await target.exporter(store, lease).export()
    assert report.count("ok") == 30 and report.throttled == 25
    assert target.client.write_budget.throttled_total == 25
    assert target.client.write_budget.rate < target.client.write_budget.max_rate  # it slowed down
    assert len(_by_immutable(em)) == 30
    writes = [e for e in em.log.since(0) if e.write]
    throttled_batches = {e.batch for e in writes if e.status == 429}
    last_429 = max(e.time for e in writes if e.status == 429)
    retried = [e.time for e in writes if e.batch not in throttled_batches]
    assert retried and min(retried) - last_429 >= 0.9  # nothing sent before Retry-After (1 s)


async def test_5xx_answers_are_retried_with_backoff(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    for n in range(5):
        queue(store, "user", f"src-{n}", "create", user_payload(n))
    em.faults.add(
        Fault(kind="status", status=503, count=4, retry_after=None, in_batch=True, writes_only=True)
    )
    em.faults.add(Fault(kind="status", status=502, count=1, retry_after=None, path="/\\$batch"))
    report = await target.exporter(store, lease).export()
    assert report.count("ok") + report.count("adopted") == 5, report.results
    assert all(len(v) == 1 for v in _by_immutable(em).values()) and len(_by_immutable(em)) == 5


async def test_a_token_expiring_mid_run_is_renewed(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    for n in range(60):
        queue(store, "user", f"src-{n}", "create", user_payload(n))

    expired: list[int] = []

    def expire(check: int) -> None:
        if not expired and any(e.write for e in em.log.since(0)):  # once the first writes are in
            expired.append(check)
            em.advance_clock(7200)  # the token's hour is over (clock moves 2 h)

    lease.on_ensure = expire
    exporter = target.exporter(store, lease)
    exporter.concurrency = 1  # one batch after the other: the expiry falls between two of them
    report = await exporter.export()
    assert report.count("ok") + report.count("adopted") == 60
    assert expired and target.client.tokens is not None and target.client.tokens.issued == 2
    assert any(e.status == 401 for e in em.log.since(0))
    assert len(_by_immutable(em)) == 60


async def test_a_fenced_exporter_sends_nothing_more(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    for n in range(60):
        queue(store, "user", f"src-{n}", "create", user_payload(n))
    exporter = target.exporter(store, lease)
    exporter.concurrency = 1

    def lose_leadership(check: int) -> None:
        if any(e.write for e in em.log.since(0)):  # the first batch is in; the lease ends now
            lease.broken = "lease lost"

    lease.on_ensure = lose_leadership
    report = await exporter.export()
    assert report.fenced == "lease lost"
    assert report.count("ok") == 20  # only the first batch
    assert len(_by_immutable(em)) == 20
    writes_after = [e for e in em.log.since(0) if e.write]
    assert len(writes_after) == 20
    assert sum(1 for _, _, done, _ in _pending(store) if not done) == 40


async def test_a_hard_delete_is_sent_only_after_a_fresh_quorum_confirmation(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    owned = add_user(em, "owned", immutable="imm-1")
    queue(store, "user", "src-1", "update", {"department": "Legal"}, target_id=owned.id)
    report = await target.exporter(store, lease).export()
    assert report.count("ok") == 1 and lease.confirmations == 0  # reversible writes need none

    def lost_quorum() -> None:  # the quorum no longer confirms us (a partitioned leader)
        lease.confirmations += 1
        # as HaLoop does: a failed confirmation holds the lease (or demotes), so a batch beside
        # this one cannot pass ensure() either
        lease.broken = "leadership not confirmed by a ZooKeeper quorum"
        raise Fenced(EPOCH, lease.broken)

    lease.confirm_now = lost_quorum  # type: ignore[method-assign]
    queue(store, "user", "src-1", "delete", target_id=owned.id)
    mark = em.log.seq
    report = await target.exporter(store, lease).export()
    assert lease.confirmations == 1
    assert report.fenced == "leadership not confirmed by a ZooKeeper quorum"
    assert em.store.live("user", owned.id)
    assert not [e for e in em.log.since(mark) if e.write]
    assert [(k, done) for k, _, done, _ in _pending(store)] == [("update", True), ("delete", False)]


async def test_the_store_fence_refuses_a_claim_after_the_lease_ran_out(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    queue(store, "user", "src-1", "create", user_payload(1))
    with store.transaction() as conn:
        store_fence.revoke(conn, EPOCH)
    report = await target.exporter(store, lease).export()
    assert report.fenced == "lease expired in the store" and report.results == []
    assert not [e for e in em.log.since(0) if e.write]


async def test_requests_are_attributable(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    for n in range(3):
        queue(store, "user", f"src-{n}", "create", user_payload(n))
    await target.exporter(store, lease).export()
    writes = [e for e in em.log.since(0) if e.write]
    assert len(writes) == 3
    assert all(e.user_agent == "idsync/0.1.0 (node=a; epoch=7)" for e in writes)
    ids = [e.client_request_id for e in em.log.since(0)]
    assert len(set(ids)) == len(ids) and all(ids)
    with store.connection() as conn:
        journaled = {r[0] for r in conn.execute("SELECT request_id FROM export_journal")}
    assert journaled == {e.client_request_id for e in writes}


def _attempts(store: Store) -> list[tuple[str, int, bool]]:
    with store.connection() as conn:
        rows = conn.execute(
            "SELECT member_anchor, attempts, quarantined_at IS NOT NULL FROM pending_export ORDER BY id"
        ).fetchall()
    return [(r[0], int(r[1]), bool(r[2])) for r in rows]


@pytest.mark.parametrize("kind", ["update", "member_add"])
async def test_rejections_name_the_object_and_graphs_reason(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence, kind: str
) -> None:
    u = add_user(em, "p1", immutable="imm-1")
    g = add_group(em, "team", anchor="g-1")
    link(store, "user", "src-1", u.id)
    link(store, "group", "src-g", g.id)
    if kind == "update":
        queue(store, "user", "src-1", "update", {"displayName": ""}, target_id=u.id)
    else:
        link(store, "user", "src-x", "00000000-0000-0000-0000-00000000dead")
        queue(store, "group", "src-g", "member_add", member_anchor="src-x")
        # linked just now, a member Graph does not show waits for replication (not counted) ...
        (res,) = (await target.exporter(store, lease).export()).results
        assert res.outcome == "retry" and res.wait and res.status == 404
        assert [(p[1], p[2]) for p in _attempts(store)] == [(0, False)]
        # ... linked long ago, it is not lagging: refused like any other rejection
        with store.transaction() as conn:
            conn.execute("UPDATE sync_link SET linked_at = now() - interval '1 hour'")
            conn.execute("UPDATE pending_export SET not_before = NULL")
    report = await target.exporter(store, lease).export()
    (res,) = report.results
    assert res.outcome == "error" and res.error is not None and res.status in (400, 404)
    assert res.error.anchor == ("src-1" if kind == "update" else "src-g")
    assert res.error.code in ("Request_BadRequest", "Request_ResourceNotFound") and res.error.message


async def test_graph_down_leaves_the_operations_for_later(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    for n in range(3):
        queue(store, "user", f"src-{n}", "create", user_payload(n))
    em.faults.add(Fault(kind="status", status=503, count=None, retry_after=None, path="/\\$batch"))
    report = await target.exporter(store, lease).export()
    assert report.error is not None and "Graph unavailable" in report.error
    assert [r.outcome for r in report.results] == ["retry"] * 3
    assert not [e for e in em.log.since(0) if e.write]
    assert [done for _, _, done, _ in _pending(store)] == [False] * 3
    with store.connection() as conn:
        waiting = conn.execute("SELECT count(*) FROM pending_export WHERE not_before > now()").fetchone()
    assert waiting == (3,)
