"""The Grafana dashboard (deploy/grafana/idsync.json) queries only what idsync exports.

Every PromQL expression of the dashboard (panels, annotations, variables) must parse (promtool),
and every `idsync_*` metric it names must be in `/metrics` of a running node, with the label
values it selects on (e.g. phase="source_import") present there too.
"""

from __future__ import annotations

import re
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster.cluster import LocalCluster
from tests.cluster.directory import AdDirectory
from tests.cluster.instance import wait_for
from tests.conftest import ClusterFactory
from tests.harness import Promtool

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/idsync.json"
METRIC = re.compile(r"\b(idsync_[a-z_]+)\b")
SELECTOR = re.compile(r"\b(idsync_[a-z_]+)\{([^}]*)\}")
EXACT = re.compile(r'(\w+)="([^"$]*)"')  # label="value" without a dashboard variable


def expressions(doc: Any) -> list[str]:
    """Every PromQL expression in the dashboard JSON, wherever it sits."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    return found


def as_promql(expr: str) -> str:
    """Grafana's variables replaced by what they stand for, so promtool can parse the result."""
    if expr.startswith("label_values("):
        inner = expr[len("label_values(") : -1].rsplit(",", 1)[0]
        expr = inner
    return expr.replace("$__rate_interval", "5m").replace('"$cluster"', '".*"').replace('"$instance"', '".*"')


@pytest.fixture
def cluster(local_cluster: ClusterFactory) -> Iterator[LocalCluster]:
    with local_cluster(session_timeout=2.0) as c:
        yield c


def test_every_expression_parses(promtool: Promtool, tmp_path: Path) -> None:
    exprs = expressions(orjson.loads(DASHBOARD.read_bytes()))
    assert len(exprs) >= 20
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": as_promql(e)} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_bytes(orjson.dumps(rules))  # JSON is YAML
    res = subprocess.run(
        [str(promtool.path), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_broken_expression_is_caught(promtool: Promtool, tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_bytes(
        orjson.dumps(
            {
                "groups": [
                    {
                        "name": "d",
                        "rules": [{"record": "d:q", "expr": as_promql("sum by (instance (idsync_epoch)")}],
                    }
                ]
            }
        )
    )
    res = subprocess.run(
        [str(promtool.path), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode != 0


def test_every_metric_the_dashboard_queries_is_exported_by_a_running_node(
    cluster: LocalCluster,
    ad: AdDirectory,
    samba_ou: str,
) -> None:
    for _ in range(2):
        ad.add_user(samba_ou, f"u{uuid.uuid4().hex[:8]}", department="Sales")
    cluster.start("a")
    port = cluster.nodes["a"].admin_port

    def scrape() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                return resp.read().decode()
        except OSError:
            return ""

    # Once the leader has exported, every phase (imports, sync, export) has run at least once.
    wait_for(
        lambda: 'idsync_last_success_timestamp_seconds{phase="export"}' in scrape(), 60, "a's first export"
    )
    text = scrape()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    names = {s.name for f in families.values() for s in f.samples} | set(families)
    # A labelled counter never incremented (no Graph retry yet) still announces its family.
    names |= {m.group(1) for m in re.finditer(r"^# TYPE (\w+) ", text, re.M)}

    exprs = expressions(orjson.loads(DASHBOARD.read_bytes()))
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert {"idsync_leader", "idsync_epoch", "idsync_pending_exports", "idsync_graph_throttled_total"} <= used
    missing = sorted(m for m in used if m not in names and m.removesuffix("_total") not in names)
    assert missing == [], f"the dashboard queries metrics no node exports: {missing}"

    samples = [s for f in families.values() for s in f.samples]
    for e in exprs:
        for metric, matchers in SELECTOR.findall(e):
            for label, value in EXACT.findall(matchers):
                assert any(s.name == metric and s.labels.get(label) == value for s in samples), (
                    f"no sample {metric}{{{label}={value!r}}} in /metrics (queried by: {e})"
                )
