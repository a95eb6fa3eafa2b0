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
    assert "held: 5 pending deletes exceed the threshold (3 deletes within 30 min)" in result.sentence()
    assert w.export_all() == 0  # nothing at all runs, not even the create
    assert w.export_all(approved=("not-the-fingerprint",)) == 0

    assert w.export_all(approved=(result.guard.fingerprint,)) == 6
    w.sync()
    assert w.ops() == []
    assert all(w.target_of(guid(i)) is None for i in range(5))


def test_an_approval_releases_that_set_and_later_deletes_count_anew(store: Store) -> None:
    w = _provisioned(store, 10, thresholds=Thresholds(count=3))
    w.source(*(ad_user(i, ou="OU=Gone") for i in range(4)))
    first = w.sync().guard
    assert first.held and first.deletes == 4
    # Before anyone approves, one more user leaves: a different set with a different fingerprint.
    w.source(ad_user(4, ou="OU=Gone"))
    second = w.sync().guard
    assert second.held and second.deletes == 5 and second.fingerprint != first.fingerprint
    # Approving the first set releases it; the one delete on top counts anew (1 <= 3).
    released = w.engine.guard_decision((first.fingerprint,))
    assert not released.held and released.deletes == 1 and released.approved_by is None
    assert w.export_all(approved=(first.fingerprint,)) == 5
    w.sync()
    assert w.ops() == []
    # Within the window, exported deletes still count: four more leaving trips the guard again,
    # because 1 unapproved delete was exported a moment ago (1 + 4 > 3).
    w.source(*(ad_user(i, ou="OU=Gone") for i in range(5, 8)))
    w.sync()
    again = w.engine.guard_decision((first.fingerprint,))
    assert again.held and again.deletes == 4
    assert w.export_all(approved=(first.fingerprint,)) == 0


def test_deletes_trickling_in_over_cycles_add_up(store: Store) -> None:
    w = _provisioned(store, 10, thresholds=Thresholds(count=3))
    for i in range(3):  # one delete per cycle, each exported at once
        w.source(ad_user(i, ou="OU=Gone"))
        assert not w.sync().guard.held
        assert w.export_all() == 1
        w.sync()
    w.source(ad_user(3, ou="OU=Gone"))
    tripped = w.sync().guard
    assert tripped.held and tripped.deletes == 4  # 3 exported within the window + 1 pending
    assert w.export_all() == 0
    assert w.export_all(approved=(tripped.fingerprint,)) == 1


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
