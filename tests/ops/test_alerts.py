"""The alert rules, their promtool unit tests, and the stack's Prometheus and Alertmanager configs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import Promtool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    print(res.stdout, res.stderr)
    return res


def test_rules_check(promtool: Promtool) -> None:
    res = run([str(promtool.path), "check", "rules", "alerts.yml"], PROMETHEUS)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 14 rules found" in res.stdout


def test_rules_unit_tests(promtool: Promtool) -> None:
    res = run([str(promtool.path), "test", "rules", "alerts_test.yml"], PROMETHEUS)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_rule_tests_catch_a_broken_rule(promtool: Promtool, tmp_path: Path) -> None:
    """The unit tests fail when the switchover guard of IdsyncMultipleLeaders is removed."""
    rules = (PROMETHEUS / "alerts.yml").read_text()
    broken = rules.replace(
        "expr: sum by (cluster) (idsync_leader) > 1\n        for: 1m",
        "expr: sum by (cluster) (idsync_leader) > 1\n        for: 0m",
    )
    assert broken != rules
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path)
    res = run([str(promtool.path), "test", "rules", "alerts_test.yml"], tmp_path)
    assert res.returncode != 0
    assert "a switchover where both nodes show 1" in res.stdout + res.stderr


def alert_names() -> list[str]:
    return re.findall(r"^\s+- alert: (\w+)$", (PROMETHEUS / "alerts.yml").read_text(), re.M)


def test_every_alert_is_tested_and_has_a_runbook_section() -> None:
    rules = (PROMETHEUS / "alerts.yml").read_text()
    tests = (PROMETHEUS / "alerts_test.yml").read_text()
    docs = OPERATIONS.read_text()
    names = alert_names()
    assert len(names) == 14
    for name in names:
        # fires somewhere, and is asserted silent somewhere
        assert re.search(rf"alertname: {name}\n\s+exp_alerts:\n\s+- exp_labels", tests), name
        assert re.search(rf"alertname: {name}\n\s+exp_alerts: \[\]", tests), name
        anchor = name.lower()
        assert f'runbook: "docs/operations.md#{anchor}"' in rules, name
        assert re.search(rf"^### {name}$", docs, re.M), f"docs/operations.md has no '### {name}'"
    for key in ("summary", "description", "runbook"):
        assert rules.count(f"          {key}: ") == len(names), key


def test_prometheus_config(promtool: Promtool) -> None:
    res = run([str(promtool.path), "check", "config", "prometheus/prometheus.yml"], DEPLOY)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 14 rules found" in res.stdout


def test_alertmanager_config() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.fail("amtool not found: run deploy/local/install-deps.sh (Debian: prometheus-alertmanager)")
    res = run([amtool, "check-config", "alertmanager/alertmanager.yml"], DEPLOY)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout
