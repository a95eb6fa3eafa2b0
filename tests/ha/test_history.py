"""The leadership history (`idsync history`) written by real elections on a real ZooKeeper."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson
import pytest

from idsync.cli import main
from idsync.ha import history
from idsync.ha.loop import HaLoop
from idsync.ha.records import FailoverRequest, SwitchoverRequest
from tests.ha.test_election import healthy, make_node  # noqa: F401  (fixture)


def entries(node: HaLoop) -> list[history.HistoryEntry]:
    coord = node.coord
    return history.read(coord.client, coord.paths.base, 2.0)  # type: ignore[attr-defined]


def test_every_change_of_leadership_is_recorded_with_its_reason(
    make_node: Callable[..., HaLoop],  # noqa: F811
    zk_hosts: str,
    zk_chroot: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b, c = make_node("a"), make_node("b"), make_node("c")
    assert a.run_cycle(healthy()).promoted  # epoch 1: first leader
    b.run_cycle(healthy())
    c.run_cycle(healthy())
    # epoch 2: an operator's switchover to b
    a.coord.request_switchover(SwitchoverRequest(to="b", by="alice@ops", at=time.time(), leader="a", epoch=1))
    a.run_cycle(healthy())
    assert b.run_cycle(healthy()).promoted
    # epoch 3: b stops (SIGTERM releases leadership), a takes over
    b.release("shutdown")
    assert a.run_cycle(healthy()).promoted
    # epoch 4: a's process dies (its session closes without a release), c takes over
    a.coord.stop()
    assert c.run_cycle(healthy()).promoted
    # epoch 5: c releases for another reason, b is forced by failover although unhealthy
    c.release("test")
    b.coord.request_failover(FailoverRequest(to="b", by="bob@ops", at=time.time()))
    assert b.run_cycle(healthy(rules="other")).promoted

    got = [(e.epoch, e.old, e.node, e.kind, e.reason, e.by) for e in entries(b)]
    assert got == [
        (1, "", "a", "first", "first leader of the cluster", ""),
        (2, "a", "b", "switchover", "switchover by alice@ops", "alice@ops"),
        (3, "b", "a", "released", "released on stop", ""),
        (4, "a", "c", "lost", "leader a lost (no release recorded)", ""),
        (5, "c", "b", "failover", "failover to b by bob@ops", "bob@ops"),
    ]
    assert all(e.at > 0 for e in entries(b))

    args = ["--zookeeper", zk_hosts + zk_chroot, "--cluster", "test"]
    assert main(["history", *args]) == 0
    out = capsys.readouterr().out.splitlines()
    out = out[out.index("cluster test") :]  # after the log lines captured from the session
    assert out[1].split() == ["EPOCH", "TIME", "OLD", "NEW", "REASON"]
    assert out[3].split()[0] == "2" and out[3].endswith(
        "a                b                switchover by alice@ops"
    )
    assert out[2].split()[4] == "-"  # the first leader had no predecessor
    assert main(["history", "--json", "--limit", "2", *args]) == 0
    raw = capsys.readouterr().out
    doc = orjson.loads(raw[raw.index("{") :])
    assert [(e["epoch"], e["node"], e["kind"]) for e in doc["history"]] == [
        (4, "c", "lost"),
        (5, "b", "failover"),
    ]
    assert doc["history"][0]["time"].endswith("UTC")


def test_a_lost_election_writes_no_entry(make_node: Callable[..., HaLoop]) -> None:  # noqa: F811
    a, b = make_node("a"), make_node("b")
    view = b.coord.read()
    assert a.run_cycle(healthy()).promoted
    # b's election on a stale view fails as a whole: neither leader, nor epoch, nor history entry.
    assert b.coord.try_acquire(view, "r1") is None
    assert [(e.epoch, e.node) for e in entries(a)] == [(1, "a")]


def test_a_cluster_without_history_gets_one_at_the_next_election(
    make_node: Callable[..., HaLoop],  # noqa: F811
) -> None:
    a = make_node("a")
    # As after an upgrade from a version without history, or a ZooKeeper that lost its data.
    where = history.path(a.coord.paths.base)  # type: ignore[attr-defined]
    assert a.coord.client.exists(where) is None  # type: ignore[attr-defined]
    assert a.run_cycle(healthy()).promoted
    assert [(e.epoch, e.kind) for e in entries(a)] == [(1, "first")]


def test_history_of_an_empty_cluster(
    make_node: Callable[..., HaLoop],  # noqa: F811
    zk_hosts: str,
    zk_chroot: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_node("a")  # creates the cluster's structure, never leads
    assert main(["history", "--zookeeper", zk_hosts + zk_chroot, "--cluster", "test"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "(no leadership changes recorded)"


def test_with_credentials_the_history_carries_the_clusters_acl(zk_hosts: str, zk_chroot: str) -> None:
    from kazoo.client import KazooClient
    from kazoo.exceptions import NoAuthError

    from idsync.ha.loop import Timing
    from idsync.ha.zk import Coordinator, ZkSettings

    settings = ZkSettings(zk_hosts + zk_chroot, session_timeout=2.0, retry_timeout=0.5, auth=("idsync", "pw"))
    coord = Coordinator(settings, "test", "a")
    coord.start(timeout=5)
    try:
        node = HaLoop(coord, Timing(session_timeout=2.0, loop_interval=0.5, request_timeout=0.2))
        assert node.run_cycle(healthy()).promoted
        [entry] = history.read(coord.client, coord.paths.base, 2.0)
        assert entry.node == "a"
        where = history.path(coord.paths.base)
        [name] = coord.client.get_children(where)
        # Someone without the cluster's credentials can neither forge nor rewrite an entry.
        outsider = KazooClient(hosts=zk_hosts + zk_chroot)
        outsider.start(timeout=5)
        try:
            for attempt in (
                lambda: outsider.create(f"{where}/{history.PREFIX}", b"{}", sequence=True),
                lambda: outsider.set(f"{where}/{name}", b"{}"),
            ):
                with pytest.raises(NoAuthError):
                    attempt()
        finally:
            outsider.stop()
            outsider.close()
    finally:
        coord.client.delete("/idsync", recursive=True)  # the chroot fixture has no credentials
        coord.stop()


def test_the_promoting_node_keeps_the_newest_entries_only(
    make_node: Callable[..., HaLoop],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(history, "KEEP", 3)
    a = make_node("a")
    client, base = a.coord.client, a.coord.paths.base  # type: ignore[attr-defined]
    history.ensure(client, base, 2.0)
    for n in range(5):  # a long past
        old = history.HistoryEntry(0, f"old{n}", kind=history.LOST, reason="long ago")
        client.create(f"{history.path(base)}/{history.PREFIX}", orjson.dumps(old.__dict__), sequence=True)
    assert a.run_cycle(healthy()).promoted
    assert [e.node for e in entries(a)] == ["old3", "old4", "a"]
