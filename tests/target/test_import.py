"""Target import from the emulator's Graph delta into the target space on real PostgreSQL."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from idsync.emulator.core import Emulator
from idsync.emulator.faults import Fault
from idsync.store import target_space
from idsync.store.db import Store
from idsync.target import GraphTarget
from idsync.target.delta import page_links
from idsync.target.schema import flatten, nest
from tests.target.conftest import add_group, add_user


def _rows(store: Store) -> dict[str, target_space.TargetObject]:
    with store.connection() as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM target_object")]
        out = {}
        for i in ids:
            row = target_space.get(conn, i)
            assert row is not None
            out[i] = row
        return out


def _members(store: Store, gid: str) -> set[str]:
    with store.connection() as conn:
        return target_space.members(conn, gid)


async def test_users_and_groups_with_members_split_across_pages(
    em: Emulator, target: GraphTarget, store: Store
) -> None:
    em.configure(delta_page_size=3, delta_link_limit=2)  # small pages: members@delta spread over pages
    ours = [add_user(em, f"u{i}", immutable=f"imm{i}") for i in range(5)]
    cloud = add_user(em, "cloudonly")  # no anchor: foreign
    connect = add_user(em, "synced", immutable="fromconnect", onPremisesSyncEnabled=True)
    big = add_group(em, "big", anchor="g-big", members=(*ours, cloud))
    foreign = add_group(em, "foreign", members=(ours[0],))

    result = await target.import_delta(store)

    assert result.types["user"].complete and result.types["group"].complete
    assert result.types["group"].pages > 2  # the member list did not fit in one page
    rows = _rows(store)
    assert {rows[u.id].anchor for u in ours} == {f"imm{i}" for i in range(5)}
    assert rows[cloud.id].anchor is None
    assert rows[connect.id].anchor is None  # Entra Connect's object is never idsync's
    assert rows[big.id].anchor == "g-big" and rows[foreign.id].anchor is None
    assert rows[ours[2].id].attrs["userPrincipalName"] == "u2@example.com"
    assert rows[big.id].attrs["displayName"] == "Big"
    assert _members(store, big.id) == {u.id for u in ours} | {cloud.id}
    assert _members(store, foreign.id) == {ours[0].id}
    with store.connection() as conn:
        assert target_space.round_state(conn) == {"user": "complete", "group": "complete"}


async def test_incremental_round_applies_removed_and_member_changes(
    em: Emulator, target: GraphTarget, store: Store
) -> None:
    a, b, c = (add_user(em, n, immutable=f"imm-{n}") for n in "abc")
    g = add_group(em, "team", anchor="g-team", members=(a, b))
    doomed = add_group(em, "doomed", anchor="g-doomed", members=(c,))
    await target.import_delta(store)

    em.store.remove_member(g, a.id)
    em.store.add_member(g, c)
    em.store.soft_delete(b)  # to deletedItems: @removed "changed", and out of its groups
    em.store.purge(doomed)  # security group: gone for good, @removed "deleted"
    c.props["department"] = "Legal"
    em.store.touch(c, ["department"])
    result = await target.import_delta(store)

    assert not result.types["user"].full and result.types["user"].complete
    assert result.types["user"].counts.deleted == 1 and result.types["group"].counts.deleted == 1
    rows = _rows(store)
    assert rows[b.id].deleted and rows[doomed.id].deleted and not rows[c.id].deleted
    assert rows[c.id].attrs["department"] == "Legal"
    assert _members(store, g.id) == {c.id}
    assert _members(store, doomed.id) == set()


async def test_a_crash_between_pages_resumes_at_the_next_page(
    em: Emulator, target: GraphTarget, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    em.configure(delta_page_size=2)
    target.importer.prefetch = 1  # one page per transaction
    users = [add_user(em, f"u{i}", immutable=f"imm{i}") for i in range(9)]
    real_write = target.importer._write
    calls = {"n": 0}

    def dies_at_third_page(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("process killed")
        return real_write(*args)

    monkeypatch.setattr(target.importer, "_write", dies_at_third_page)
    with pytest.raises(RuntimeError, match="process killed"):
        await target.import_delta(store, ("user",))
    with store.connection() as conn:
        assert target_space.round_state(conn)["user"] == "full"  # incomplete: not to be diffed
        assert conn.execute("SELECT count(*) FROM target_object").fetchone() == (4,)
        pos = target_space.load_position(conn, "user")
    assert pos is not None and "$skiptoken=" in pos.link

    monkeypatch.setattr(target.importer, "_write", real_write)
    mark = em.log.seq
    result = await target.import_delta(store, ("user",))

    assert "$skiptoken=" in em.log.since(mark)[0].path  # resumed where it stopped, no restart
    assert result.types["user"].complete and result.types["user"].counts.added == 5
    assert result.types["user"].pages == 3
    assert {r.id for r in _rows(store).values()} == {u.id for u in users}


async def test_expired_token_triggers_a_logged_full_resync_that_sweeps(
    em: Emulator, target: GraphTarget, store: Store
) -> None:
    old = add_user(em, "old", immutable="imm-old")
    keep = add_user(em, "keep", immutable="imm-keep")
    g = add_group(em, "team", anchor="g-team", members=(old, keep))
    await target.import_delta(store)
    # Changes Graph will never report as such: the token expires (7 days) and the object is purged.
    em.store.purge(old)
    em.advance_clock(8 * 86400)

    with capture_logs() as logs:
        result = await target.import_delta(store)

    assert result.types["user"].resynced.startswith("400 syncStateNotFound")
    assert result.types["user"].full and result.types["user"].complete
    assert any(e["event"] == "target.delta.resync" and e["type"] == "user" for e in logs)
    rows = _rows(store)
    assert rows[old.id].deleted and not rows[keep.id].deleted
    assert _members(store, g.id) == {keep.id}


async def test_410_gone_restarts_the_round(em: Emulator, target: GraphTarget, store: Store) -> None:
    add_group(em, "team", anchor="g-team")
    await target.import_delta(store, ("group",))
    em.faults.add(Fault(kind="gone", count=1, path="^/groups/delta"))
    result = await target.import_delta(store, ("group",))
    assert result.types["group"].resynced == "410 resyncRequired"
    assert result.types["group"].complete and result.types["group"].counts.unchanged == 1


def test_links_are_found_without_parsing_the_objects() -> None:
    page = orjson.dumps(
        {
            "@odata.context": "https://graph/v1.0/$metadata#users",
            "value": [{"id": "1", "displayName": 'tricky "@odata.nextLink":"https://evil/"'}],
            "@odata.nextLink": "https://graph/v1.0/users/delta?$skiptoken=a%2Fb&x=\u00e9",
        }
    )
    assert page_links(page) == ("https://graph/v1.0/users/delta?$skiptoken=a%2Fb&x=\u00e9", None)
    done = b'{"value":[],"@odata.deltaLink":"https:\\/\\/graph\\/v1.0\\/users\\/delta?$deltatoken=z"}'
    assert page_links(done) == (None, "https://graph/v1.0/users/delta?$deltatoken=z")


def test_graph_properties_are_stored_under_the_rules_names() -> None:
    item = {
        "id": "x",
        "displayName": "A",
        "members@delta": [{"id": "m"}],
        "onPremisesExtensionAttributes": {"extensionAttribute1": "one", "extensionAttribute2": None},
    }
    flat = flatten(item)
    assert flat == {
        "displayName": "A",
        "onPremisesExtensionAttributes.extensionAttribute1": "one",
        "onPremisesExtensionAttributes.extensionAttribute2": None,
    }
    assert nest(flat) == {
        "displayName": "A",
        "onPremisesExtensionAttributes": {"extensionAttribute1": "one", "extensionAttribute2": None},
    }
