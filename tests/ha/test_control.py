"""The operator commands (`idsync status|switchover|failover|pause|resume`) against live HA loops."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import orjson
import pytest

from idsync.cli import main
from idsync.ha import upkeep
from idsync.ha.loop import HaLoop
from tests.ha.test_election import healthy, make_node  # noqa: F401  (fixture)


class Driver:
    """Runs each node's HA cycle in a background thread, as the daemon would."""

    def __init__(self, nodes: list[HaLoop]) -> None:
        self.nodes = nodes
        self.health = {n.node: healthy() for n in nodes}
        self.sentences: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for n in self.nodes:
                h = self.health[n.node]
                self.health[n.node] = type(h)(**{**h.__dict__, "last_cycle_ok": time.time()})
                d = n.run_cycle(self.health[n.node])
                self.sentences.append(f"{n.node}: {d.sentence}")
                # As runtime/node.py does: the pause ack and request upkeep follow the decision.
                upkeep.after_cycle(n, export=d.export, seen_epoch=0)
            self._stop.wait(0.05)

    def __enter__(self) -> Driver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def cluster_args(zk_hosts: str, zk_chroot: str) -> list[str]:
    return ["--zookeeper", zk_hosts + zk_chroot, "--cluster", "test"]


@pytest.fixture
def pair(make_node: Callable[..., HaLoop]) -> Iterator[Driver]:  # noqa: F811
    a, b = make_node("a"), make_node("b")
    a.run_cycle(healthy())  # a leads first
    with Driver([a, b]) as d:
        yield d


def test_status_shows_leader_and_members(
    pair: Driver, cluster_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    time.sleep(0.2)  # let both nodes publish a member record at least once
    assert main(["status", *cluster_args]) == 0
    out = capsys.readouterr().out
    assert "cluster test  epoch 1  leader a" in out
    assert "\na                leader   ok" in out
    assert "\nb                staging  ok" in out
    assert main(["status", *cluster_args, "--json"]) == 0
    data = orjson.loads(capsys.readouterr().out)
    assert data["leader"]["node"] == "a" and set(data["members"]) == {"a", "b"}


def test_switchover_to_named_node_reports_time(
    pair: Driver, cluster_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    time.sleep(0.2)
    assert main(["switchover", *cluster_args, "--to", "b", "--wait", "10"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("switchover: a -> b at epoch 2 in ")
    assert any(s == "a: released leadership at epoch 1: switchover to b" for s in pair.sentences)


def test_control_errors_are_clear(
    pair: Driver, cluster_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    time.sleep(0.2)
    assert main(["switchover", *cluster_args, "--to", "zz"]) == 1
    assert "unknown node 'zz': it is not a running member (members: a, b)" in capsys.readouterr().err
    assert main(["switchover", *cluster_args, "--to", "a"]) == 1
    assert "a is already the leader" in capsys.readouterr().err
    assert main(["failover", *cluster_args, "--to", "b"]) == 1
    assert "leader a is healthy: use `idsync switchover --to b`" in capsys.readouterr().err


def test_pause_and_resume(pair: Driver, cluster_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pause", *cluster_args, "--reason", "maintenance"]) == 0
    deadline = time.monotonic() + 5
    while not any(
        s == "a: leader at epoch 1: paused by" in s or "paused by" in s for s in pair.sentences[-4:]
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert main(["status", *cluster_args]) == 0
    assert "PAUSED by" in capsys.readouterr().out
    assert main(["resume", *cluster_args]) == 0
    assert "exports resumed" in capsys.readouterr().out
    assert main(["resume", *cluster_args]) == 0
    assert "was not paused" in capsys.readouterr().out


def test_unreachable_zookeeper(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--zookeeper", "127.0.0.1:1", "--cluster", "x", "--timeout", "1"]) == 1
    assert "cannot reach ZooKeeper at 127.0.0.1:1 within 1s" in capsys.readouterr().err


def test_a_request_is_not_voided_by_a_view_read_while_its_target_registered(
    make_node: Callable[..., HaLoop],  # noqa: F811
) -> None:
    """The leader's view is read znode by znode: one that listed the members just before the
    target registered, and read the request just after the CLI placed it, lacks the target. The
    leader must look again before clearing the request (CI saw `idsync switchover --to b` fail
    with "the switchover request was dropped" once)."""
    from dataclasses import replace

    from idsync.ha import requests
    from idsync.ha.records import SwitchoverRequest, encode

    a, b = make_node("a"), make_node("b")
    a.run_cycle(healthy())
    b.run_cycle(healthy())  # b is a member now
    assert a.leader is not None
    coord = a.coord
    req = SwitchoverRequest(to="b", by="test", at=time.time(), leader="a", epoch=a.leader.epoch)
    coord.client.create(coord.paths.switchover, encode(req))
    view = coord.read()
    assert "b" in view.members and view.switchover == req
    torn = replace(view, members={n: m for n, m in view.members.items() if n != "b"})
    assert requests.tidy(coord, torn, a.leader, holding=False) == ""
    assert coord.read().switchover == req  # still there: b is a member
    b.coord.stop()  # b leaves for real: its member znode goes with its session
    gone = coord.read()
    assert "b" not in gone.members
    assert requests.tidy(coord, gone, a.leader, holding=False) == (
        "cleared a switchover request to b, which is no longer a member"
    )
    assert coord.read().switchover is None
