"""Changing the sync rules the staging-mode way, with real `idsync run` processes, ZooKeeper,
PostgreSQL, Samba AD and the Graph emulator (docs/operations.md, "Changing the sync rules safely").

1. A trial on the standby writes nothing to the target while `rules impact` on it lists exactly
   the expected changes; `rules apply --switchover` (with the fingerprint, the impact being above
   the threshold) lands them from the trial node at the new epoch and every node reports the new
   version; `rules rollback` restores the old values.
2. A trial that would delete more than the deletion guard allows is held (apply refuses); a
   version a node cannot load is reported by the node, which is then not promoted, until a
   rollback gives it rules it can load.
"""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from idsync.cli import main
from idsync.ha import rules_zk
from tests.cluster.checks import expected_users, user_differences
from tests.cluster.cluster import LocalCluster, wait_converged
from tests.cluster.directory import AdDirectory
from tests.cluster.instance import wait_for
from tests.conftest import ClusterFactory

SESSION = 2.0
USERS = 4
TRIAL_RULES = """\
[user.flows]
displayName = "'T-' + coalesce(source.displayname, source.cn)"
"""
DELETE_ALL_RULES = """\
[user.scope]
condition = "false"
"""
BAD_RULES = """\
[user.flows]
jobTitle = "nosuchfunction(source.title)"
"""


@pytest.fixture
def cluster(local_cluster: ClusterFactory) -> Iterator[LocalCluster]:
    with local_cluster(
        session_timeout=SESSION, deletion_threshold=2, extra={"sync": {"rules_change_threshold": 2}}
    ) as c:
        yield c


def start_pair(cluster: LocalCluster, ad: AdDirectory, ou: str) -> dict[str, dict[str, Any]]:
    for _ in range(USERS):
        ad.add_user(ou, f"r{uuid.uuid4().hex[:8]}")
    cluster.start("a")
    assert cluster.wait_leader() == "a"
    cluster.start("b")
    expected = expected_users(ad.users_under(ou))
    wait_converged(lambda: user_differences(expected, cluster.state()), 40)
    wait_for(lambda: versions(cluster) == {"a": 1, "b": 1}, 20, "both nodes on the seeded v1")
    return expected


def versions(cluster: LocalCluster) -> dict[str, int]:
    return {n: m.rules_version for n, m in cluster.view().members.items()}


def display_names(cluster: LocalCluster) -> dict[str, str]:
    return {
        u["onPremisesImmutableId"]: u.get("displayName")
        for u in cluster.state()["users"]
        if u.get("onPremisesImmutableId")
    }


def writes_by(cluster: LocalCluster, node: str, since: int) -> list[dict[str, Any]]:
    return [w for w in cluster.emulator.writes(since) if re.search(rf"node={node}\b", w["user_agent"])]


def last_seq(cluster: LocalCluster) -> int:
    writes = cluster.emulator.writes()
    return int(writes[-1]["seq"]) if writes else 0


def rules(cluster: LocalCluster, *args: str, config: Path | None = None) -> int:
    if config is not None:
        return main(["--config", str(config), "rules", *args])
    step, rest = args[0], args[1:]
    return main(["rules", step, *cluster.ctl_args(), *rest])


def test_trial_impact_apply_with_switchover_and_rollback(
    cluster: LocalCluster, ad: AdDirectory, samba_ou: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = start_pair(cluster, ad, samba_ou)
    old_names = {iid: want["displayName"] for iid, want in expected.items()}
    trial_file = tmp_path / "rules-displayname.toml"
    trial_file.write_text(TRIAL_RULES)
    seq = last_seq(cluster)

    assert rules(cluster, "trial", str(trial_file), "--on", "b", "--wait", "40") == 0
    out = capsys.readouterr().out
    assert f"{USERS} update pending" in out
    view = cluster.view()
    assert view.members["b"].trial and view.trial_node == "b"
    assert main(["status", *cluster.ctl_args()]) == 0
    assert re.search(r"\nb\s+staging\s+trial\s", capsys.readouterr().out)

    # impact, on the trial node: exactly the displayName updates, old -> new, guard clear
    assert rules(cluster, "impact", "--format", "json", config=cluster.nodes["b"].config) == 0
    imp = orjson.loads(capsys.readouterr().out)
    assert imp["operations"] == {"update": USERS}
    assert [(a["operation"], a["attribute"], a["count"]) for a in imp["attributes"]] == [
        ("update", "displayName", USERS)
    ]
    for s in imp["attributes"][0]["samples"]:
        assert s["new"] == f"T-{s['old']}"
    assert "+displayName = \"'T-' + coalesce(source.displayname, source.cn)\"" in imp["diff"]
    assert not imp["guard"]["held"] and imp["needs_fingerprint"]

    # nothing of the trial reached the target: no write from b, no trial value
    assert writes_by(cluster, "b", seq) == []
    assert display_names(cluster) == old_names

    # above the threshold (2), apply wants the fingerprint impact printed
    assert rules(cluster, "apply", "--switchover") == 1
    assert "the fingerprint is required" in capsys.readouterr().err
    assert rules(cluster, "apply", "--switchover", "--fingerprint", imp["fingerprint"], "--wait", "30") == 0
    out = capsys.readouterr().out
    assert "switchover: a -> b at epoch 2" in out
    assert "every node runs v2: a, b" in out
    want_new = {iid: f"T-{name}" for iid, name in old_names.items()}
    wait_for(lambda: display_names(cluster) == want_new, 30, "the trial's displayNames in the target")
    landed = [w for w in cluster.emulator.writes(seq) if w["method"] == "PATCH" and "/users/" in w["path"]]
    assert landed and all(re.search(r"node=b\b", w["user_agent"]) for w in landed)
    assert all(re.search(r"epoch[=:/ ]?2\b", w["user_agent"]) for w in landed)
    assert not cluster.view().members["b"].trial

    assert rules(cluster, "rollback", "--wait", "30") == 0
    assert "every node runs v3" in capsys.readouterr().out
    wait_for(lambda: display_names(cluster) == old_names, 30, "the old displayNames back in the target")

    assert rules(cluster, "history", "--json") == 0
    steps = [(e["step"], e["version"]) for e in orjson.loads(capsys.readouterr().out)]
    assert steps == [("seed", 1), ("trial", 1), ("apply", 2), ("rollback", 3)]
    assert rules(cluster, "diff", "1", "2") == 0
    assert "+displayName" in capsys.readouterr().out


def test_a_mass_delete_trial_is_held_and_a_node_that_cannot_load_a_version_is_not_promoted(
    cluster: LocalCluster, ad: AdDirectory, samba_ou: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = start_pair(cluster, ad, samba_ou)
    trial_file = tmp_path / "rules-nobody.toml"
    trial_file.write_text(DELETE_ALL_RULES)
    assert rules(cluster, "trial", str(trial_file), "--on", "b", "--wait", "40") == 0
    capsys.readouterr()
    assert rules(cluster, "impact", config=cluster.nodes["b"].config) == 0
    out = capsys.readouterr().out
    assert f"would change: {USERS} operation(s): {USERS} delete" in out
    assert "deletion guard: held" in out
    assert rules(cluster, "apply", "--fingerprint", "whatever") == 1
    assert f"held: under the trial rules {USERS} deletes exceed the deletion guard" in capsys.readouterr().err
    assert rules(cluster, "abort") == 0
    assert "aborted: it returns to v1" in capsys.readouterr().out
    wait_for(lambda: not cluster.view().members["b"].trial, 20, "b back on v1")
    assert cluster.view().members["b"].healthy
    assert len(display_names(cluster)) == USERS  # nothing was deleted

    # A version no node can load (as if published from a host with other settings).
    rules_zk.publish(cluster.ctl, BAD_RULES, by="test", step="apply", note="unloadable")

    def both_refuse() -> bool:
        ms = cluster.view().members
        return all(ms[n].reason.startswith("cannot load rules v2") for n in ("a", "b"))

    wait_for(both_refuse, 20, "both nodes to report they cannot load v2")
    assert rules(cluster, "history", "--json") == 0
    failed = [e for e in orjson.loads(capsys.readouterr().out) if e["step"] == "load-failed"]
    assert {e["node"] for e in failed} == {"a", "b"}
    cluster.nodes["a"].kill()
    wait_for(
        lambda: any("not taking over: cannot load rules v2" in s for s in cluster.nodes["b"].sentences()),
        SESSION * 10,
        "b to refuse leadership",
    )
    assert cluster.leader() is None
    assert rules(cluster, "rollback", "1", "--wait", "30") == 0
    assert cluster.wait_leader(timeout=20) == "b"
    wait_converged(lambda: user_differences(expected, cluster.state()), 30)


def test_a_pinned_rules_file_is_published_and_an_unpinned_one_only_seeds(
    tmp_path: Path, local_cluster: ClusterFactory
) -> None:
    pinned, local = tmp_path / "pinned.toml", tmp_path / "local.toml"
    pinned.write_text("# v1 from configuration management\n")
    local.write_text(TRIAL_RULES)
    with local_cluster(
        cluster="p",
        session_timeout=SESSION,
        extra={"sync": {"rules_file": str(pinned), "rules_pinned": True}},
    ) as c:
        c.start("a")
        c.wait_leader()
        wait_for(lambda: versions(c) == {"a": 1}, 20, "a on v1 seeded from its pinned file")
        pinned.write_text("# v2 from configuration management\n")
        c.nodes["a"].signal(signal.SIGHUP)
        wait_for(lambda: versions(c) == {"a": 2}, 20, "a on v2, published from its pinned file")
        steps = [(e.step, e.version, e.note) for e in rules_zk.history(c.ctl)]
        assert steps == [("seed", 1, f"seeded from {pinned}"), ("file", 2, f"pinned file {pinned}")]
        assert rules_zk.read(c.ctl).current.text == "# v2 from configuration management\n"  # type: ignore[union-attr]

        # A node whose (unpinned) file differs runs the cluster's version and says so on SIGHUP.
        b = c.add("b")
        cfg = b.config.read_text().replace(str(pinned), str(local)).replace("rules_pinned = true", "")
        b.config.write_text(cfg)
        b.start()
        wait_for(lambda: versions(c) == {"a": 2, "b": 2}, 30, "b on the cluster's v2, not its own file")
        b.signal(signal.SIGHUP)
        wait_for(
            lambda: any(e.get("event") == "rules.file_differs" for e in b.events()),
            20,
            "b to report its file",
        )
        assert versions(c) == {"a": 2, "b": 2}
