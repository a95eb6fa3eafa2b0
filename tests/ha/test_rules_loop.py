"""The HA loop's decisions about the cluster's versioned rules (ha/rules.py), on the in-memory
coordination fake: a node on another version is not promoted, a trial node reports "trial" and
never leads (not even forced), a node that cannot load a version says so, and after an apply the
trial node takes over through the ordinary switchover.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from idsync.ha import rules as r
from idsync.ha.fake import FakeCoordination, FakeEnsemble
from idsync.ha.loop import HaLoop, Health, Timing
from idsync.ha.records import FailoverRequest, SwitchoverRequest

TIMING = Timing(session_timeout=3.0, loop_interval=1.0, request_timeout=0.5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ensemble() -> FakeEnsemble:
    # The cluster runs rules v2; a trial of other rules is placed on b.
    return FakeEnsemble(session_timeout=3.0, rules_version=2, rules_hash="h2")


def make(ensemble: FakeEnsemble, clock: Clock, name: str) -> HaLoop[FakeCoordination]:
    return HaLoop(FakeCoordination(ensemble, name), TIMING, clock=clock, wall=clock)


def health(clock: Clock, *, version: int = 2, trial: bool = False, error: str = "") -> Health:
    return Health(
        True,
        clock(),
        True,
        "effective",
        {"update": 3},
        rules_version=version,
        rules_trial=trial,
        rules_error=error,
    )


def test_a_node_on_another_version_is_not_promoted(ensemble: FakeEnsemble, clock: Clock) -> None:
    b = make(ensemble, clock, "b")
    d = b.run_cycle(health(clock, version=1))
    assert d.sentence == "staging: no leader, not taking over: runs rules v1, the cluster's are v2"
    assert ensemble.members["b"].rules_version == 1 and not ensemble.members["b"].healthy
    assert b.run_cycle(health(clock)).promoted  # once on v2 it may lead


def test_a_node_that_cannot_load_a_version_says_so_and_is_not_promoted(
    ensemble: FakeEnsemble, clock: Clock
) -> None:
    b = make(ensemble, clock, "b")
    why = "cannot load rules v2: user.flows.displayName: unknown function"
    d = b.run_cycle(health(clock, version=1, error=why))
    assert d.sentence == f"staging: no leader, not taking over: {why}"
    assert ensemble.members["b"].reason == why


def test_a_trial_node_reports_trial_and_never_leads_even_forced(ensemble: FakeEnsemble, clock: Clock) -> None:
    ensemble.trial_node, ensemble.trial_hash = "b", "t" * 64
    b = make(ensemble, clock, "b")
    d = b.run_cycle(health(clock, trial=True))
    assert d.sentence == "staging: no leader, running a rules trial: never promoted (apply or abort it)"
    m = ensemble.members["b"]
    assert m.trial and not m.healthy
    assert m.reason == "rules trial tttttttttttt: reports only, never promoted automatically"
    b.coord.request_failover(FailoverRequest(to="b", by="ops", at=clock()))
    assert not b.run_cycle(health(clock, trial=True)).promoted
    assert ensemble.leader is None


def test_a_leader_hands_over_to_the_trial_node_once_the_trial_is_applied(
    ensemble: FakeEnsemble, clock: Clock
) -> None:
    a, b = make(ensemble, clock, "a"), make(ensemble, clock, "b")
    assert a.run_cycle(health(clock)).promoted
    ensemble.trial_node, ensemble.trial_hash = "b", "t" * 64
    b.run_cycle(health(clock, trial=True))
    # `rules apply --switchover`: v3 (the trial's text), the trial gone, a switchover to b, at once.
    ensemble.rules_version, ensemble.rules_hash = 3, "t" * 64
    ensemble.trial_node = ensemble.trial_hash = ""
    a.coord.request_switchover(SwitchoverRequest(to="b", by="ops", at=clock(), leader="a", epoch=1))
    b.run_cycle(health(clock, version=3))  # the trial node runs v3 without reloading anything
    d = a.run_cycle(health(clock, version=3))
    assert d.sentence == "released leadership at epoch 1: switchover to b"
    d = b.run_cycle(health(clock, version=3))
    assert d.promoted and d.epoch == 2
    assert ensemble.members["b"].rules_version == 3 and not ensemble.members["b"].trial


def test_without_cluster_versions_the_epoch_hash_still_decides(clock: Clock) -> None:
    ens = FakeEnsemble(session_timeout=3.0)
    a, b = make(ens, clock, "a"), make(ens, clock, "b")
    assert a.run_cycle(replace(health(clock, version=0), rules_hash="r1")).promoted
    a.release("test")
    d = b.run_cycle(replace(health(clock, version=0), rules_hash="r2"))
    assert "differs from the cluster's" in d.sentence


def test_wanted_rules_precedence() -> None:
    cur = r.RulesVersion(4, "a = 1\n", r.text_hash("a = 1\n"), by="ops")
    trial = r.RulesTrial("b", "a = 2\n", r.text_hash("a = 2\n"), base=4)
    state = r.ClusterRules(cur, trial, None)
    assert r.wanted(state, "b") == ("a = 2\n", trial.hash, f"trial {trial.hash[:12]}", True, 4)
    assert r.wanted(state, "a") == ("a = 1\n", cur.hash, "v4", False, 4)
    assert r.wanted(r.ClusterRules(None, None, None), "a") is None


def test_the_impact_fingerprint_changes_with_the_queue() -> None:
    trial = r.RulesTrial("b", "x", r.text_hash("x"), base=1)
    rep = r.TrialReport("b", trial.hash, True, cycles=1, pending={"update": 1000})
    fp = r.impact_fingerprint(trial, rep)
    assert fp == r.impact_fingerprint(trial, replace(rep, cycles=5))
    assert fp != r.impact_fingerprint(trial, replace(rep, pending={"update": 1001}))
    assert fp != r.impact_fingerprint(replace(trial, hash=r.text_hash("y")), rep)
