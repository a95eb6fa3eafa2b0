"""The HA protocol as operators meet it, on real `idsync run` processes, real ZooKeeper,
PostgreSQL and Samba AD, with the Graph emulator as the target: switchover requests and their
fallback, pause with the leader's acknowledgement, ZooKeeper ACLs and data loss, one process per
identity, duplicate groups.
"""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kazoo.client import KazooClient

from idsync.cli import main
from idsync.ha import acl, requests
from idsync.ha.records import ClusterView, SwitchoverRequest, decode, encode
from idsync.ha.requests import RequestRejected, RequestTracker
from idsync.ha.zk import Coordinator, ZkSettings
from tests.cluster.checks import duplicate_objects, fencing_violations, write_epochs
from tests.cluster.cluster import LocalCluster
from tests.cluster.directory import AdDirectory
from tests.cluster.instance import GROUP_ANCHOR, wait_for
from tests.conftest import ClusterFactory
from tests.ha.test_election import make_node  # noqa: F401
from tests.ha.test_processes import SESSION, add_users, check_invariants, cluster  # noqa: F401


def three_healthy(c: LocalCluster) -> None:
    wait_for(
        lambda: len(c.view().members) == 3 and all(m.healthy for m in c.view().members.values()),
        30,
        "three healthy members",
    )


def control_session(c: LocalCluster, name: str, auth: tuple[str, str] | None = None) -> Coordinator:
    coord = Coordinator(
        ZkSettings(hosts=c.spec.zk_hosts, session_timeout=10, retry_timeout=2, auth=auth),
        c.spec.cluster,
        name,
    )
    acl.connect_control(coord, timeout=10)
    return coord


# -- switchover ---------------------------------------------------------------------------------


def test_switchover_to_a_node_that_dies_midway_gets_the_cluster_a_leader_again(
    cluster: LocalCluster,  # noqa: F811
    ad: AdDirectory,
    samba_ou: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    add_users(ad, samba_ou, 3)
    cluster.start("a")
    assert cluster.wait_leader() == "a"
    cluster.start("b", "c")
    check_invariants(cluster, ad, samba_ou)
    three_healthy(cluster)
    c = cluster.nodes["c"]
    c.pause()  # frozen: it cannot take over, yet ZooKeeper shows it alive until its session expires
    rc: dict[str, int] = {}
    cli = threading.Thread(
        target=lambda: rc.update(
            rc=main(["switchover", *cluster.ctl_args(), "--to", "c", "--wait", str(SESSION * 15)])
        )
    )
    cli.start()
    wait_for(
        lambda: any(
            "released leadership at epoch 1: switchover to c" in s for s in cluster.nodes["a"].sentences()
        ),
        20,
        "a to hand over to c",
    )
    c.kill()  # the target dies in the middle of the hand-over
    new = cluster.wait_leader(timeout=SESSION * 10)
    assert new in ("a", "b")
    cli.join(timeout=SESSION * 20)
    assert rc["rc"] == 1
    err = capsys.readouterr().err
    assert f"c did not take over: {new} leads at epoch 2 instead" in err
    add_users(ad, samba_ou, 2)
    check_invariants(cluster, ad, samba_ou)


def test_concurrent_switchovers_one_wins_the_other_gets_a_clear_error_and_old_requests_are_cleared(
    cluster: LocalCluster,  # noqa: F811
    ad: AdDirectory,
    samba_ou: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    add_users(ad, samba_ou, 2)
    cluster.start("a")
    assert cluster.wait_leader() == "a"
    cluster.start("b", "c")
    three_healthy(cluster)

    # Two operators read the same cluster, then both ask at the same moment.
    outcome: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def ask(who: str, to: str) -> None:
        coord = control_session(cluster, who)
        try:
            view = coord.read()
            assert view.leader is not None
            req = SwitchoverRequest(
                to=to, by=who, at=time.time(), leader=view.leader.node, epoch=view.leader.epoch
            )
            barrier.wait()
            requests.submit_switchover(coord, req, view)
            outcome[who] = "ok"
        except RequestRejected as exc:
            outcome[who] = str(exc)
        finally:
            coord.stop()

    threads = [
        threading.Thread(target=ask, args=("ops1", "b")),
        threading.Thread(target=ask, args=("ops2", "c")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(outcome.values()).count("ok") == 1, outcome
    winner = next(w for w, o in outcome.items() if o == "ok")
    loser = next(w for w, o in outcome.items() if o != "ok")
    assert outcome[loser].startswith("another switchover is in progress: to ")
    assert f"requested by {winner} for leader a at epoch 1" in outcome[loser]
    target = {"ops1": "b", "ops2": "c"}[winner]
    assert cluster.wait_leader(timeout=20, other_than="a") == target

    # The CLI refuses the same way while a request is pending (placed by hand, for a live target).
    ctl = control_session(cluster, "ops3")
    try:
        view = ctl.read()
        assert view.leader is not None and view.leader.node == target
        # A request aimed at the old leader a: the new leader ignores it and clears it.
        stale = SwitchoverRequest(to="a", by="ops-late", at=time.time(), leader="a", epoch=1)
        ctl.client.create(ctl.paths.switchover, encode(stale))
        wait_for(lambda: ctl.read().switchover is None, 20, "the stale request to be cleared")
        assert ctl.read().leader.node == target  # type: ignore[union-attr]
        wait_for(
            lambda: any(
                "cleared a switchover request meant for a at epoch 1" in s
                for s in cluster.nodes[target].sentences()
            ),
            10,
            "the leader to say it cleared the request",
        )
    finally:
        ctl.stop()
    capsys.readouterr()
    assert main(["switchover", *cluster.ctl_args(), "--to", "a", "--wait", "20"]) == 0
    assert f"switchover: {target} -> a at epoch 3" in capsys.readouterr().out


# -- pause ------------------------------------------------------------------------------------


def test_no_write_starts_after_pause_returns(
    cluster: LocalCluster,  # noqa: F811
    ad: AdDirectory,
    samba_ou: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    add_users(ad, samba_ou, 3)
    cluster.start("a")
    assert cluster.wait_leader() == "a"
    cluster.start("b")
    check_invariants(cluster, ad, samba_ou)
    before = cluster.emulator.get("/_emulator/requests?writes=1")["seq"]
    add_users(ad, samba_ou, 40)  # a burst the leader exports over several batches
    wait_for(lambda: cluster.emulator.writes(since=before), 30, "the leader to start writing the burst")
    assert main(["pause", *cluster.ctl_args(), "--wait", "20"]) == 0
    returned = cluster.emulator.get("/_emulator/requests?writes=1")["seq"]
    assert "exports paused (acknowledged by leader a at epoch 1" in capsys.readouterr().out
    time.sleep(SESSION * 1.5)  # several cycles of both nodes
    late = [w for w in cluster.emulator.writes(since=returned) if write_epochs([w])]
    assert late == [], f"writes after `idsync pause` returned: {late[:3]}"
    assert any("acknowledged the pause at epoch 1" in s for s in cluster.nodes["a"].sentences())
    assert main(["resume", *cluster.ctl_args()]) == 0
    check_invariants(cluster, ad, samba_ou)


# -- ZooKeeper ACLs ---------------------------------------------------------------------------


@pytest.fixture
def authed_cluster(
    tmp_path: Path, local_cluster: ClusterFactory, zk_hosts: str, zk_chroot: str
) -> Iterator[LocalCluster]:
    (tmp_path / "zk-auth").write_text("idsync:right-secret")
    with local_cluster(
        session_timeout=SESSION, extra={"ha.zookeeper": {"auth_file": str(tmp_path / "zk-auth")}}
    ) as c:
        yield c
    # The znodes carry the digest ACL: only the cluster's credentials may remove them.
    zk = KazooClient(hosts=zk_hosts + zk_chroot, auth_data=[("digest", "idsync:right-secret")])
    zk.start(timeout=10)
    try:
        zk.delete("/idsync", recursive=True)
    finally:
        zk.stop()
        zk.close()


def test_wrong_zookeeper_credentials_are_a_clear_fatal_error(
    authed_cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = authed_cluster
    a = c.add("a")
    a.start()
    wait_for(lambda: any(s.startswith("promoted: epoch 1") for s in a.sentences()), 30, "a to lead")

    # Everything a created carries the cluster's digest ACL, nothing is world-open.
    zk = KazooClient(hosts=c.spec.zk_hosts, auth_data=[("digest", "idsync:right-secret")])
    zk.start(timeout=10)
    try:
        for path in ("/idsync/t", "/idsync/t/members", "/idsync/t/epoch", "/idsync/t/leader"):
            acls, _ = zk.get_acls(path)
            assert [(x.id.scheme, x.id.id.split(":")[0]) for x in acls] == [("digest", "idsync")], path
    finally:
        zk.stop()
        zk.close()

    (tmp_path / "wrong-auth").write_text("idsync:wrong-secret")
    b = c.add("b")
    b.config.write_text(b.config.read_text().replace(str(tmp_path / "zk-auth"), str(tmp_path / "wrong-auth")))
    b.start()
    rc = b.wait(30)
    assert rc != 0
    log = b.log_path.read_text()
    assert "ZooKeeper denied read of /idsync/t to digest user 'idsync'" in log
    assert "wrong-secret" not in log
    assert a.alive and any(s.startswith("leader at epoch 1: exporting") for s in a.sentences()[-3:])

    # The CLI without the credentials is refused just as clearly, and creates nothing.
    assert main(["status", *c.ctl_args()]) == 1
    assert "ZooKeeper denied read of /idsync/t to an unauthenticated session" in capsys.readouterr().err
    assert main(["pause", *c.ctl_args(), "--zookeeper-auth-file", str(tmp_path / "wrong-auth")]) == 1
    assert "to digest user 'idsync'" in capsys.readouterr().err
    assert main(["status", *c.ctl_args(), "--zookeeper-auth-file", str(tmp_path / "zk-auth")]) == 0
    out = capsys.readouterr().out
    assert "leader a" in out and "PAUSED" not in out


def test_the_cli_never_creates_a_cluster(
    zk_hosts: str, zk_chroot: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pause", "--zookeeper", zk_hosts + zk_chroot, "--cluster", "nowhere"]) == 1
    assert "no idsync cluster at /idsync/nowhere" in capsys.readouterr().err
    zk = KazooClient(hosts=zk_hosts + zk_chroot)
    zk.start(timeout=10)
    try:
        assert zk.exists("/idsync/nowhere") is None
    finally:
        zk.stop()
        zk.close()


# -- one process per identity ------------------------------------------------------------------


def test_a_second_process_with_the_same_node_name_or_schema_is_refused(
    cluster: LocalCluster,  # noqa: F811
    ad: AdDirectory,
    samba_ou: str,
) -> None:
    add_users(ad, samba_ou, 2)
    cluster.start("a")
    assert cluster.wait_leader() == "a"
    first = cluster.nodes["a"]
    wait_for(lambda: "exporting" in first.last_sentence(), 30, "a exporting")

    # Same node name, same schema, another admin port: what an operator would try.
    from tests.harness.ports import free_port

    twin_dir = cluster.workdir / "a-twin"
    twin_dir.mkdir()
    twin_cfg = twin_dir / "a.toml"
    text = first.config.read_text().replace(f"127.0.0.1:{first.admin_port}", f"127.0.0.1:{free_port()}")
    twin_cfg.write_text(text)
    from tests.cluster.instance import Instance

    twin = Instance("a", twin_cfg, 0, twin_dir)
    twin.start()
    assert twin.wait(30) != 0
    log = twin.log_path.read_text()
    schema = cluster.schemas[0]
    assert f"node 'a': store schema '{schema}' is in use by another idsync process (idsync node=a" in log
    assert f"pid={first.pid}" in log
    assert not any(e.get("event") == "cycle" for e in twin.events())

    # Same node name, its own schema: ZooKeeper's member znode names the live holder.
    other_schema = f"t_a2_{uuid.uuid4().hex[:8]}"
    cluster.schemas.append(other_schema)
    twin_cfg.write_text(text.replace(schema, other_schema))
    twin.start()
    assert twin.wait(30) != 0
    log = twin.log_path.read_text()
    assert "node 'a' is already running in cluster /idsync/t (pid " in log
    assert not any(e.get("event") == "cycle" for e in twin.events())
    assert first.alive and cluster.leader() == "a"

    # A crashed predecessor does not block a restart: its lock and session go with it.
    first.kill()
    first.start()
    wait_for(lambda: any(e.get("event") == "cycle" for e in first.events()[-50:]), 30, "a to run again")


# -- ZooKeeper data loss ----------------------------------------------------------------------


def test_after_zookeeper_lost_its_data_exports_resume_above_the_old_epoch(
    cluster: LocalCluster,  # noqa: F811
    ad: AdDirectory,
    samba_ou: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    add_users(ad, samba_ou, 2)
    cluster.start("a")
    assert cluster.wait_leader() == "a"
    cluster.start("b")
    check_invariants(cluster, ad, samba_ou)
    wait_for(lambda: cluster.view().members.get("b") and cluster.view().members["b"].healthy, 30, "b healthy")
    assert main(["switchover", *cluster.ctl_args(), "--to", "b", "--wait", "20"]) == 0
    assert "at epoch 2" in capsys.readouterr().out
    add_users(ad, samba_ou, 2)
    check_invariants(cluster, ad, samba_ou)  # epoch 2 has written

    # What a wiped data directory leaves. Not atomic here: the nodes re-create their member
    # znodes while the tree is deleted, so delete until it is gone.
    from kazoo.exceptions import NotEmptyError

    wait_for(lambda: _delete_tree(cluster.ctl.client, "/idsync/t", NotEmptyError), 10, "the wipe")

    def leader_epoch() -> int:
        v: ClusterView = cluster.view()
        return v.leader.epoch if v.leader else 0

    wait_for(lambda: leader_epoch() >= 3, SESSION * 15, "a leader above epoch 2")
    add_users(ad, samba_ou, 3)
    check_invariants(cluster, ad, samba_ou)  # exports resumed, and no write below a newer epoch
    newest = max(e for _, _, e in write_epochs(cluster.emulator.writes()))
    assert newest >= 3
    restored = [
        s
        for n in cluster.nodes.values()
        for s in n.sentences()
        if "ZooKeeper had lost the cluster's epoch" in s
    ]
    assert restored and "restored it at 2" in restored[0]


def _delete_tree(client: KazooClient, path: str, retry_on: type[Exception]) -> bool:
    try:
        client.delete(path, recursive=True)
        return True
    except retry_on:
        return False


# -- duplicate groups -------------------------------------------------------------------------


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(orjson.loads(resp.read()))


def test_a_duplicate_group_created_behind_idsyncs_back_is_resolved_oldest_kept(
    cluster: LocalCluster,  # noqa: F811
    ad: AdDirectory,
    samba_ou: str,
) -> None:
    users = [ad.add_user(samba_ou, f"u{uuid.uuid4().hex[:8]}", department="Sales") for _ in range(2)]
    ad.add_group(samba_ou, f"g{uuid.uuid4().hex[:8]}", [u.dn for u in users])
    cluster.start("a")
    assert cluster.wait_leader() == "a"
    wait_for(lambda: any(g.get(GROUP_ANCHOR) for g in cluster.state()["groups"]), 30, "the group exported")
    original = next(g for g in cluster.state()["groups"] if g.get(GROUP_ANCHOR))
    anchor = original[GROUP_ANCHOR]

    # Someone (a lost create, a script) makes a second group with the same anchor.
    time.sleep(1.1)  # a later createdDateTime (second resolution)
    dup = _post(
        f"{cluster.emulator.url}/v1.0/groups",
        {
            "displayName": original["displayName"],
            "mailEnabled": False,
            "mailNickname": f"dup{uuid.uuid4().hex[:6]}",
            "securityEnabled": True,
            GROUP_ANCHOR: anchor,
        },
    )
    assert duplicate_objects(cluster.state(), GROUP_ANCHOR) == [f"group anchor {anchor} x2"]

    wait_for(
        lambda: duplicate_objects(cluster.state(), GROUP_ANCHOR) == [], 30, "the duplicate to be removed"
    )
    ids = [g["id"] for g in cluster.state()["groups"] if g.get(GROUP_ANCHOR) == anchor]
    assert ids == [original["id"]]  # the oldest stays, the newer one is gone
    deletes = [w for w in cluster.emulator.writes() if w["method"] == "DELETE" and dup["id"] in w["path"]]
    assert deletes and all(write_epochs([w]) for w in deletes)  # deleted by idsync, under its epoch
    assert fencing_violations(cluster.emulator.writes()) == []
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{cluster.nodes['a'].admin_port}/metrics", timeout=10)
    assert 'idsync_duplicate_objects_removed_total{type="group"} 1.0' in metrics.read().decode()
    wait_for(
        lambda: any("duplicate groups: 1 anchors, removed 1" in s for s in cluster.nodes["a"].sentences()),
        10,
        "the leader's sentence about the duplicate",
    )


# -- the request tracker: no wall clocks --------------------------------------------------------


def test_a_hand_over_promise_lapses_by_the_observers_clock_or_the_targets_session() -> None:
    from idsync.ha.records import EpochRecord, LeaderRecord, MemberRecord

    now = [100.0]
    tracker = RequestTracker(1.0, clock=lambda: now[0])
    req = SwitchoverRequest(to="c", by="ops", at=0.0, leader="a", epoch=4)  # `at` is never compared
    members = {n: MemberRecord(node=n, role="staging") for n in ("a", "b", "c")}

    def view(leader: LeaderRecord | None, names: tuple[str, ...] = ("a", "b", "c")) -> ClusterView:
        return ClusterView(
            leader=leader,
            epoch=EpochRecord(epoch=4),
            epoch_version=3,
            members={n: members[n] for n in names},
            switchover=req,
            failover=None,
            pause=None,
            release=None,
        )

    a4 = LeaderRecord(node="a", epoch=4, session=1)
    assert tracker.for_leader(view(a4), a4) == req
    assert tracker.for_leader(view(a4), LeaderRecord(node="b", epoch=5, session=2)) is None  # not for b
    assert tracker.for_leader(view(a4, ("a", "b")), a4) is None  # the target is gone
    assert tracker.live_switchover(view(None)) == req  # leaderless: the promise starts now
    now[0] += 0.9
    assert tracker.live_switchover(view(None)) == req
    now[0] += 0.2
    assert tracker.live_switchover(view(None)) is None  # the target had its time
    assert RequestTracker(60.0).live_switchover(view(None, ("a", "b"))) is None  # its session ended
    assert decode(SwitchoverRequest, encode(req)) == req


# -- lock-delay after a leader znode deleted by hand ------------------------------------------------


def test_deleting_the_leader_znode_by_hand_does_not_skip_the_lock_delay(make_node: Any) -> None:  # noqa: F811
    from tests.ha.test_election import healthy

    a, b = make_node("a", lock_delay=5.0), make_node("b", lock_delay=5.0)
    assert a.run_cycle(healthy()).sentence.startswith("promoted: epoch 1, first leader")
    assert b.run_cycle(healthy()).sentence == "staging: leader is a (epoch 1)"
    b.coord.client.delete(b.coord.paths.leader)  # an operator "helping" a hand-over
    d = b.run_cycle(healthy())
    assert d.sentence.startswith("promoted: epoch 2, previous leader a was lost"), d.sentence
    assert "5s lock-delay" in d.sentence
    assert b.run_cycle(healthy()).sentence.startswith("leader at epoch 2: waiting")
    assert a.run_cycle(healthy()).sentence.startswith("demoted: leadership lost")


# -- units: the store's epoch, the pause gate, the identity lock ----------------------------------


def test_a_store_that_saw_a_higher_epoch_refuses_claims_at_a_lower_one(pg_dsn: str, pg_schema: str) -> None:
    from idsync.fencing import Fenced
    from idsync.store import fence, migrate
    from idsync.store.db import Store

    with Store(pg_dsn, pg_schema) as st:
        migrate.migrate(st)
        with st.transaction() as conn:
            fence.renew(conn, 3, "a", 600)
            fence.check(conn, 3)
            fence.observe_epoch(conn, 5)  # another node leads at 5 (seen in ZooKeeper)
            assert fence.highest_epoch(conn) == 5
            with pytest.raises(Fenced, match="the store records epoch 5"):
                fence.check(conn, 3)
            fence.renew(conn, 4, "a", 600)  # a promotion below what the store saw changes nothing
            with pytest.raises(Fenced, match="the store records epoch 5"):
                fence.check(conn, 4)
            fence.observe_epoch(conn, 2)  # never lowers
            assert fence.highest_epoch(conn) == 5
            fence.renew(conn, 6, "a", 600)
            fence.check(conn, 6)


def test_the_pause_gate_stops_a_running_export_slice_between_requests() -> None:
    from idsync.fencing import Fenced, Unfenced
    from idsync.ha.requests import PauseGate

    gate = PauseGate()
    fence = gate.wrap(Unfenced("a", 4))
    fence.ensure()
    assert fence.write_deadline() == float("inf")
    gate._changed(encode(requests.PauseRecord(by="ops@h")), object())  # the watch fires
    for check in (fence.ensure, fence.write_deadline, fence.confirm_now):
        with pytest.raises(Fenced, match="paused by ops@h"):
            check()
    gate._changed(None, None)  # resumed: the znode is gone
    fence.ensure()
    # Each cycle re-syncs the gate from its view (a watch kazoo dropped must not leave it wrong),
    # but a view read before the latest watch event does not undo it.
    gate.sync(requests.PauseRecord(by="ops@h"), read_at=float("-inf"))
    fence.ensure()
    gate.sync(requests.PauseRecord(by="ops@h"), read_at=time.monotonic())
    with pytest.raises(Fenced, match="paused by ops@h"):
        fence.ensure()


def test_the_schema_lock_names_its_holder_and_goes_with_its_connection(pg_dsn: str, pg_schema: str) -> None:
    from idsync.store.identity import IdentityLock, SchemaInUse

    first = IdentityLock(pg_dsn, pg_schema, "a").acquire()
    with pytest.raises(SchemaInUse) as err:
        IdentityLock(pg_dsn, pg_schema, "a").acquire()
    assert f"store schema '{pg_schema}' is in use by another idsync process (idsync node=a host=" in str(
        err.value
    )
    IdentityLock(pg_dsn, "another_schema", "a").acquire().release()  # other schemas are free
    assert first.conn is not None
    first.conn.close()  # the connection dies (PostgreSQL restart, network): the lock with it
    second = IdentityLock(pg_dsn, pg_schema, "b").acquire()
    with pytest.raises(SchemaInUse, match="idsync node=b"):
        first.check()  # re-taking it finds the new holder
    second.release()
    first.check()  # free again: taken back
    first.release()
