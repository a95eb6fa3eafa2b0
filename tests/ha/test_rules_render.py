"""What operators read from `idsync rules`: the impact table and CSV, the history, the diff."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest

from idsync.commands import rules as cmd
from idsync.ha import rules as r

DOC: dict[str, Any] = {
    "trial": {"node": "b", "hash": "ab" * 32, "base": 3, "by": "ops@h", "origin": "new.toml"},
    "diff": r.unified_diff("", "[user.flows]\njobTitle = 'x'\n", "v3", "trial"),
    "operations": {"update": 2, "delete": 1},
    "attributes": [
        {
            "operation": "update",
            "attribute": "displayName",
            "count": 2,
            "samples": [{"name": "ann@x", "old": "Ann", "new": "T-Ann"}],
        },
        {
            "operation": "delete",
            "attribute": "-",
            "count": 1,
            "samples": [{"name": "bob@x", "old": None, "new": None}],
        },
    ],
    "guard": {"held": False, "deletes": 1, "fingerprint": "f", "sentence": "clear: 1 pending deletes"},
    "fingerprint": "0123456789abcdef",
    "threshold": 2,
    "needs_fingerprint": True,
}


def test_impact_table_names_counts_examples_guard_and_the_fingerprint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cmd._impact_table(DOC)
    out = capsys.readouterr().out
    assert "rules trial abababababab on b against v3 (by ops@h, new.toml)" in out
    assert "+jobTitle = 'x'" in out
    assert "would change: 3 operation(s): 2 update, 1 delete" in out
    assert "ann@x: Ann → T-Ann" in out
    assert "deletion guard: clear: 1 pending deletes" in out
    assert "apply with `idsync rules apply --fingerprint 0123456789abcdef`" in out


def test_impact_csv_has_one_row_per_example(capsys: pytest.CaptureFixture[str]) -> None:
    cmd._impact_csv(DOC)
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [
        ["operation", "attribute", "count", "name", "old", "new"],
        ["update", "displayName", "2", "ann@x", "Ann", "T-Ann"],
        ["delete", "-", "1", "bob@x", "-", "-"],
    ]


def test_history_table_says_who_did_each_step() -> None:
    events = [
        r.RulesEvent(r.SEED, 1, "a" * 64, "a", "node a", 0.0, "seeded from preset ad"),
        r.RulesEvent(r.APPLY, 2, "b" * 64, "b", "ops@host", 0.0, "trial on b"),
    ]
    lines = r.render_history(events).splitlines()
    assert re.search(r"\bseed\s+v1\s+aaaaaaaaaaaa\s+a\s+node a\s+seeded from preset ad$", lines[1])
    assert "apply" in lines[2] and "ops@host" in lines[2] and "trial on b" in lines[2]
    assert r.render_history([]).endswith("(no rules changes recorded)")


def test_equal_texts_have_no_diff() -> None:
    assert r.unified_diff("a = 1\n", "a = 1\n", "v1", "v2") == ""


def test_status_marks_the_trial_node_trial_and_shows_each_nodes_rules_version() -> None:
    from idsync.ha.control import render_status
    from idsync.ha.records import ClusterView, EpochRecord, LeaderRecord, MemberRecord

    now = 5000.0
    members = {
        "a": MemberRecord("a", "leader", True, epoch=4, last_cycle_ok=now, last_cycle=now, rules_version=3),
        "b": MemberRecord(
            "b",
            "staging",
            False,
            "rules trial cccccccccccc: reports only",
            last_cycle=now,
            rules_version=3,
            trial=True,
        ),
        "c": MemberRecord(
            "c", "staging", False, "cannot load rules v3: bad", last_cycle=now, rules_version=2
        ),
    }
    view = ClusterView(
        LeaderRecord("a", 4, 1),
        EpochRecord(4, "a"),
        1,
        members,
        None,
        None,
        None,
        None,
        rules_version=3,
        rules_hash="h",
        trial_node="b",
        trial_hash="c" * 64,
    )
    out = render_status(view, "prod", now)
    assert out.splitlines()[0] == "cluster prod  epoch 4  leader a  rules v3"
    assert "rules trial cccccccccccc on b (`idsync rules impact` there)" in out
    assert re.search(r"\na\s+leader\s+ok\s+0s ago\s+0\s+v3\s*\n", out)
    assert re.search(r"\nb\s+staging\s+trial\s+never\s+0\s+v3\s+rules trial cccccccccccc", out)
    assert re.search(r"\nc\s+staging\s+UNHEALTHY\s+never\s+0\s+v2\s+cannot load rules v3: bad", out)
