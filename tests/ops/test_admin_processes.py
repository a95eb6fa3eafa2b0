"""The admin API of real `idsync run` processes (ZooKeeper, PostgreSQL, Samba AD, the emulator):
which node answers 200 on which endpoint, before and after a switchover, and their metrics.

Runs once `idsync run` starts the admin server (idsync.commands.run uses AdminServer); until
then it is skipped with that reason, so it switches itself on with the wiring.
"""

from __future__ import annotations

import inspect
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

import idsync.commands.run
from idsync.cli import main
from tests.cluster.cluster import LocalCluster
from tests.cluster.directory import AdDirectory
from tests.cluster.instance import wait_for
from tests.ha.test_processes import add_users, cluster  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(
    "AdminServer" not in inspect.getsource(idsync.commands.run),
    reason="`idsync run` does not start the admin server yet (idsync.runtime.admin.AdminServer)",
)


def get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            status, raw, ctype = resp.status, resp.read(), resp.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        status, raw, ctype = exc.code, exc.read(), exc.headers.get_content_type()
    return status, orjson.loads(raw) if ctype == "application/json" else raw.decode()


def status(port: int, path: str) -> int | None:
    try:
        return get(port, path)[0]
    except OSError:
        return None  # not listening (yet)


def gauges(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    _, text = get(port, "/metrics")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_endpoints_and_metrics_of_a_running_pair_through_a_switchover(
    cluster: LocalCluster,  # noqa: F811
    ad: AdDirectory,
    samba_ou: str,
) -> None:
    add_users(ad, samba_ou, 3)
    cluster.start("a")
    assert cluster.wait_leader() == "a"
    cluster.start("b")
    a, b = cluster.nodes["a"].admin_port, cluster.nodes["b"].admin_port
    wait_for(lambda: status(b, "/staging") == 200, 60, "b to answer 200 on /staging")
    assert [status(a, p) for p in ("/health", "/leader", "/staging", "/readiness", "/liveness")] == [
        200,
        200,
        503,
        200,
        200,
    ]
    code, body = get(b, "/leader")
    assert code == 503 and body["role"] == "staging" and body["leader"] == "a"
    assert body["reasons"] == ["not the leader (role staging, leader is a)"]
    ga, gb = gauges(a), gauges(b)
    assert ga[("idsync_leader", ())] == 1 and gb[("idsync_leader", ())] == 0
    assert (
        ga[("idsync_role", (("role", "leader"),))] == 1 and gb[("idsync_role", (("role", "staging"),))] == 1
    )
    assert gb[("idsync_healthy", ())] == 1 and gb[("idsync_epoch", ())] == ga[("idsync_epoch", ())]
    epoch = int(ga[("idsync_epoch", ())])

    assert main(["switchover", "--to", "b", *cluster.ctl_args()]) == 0
    wait_for(lambda: status(b, "/leader") == 200, 30, "b to answer 200 on /leader")
    wait_for(lambda: status(a, "/staging") == 200, 30, "a to answer 200 on /staging")
    assert status(a, "/leader") == 503
    # /leader reads the lease live; the gauges follow at the end of the promoting cycle.
    wait_for(lambda: gauges(b)[("idsync_epoch", ())] == epoch + 1, 30, "b's epoch gauge")
    gb = gauges(b)
    assert gb[("idsync_promotions_total", ())] == 1
    code, body = get(b, "/pending")
    assert code == 200 and body["node"] == "b" and body["role"] == "leader"
