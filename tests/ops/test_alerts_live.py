"""The alert rules on real Prometheus and Alertmanager against real `idsync run` processes.

Debian's prometheus scrapes both nodes every second with a test copy of deploy/prometheus/alerts.yml
(same expressions, every `for:` shortened to 2 s) and sends alerts to Debian's Alertmanager,
configured like deploy/alertmanager/alertmanager.yml with a webhook receiver in this test. Each
condition is made to happen for real, and each alert must fire in Prometheus's API, reach the
webhook, and resolve (in both) when the condition ends:

- quarantined objects: a user whose UPN suffix the tenant has not verified (rules: quarantine);
- staging drift: the standby's configuration has a wider scope (the rules are the cluster's, one
  version for every node), so it would export a user the leader has nothing pending for;
- paused too long: `idsync pause`;
- no leader and node down: the leader is killed while the only standby runs a rules trial (a
  trial node never takes over).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from deploy.demo.monitoring import RULES, Monitoring, shortened_rules, start_monitoring
from idsync.cli import main
from tests.cluster.cluster import LocalCluster
from tests.cluster.directory import AdDirectory
from tests.cluster.emulator import DOMAIN
from tests.cluster.instance import wait_for
from tests.conftest import ClusterFactory

QUARANTINE = '[user]\nupn_unverified = "quarantine"\n'
# Candidate rules for a trial on the standby: another department for every user.
TRIAL = QUARANTINE + "[user.flows]\ndepartment = \"'Drifted'\"\n"
WAIT = 40.0  # seconds for one condition to show up in (or leave) Prometheus and the webhook


class Webhook:
    """An Alertmanager webhook receiver: every notification's alerts, in arrival order."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer._lock:
                    outer.received.extend(json.loads(body).get("alerts", []))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def got(self, alertname: str, status: str, **labels: str) -> bool:
        with self._lock:
            return any(
                a["status"] == status
                and a["labels"].get("alertname") == alertname
                and all(a["labels"].get(k) == v for k, v in labels.items())
                for a in self.received
            )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def rules(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, text in (("seed", QUARANTINE), ("trial", TRIAL)):
        out[name] = tmp_path / f"rules-{name}.toml"
        out[name].write_text(text)
    return out


@pytest.fixture
def cluster(local_cluster: ClusterFactory, samba_ou: str) -> Iterator[LocalCluster]:
    # node b gets samba_ou whole (see the test)
    with local_cluster(include_ous=[f"OU=in,{samba_ou}"], session_timeout=2.0) as c:
        yield c


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    w = Webhook()
    yield w
    w.close()


def test_alerts_fire_reach_alertmanager_and_resolve(
    cluster: LocalCluster,
    ad: AdDirectory,
    samba_ou: str,
    rules: dict[str, Path],
    webhook: Webhook,
    tmp_path: Path,
) -> None:
    inner = ad.ou("in", samba_ou)
    for _ in range(2):
        ad.add_user(inner, f"u{uuid.uuid4().hex[:8]}", department="Sales")
    odd = ad.add_user(inner, f"q{uuid.uuid4().hex[:8]}", domain="unverified.example")
    stray = ad.add_user(samba_ou, f"s{uuid.uuid4().hex[:8]}", department="Sales")  # in b's scope only
    for node in ("a", "b"):
        cluster.add(node)
        cluster.nodes[node].use_rules(rules["seed"])
    b_config = cluster.nodes["b"].config
    b_config.write_text(b_config.read_text().replace(f'"{inner}"', f'"{samba_ou}"'))
    cluster.start("a")
    assert cluster.wait_leader() == "a"
    cluster.start("b")
    targets = {n: i.admin_port for n, i in cluster.nodes.items()}
    test_rules = shortened_rules(RULES, tmp_path / "alerts-test.yml", "2s")
    mon: Monitoring = start_monitoring(
        tmp_path / "monitoring",
        targets,
        "t",
        rules=test_rules,
        scrape_interval="1s",
        webhook=webhook.url,
        fast=True,
    )
    try:
        a_instance = f"127.0.0.1:{targets['a']}"
        b_instance = f"127.0.0.1:{targets['b']}"

        def fired(name: str, **labels: str) -> None:
            def both() -> bool:
                live = mon.firing().get(name, [])
                in_prom = any(all(ls.get(k) == v for k, v in labels.items()) for ls in live)
                return in_prom and webhook.got(name, "firing", **labels)

            wait_for(both, WAIT, f"{name} {labels} firing in Prometheus and at the webhook", step=0.25)

        def resolved(name: str, **labels: str) -> None:
            def both() -> bool:
                live = [a["labels"] for a in mon.alerts() if a["labels"]["alertname"] == name]
                gone = not any(all(ls.get(k) == v for k, v in labels.items()) for ls in live)
                return gone and webhook.got(name, "resolved", **labels)

            wait_for(both, WAIT, f"{name} {labels} resolved in Prometheus and at the webhook", step=0.25)

        # 1. A quarantined user, and a standby whose scope drifts from the leader's.
        fired("IdsyncQuarantinedObjects", cluster="t", phase="sync")
        fired("IdsyncStagingDrift", instance=b_instance)
        am = {a["labels"]["alertname"] for a in mon.alertmanager_alerts()}
        assert {"IdsyncQuarantinedObjects", "IdsyncStagingDrift"} <= am
        assert not mon.firing().get("IdsyncNoLeader")  # a leads and exports all along

        # ... fixed: the user gets a verified UPN suffix; the stray user moves into both scopes
        # (the leader exports it, and the standby has nothing left to do).
        ad.replace(odd.dn, userPrincipalName=f"{odd.upn.split('@')[0]}@{DOMAIN}")
        ad.move(stray.dn, stray.dn.split(",", 1)[0], inner)
        resolved("IdsyncQuarantinedObjects", cluster="t", phase="sync")
        resolved("IdsyncStagingDrift", instance=b_instance)

        # 2. Paused (for longer than the test copy's `for:`), then resumed.
        assert main(["pause", "--reason", "alert test", *cluster.ctl_args()]) == 0
        fired("IdsyncPausedTooLong", cluster="t")
        assert main(["resume", *cluster.ctl_args()]) == 0
        resolved("IdsyncPausedTooLong", cluster="t")

        # 3. The leader dies while the only standby cannot take over (it runs a rules trial).
        trial = ["rules", "trial", *cluster.ctl_args(), str(rules["trial"]), "--on", "b", "--wait", "40"]
        assert main(trial) == 0
        wait_for(lambda: cluster.view().members["b"].trial, WAIT, "b running the trial")
        cluster.nodes["a"].kill()
        fired("IdsyncNoLeader", cluster="t")
        fired("IdsyncNodeDown", instance=a_instance)
        assert cluster.leader() is None  # b did not take over: nobody exports
        # ... a comes back and leads again.
        cluster.nodes["a"].start()
        resolved("IdsyncNodeDown", instance=a_instance)
        resolved("IdsyncNoLeader", cluster="t")
        assert cluster.leader() == "a"
    finally:
        mon.stop()
