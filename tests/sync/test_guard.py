"""The deletion guard: a mass delete holds every export until that exact set is approved."""

from __future__ import annotations

from idsync.store.db import Store
from idsync.sync.guard import Thresholds, exceeds
from tests.sync.conftest import World, ad_user, guid, make_world


def _provisioned(store: Store, n: int, **engine_args: object) -> World:
    w = make_world(store, {"user": {"scope": {"include": ["OU=Staff,DC=example,DC=com"]}}}, **engine_args)
    w.source(*(ad_user(i) for i in range(n)))
    w.sync()
    w.export_all()
    w.sync()
    assert w.ops() == []
    return w


def test_too_many_deletes_hold_every_export_until_approved(store: Store) -> None:
    w = _provisioned(store, 10, thresholds=Thresholds(count=3))
    # An OU is "unticked" by mistake: 5 users leave scope. Also one harmless new user.
    w.source(*(ad_user(i, ou="OU=Gone") for i in range(5)), ad_user(99))
    result = w.sync()
    assert result.guard.held and result.guard.deletes == 5
    assert "held: 5 pending deletes exceed the threshold (3 deletes)" in result.sentence()
    assert w.export_all() == 0  # nothing at all runs, not even the create
    assert w.export_all(approved=("not-the-fingerprint",)) == 0

    assert w.export_all(approved=(result.guard.fingerprint,)) == 6
    w.sync()
    assert w.ops() == []
    assert all(w.target_of(guid(i)) is None for i in range(5))


def test_an_approval_releases_exactly_that_set(store: Store) -> None:
    w = _provisioned(store, 10, thresholds=Thresholds(count=3))
    w.source(*(ad_user(i, ou="OU=Gone") for i in range(4)))
    first = w.sync().guard
    assert first.held and first.deletes == 4
    # Before anyone approves, one more user leaves: a different set with a different fingerprint.
    w.source(ad_user(4, ou="OU=Gone"))
    second = w.sync().guard
    assert second.held and second.deletes == 5 and second.fingerprint != first.fingerprint
    # Approving the first set does not release the larger one.
    assert w.export_all(approved=(first.fingerprint,)) == 0
    decision = w.engine.guard_decision((first.fingerprint,))
    assert decision.held
    # The user comes back: the set is the approved one again, and a subset of it stays released
    # while its deletes complete in batches.
    w.source(ad_user(4))
    assert w.sync().guard.held
    released = w.engine.guard_decision((first.fingerprint,))
    assert not released.held and released.approved_by == first.fingerprint
    assert w.export_all(approved=(first.fingerprint,), limit=2) == 2
    w.sync()  # two deletes confirmed: the remaining two are a subset of the approved set
    assert len(w.ops("delete")) == 2
    assert not w.engine.guard_decision((first.fingerprint,)).held
    w.export_all(approved=(first.fingerprint,))
    w.sync()
    assert w.ops() == []


def test_the_percentage_threshold(store: Store) -> None:
    w = _provisioned(store, 10, thresholds=Thresholds(count=0, percent=20))
    w.source(*(ad_user(i, ou="OU=Gone") for i in range(2)))
    within = w.sync().guard
    assert not within.held and within.deletes == 2 and within.owned == 10
    w.source(ad_user(2, ou="OU=Gone"))
    over = w.sync().guard
    assert over.held and over.deletes == 3


def test_thresholds() -> None:
    assert not exceeds(500, 1000, Thresholds())
    assert exceeds(501, 1000, Thresholds())
    assert not exceeds(10_000, 10_000, Thresholds(count=0))  # 0 switches the count off
    assert exceeds(11, 100, Thresholds(count=0, percent=10))
    assert not exceeds(10, 100, Thresholds(count=0, percent=10))
