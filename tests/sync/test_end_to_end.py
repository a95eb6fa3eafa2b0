"""Sync engine + the real target connector + the Graph emulator: pending → exported → confirmed.

The source space is written directly (the LDAP end of the path has its own tests); everything
after it is the production code: rules, engine, exporter over HTTPS, delta import, confirmation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from idsync.config.target import GraphSettings
from idsync.emulator.core import Emulator
from idsync.store import source_space
from idsync.store.db import Store
from idsync.sync.engine import SyncEngine, SyncResult
from idsync.sync.functions import immutable_id
from idsync.sync.rules import Rules, load_rules
from idsync.target.client import GraphClient
from idsync.target.graph import GraphTarget
from tests.sync.conftest import ad_group, ad_user, guid
from tests.target.conftest import NODE, TestFence, em, lease, server, settings, store, tls  # noqa: F401

G1 = guid(100_001)


@pytest.fixture
def rules(settings: GraphSettings) -> Rules:  # noqa: F811
    return load_rules(None, source_kind="ad", group_anchor=settings.anchor_extension_attribute)


@pytest.fixture
async def connector(settings: GraphSettings, rules: Rules) -> AsyncIterator[GraphTarget]:  # noqa: F811
    client = GraphClient(settings, node=NODE, backoff_base=0.02, read_attempts=3)
    async with GraphTarget(
        settings,
        node=NODE,
        client=client,
        user_attributes=rules.managed_attributes("user"),
        group_attributes=rules.managed_attributes("group"),
        group_anchor=rules.anchor_attribute("group"),
    ) as t:
        yield t


class Cycle:
    """One node's cycle without the LDAP import: target import → sync → export."""

    def __init__(self, store: Store, rules: Rules, target: GraphTarget, lease: TestFence) -> None:  # noqa: F811
        self.store, self.target, self.lease = store, target, lease
        self.engine = SyncEngine(store, rules, check_target_rounds=True)

    async def run(self) -> SyncResult:
        await self.target.import_delta(self.store)
        result = await asyncio.to_thread(self.engine.run)
        await self.target.exporter(self.store, self.lease).export(held=result.guard.held)
        return result

    async def settle(self, rounds: int = 4) -> SyncResult:
        """Cycles until a sync finds nothing left to do (every operation confirmed)."""
        for _ in range(rounds):
            result = await self.run()
            if not result.pending:
                return result
        return result


def _users(em: Emulator) -> dict[str, dict[str, Any]]:  # noqa: F811
    return {u["userPrincipalName"]: u for u in em.dump()["users"]}


async def test_changes_travel_to_graph_and_are_confirmed_by_import(
    store: Store,  # noqa: F811
    rules: Rules,
    connector: GraphTarget,
    lease: TestFence,  # noqa: F811
    em: Emulator,  # noqa: F811
) -> None:
    cycle = Cycle(store, rules, connector, lease)
    with store.transaction() as conn:
        source_space.upsert(conn, [ad_user(1, title="Chef"), ad_user(2), ad_group(1, [guid(1), guid(2)])])
    await cycle.settle()
    assert (await cycle.run()).pending == {}
    users = _users(em)
    assert users["u1@example.com"]["jobTitle"] == "Chef"
    assert users["u1@example.com"]["onPremisesImmutableId"] == immutable_id(guid(1))
    [group] = em.dump()["groups"]
    assert group[rules.anchor_attribute("group")] == G1
    ids = {u["id"]: upn for upn, u in users.items()}
    assert sorted(ids[m] for m in group["members"]) == ["u1@example.com", "u2@example.com"]

    # An attribute change and a deletion in the source.
    with store.transaction() as conn:
        source_space.upsert(conn, [ad_user(1, title="Head chef")])
        source_space.delete(conn, [guid(2)])
    await cycle.settle()
    users = _users(em)
    assert users["u1@example.com"]["jobTitle"] == "Head chef"
    assert "u2@example.com" not in users


async def test_a_held_mass_delete_reaches_graph_only_once_approved(
    store: Store,  # noqa: F811
    rules: Rules,
    connector: GraphTarget,
    lease: TestFence,  # noqa: F811
    em: Emulator,  # noqa: F811
) -> None:
    from idsync.sync.guard import Thresholds

    cycle = Cycle(store, rules, connector, lease)
    cycle.engine.thresholds = Thresholds(count=2)
    with store.transaction() as conn:
        source_space.upsert(conn, [ad_user(i) for i in range(5)])
    await cycle.settle()
    assert len(_users(em)) == 5
    with store.transaction() as conn:
        source_space.delete(conn, [guid(i) for i in range(3)])
    held = await cycle.run()
    assert held.guard.held and held.guard.deletes == 3
    await cycle.run()
    assert len(_users(em)) == 5  # nothing was deleted while the guard held

    approved = held.guard.fingerprint
    await connector.import_delta(store)
    result = await asyncio.to_thread(cycle.engine.run, approved_fingerprints=(approved,))
    assert not result.guard.held
    await connector.exporter(store, lease).export(held=result.guard.held)
    await connector.import_delta(store)
    assert (await asyncio.to_thread(cycle.engine.run)).pending == {}
    assert sorted(_users(em)) == ["u3@example.com", "u4@example.com"]
