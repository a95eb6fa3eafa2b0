"""Debian's Prometheus and Alertmanager, run beside a local cluster (the demo, the alert test).

`start_monitoring()` writes a Prometheus config that scrapes the given idsync nodes with
deploy/prometheus/alerts.yml (or a test copy of it) and sends alerts to an Alertmanager configured
like deploy/alertmanager/alertmanager.yml (same grouping and inhibitions; a webhook receiver when
one is given). Both listen on 127.0.0.1 only and keep their data in `workdir`. They run in their
own process groups, so the demo can leave them running and stop them later by pid.

Test copies of the rules keep every expression and shorten only the `for:` durations
(`shortened_rules`), so a test sees each alert fire and resolve within seconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from tests.harness.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/alerts.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy/alertmanager/alertmanager.yml"
PROMETHEUS_BIN = "prometheus"  # Debian: prometheus
ALERTMANAGER_BIN = "prometheus-alertmanager"  # Debian: prometheus-alertmanager


class MonitoringError(RuntimeError):
    """Prometheus or Alertmanager could not be started; the message says which and why."""


def shortened_rules(src: Path, dest: Path, for_: str) -> Path:
    """Copy the rules file `src` to `dest` with every `for:` set to `for_` (expressions unchanged)."""
    text = src.read_text()
    out, n = re.subn(r"^(\s+for:) \S+$", rf"\1 {for_}", text, flags=re.M)
    if n == 0:
        raise MonitoringError(f"{src} has no `for:` durations to shorten")
    dest.write_text(out)
    return dest


@dataclass
class Monitoring:
    """A running Prometheus + Alertmanager pair."""

    workdir: Path
    prometheus_url: str
    alertmanager_url: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    def _get(self, url: str) -> Any:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return orjson.loads(resp.read())

    def alerts(self) -> list[dict[str, Any]]:
        """Prometheus's active alerts (state pending or firing), from its HTTP API."""
        return list(self._get(f"{self.prometheus_url}/api/v1/alerts")["data"]["alerts"])

    def firing(self) -> dict[str, list[dict[str, str]]]:
        """alertname -> the label sets of its firing alerts."""
        out: dict[str, list[dict[str, str]]] = {}
        for a in self.alerts():
            if a.get("state") == "firing":
                out.setdefault(a["labels"]["alertname"], []).append(a["labels"])
        return out

    def alertmanager_alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds (API v2)."""
        return list(self._get(f"{self.alertmanager_url}/api/v2/alerts"))

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        return list(self._get(url)["data"]["result"])

    def stop(self) -> None:
        for p in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MonitoringError(
            f"{name} not found: install the Debian package {package} (deploy/local/install-deps.sh)"
        )
    return path


def _alertmanager_config(webhook: str | None, fast: bool) -> dict[str, Any]:
    """deploy/alertmanager/alertmanager.yml, with a webhook receiver and short waits when asked."""
    cfg: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    if webhook:
        cfg["receivers"] = [
            {"name": r["name"], "webhook_configs": [{"url": webhook, "send_resolved": True}]}
            for r in cfg["receivers"]
        ]
    if fast:
        # Every alert in a group of its own, notified at once, resolved notifications at once.
        routes = [cfg["route"], *cfg["route"].get("routes", [])]
        for r in routes:
            r.update(group_wait="0s", group_interval="1s", repeat_interval="1h")
        cfg["route"]["group_by"] = ["..."]
    return cfg


def _wait_ready(name: str, url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise MonitoringError(f"{name} exited with {proc.returncode} at start-up:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise MonitoringError(f"{name} not ready at {url} after {timeout:.0f}s (log: {log})")


def start_monitoring(
    workdir: Path,
    targets: Mapping[str, int],
    cluster: str,
    *,
    rules: Path = RULES,
    scrape_interval: str = "15s",
    token_file: Path | None = None,
    webhook: str | None = None,
    fast: bool = False,
) -> Monitoring:
    """Start Alertmanager, then Prometheus scraping `targets` (node -> admin port on 127.0.0.1).

    `fast`: alerts notified and resolved within a second or two (tests). The processes run in
    their own sessions: stop them with `Monitoring.stop()`, or `stop_pids(mon.pids)` later.
    """
    prometheus = _binary(PROMETHEUS_BIN, "prometheus")
    alertmanager = _binary(ALERTMANAGER_BIN, "prometheus-alertmanager")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus-data").mkdir(exist_ok=True)
    (workdir / "alertmanager-data").mkdir(exist_ok=True)
    am_port, prom_port = free_port(), free_port()
    am_url, prom_url = f"http://127.0.0.1:{am_port}", f"http://127.0.0.1:{prom_port}"

    am_config = workdir / "alertmanager.yml"
    am_config.write_bytes(orjson.dumps(_alertmanager_config(webhook, fast)))  # JSON is YAML
    shutil.copy(rules, workdir / "alerts.yml")
    scrape: dict[str, Any] = {
        "job_name": "idsync",
        "metrics_path": "/metrics",
        "static_configs": [
            {"targets": [f"127.0.0.1:{p}" for p in targets.values()], "labels": {"cluster": cluster}}
        ],
    }
    if token_file is not None:
        scrape["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
    prom_config = workdir / "prometheus.yml"
    prom_config.write_bytes(
        orjson.dumps(
            {
                "global": {
                    "scrape_interval": scrape_interval,
                    "evaluation_interval": scrape_interval,
                    "scrape_timeout": scrape_interval if fast else "10s",
                },
                "rule_files": ["alerts.yml"],
                "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
                "scrape_configs": [scrape],
            }
        )
    )

    mon = Monitoring(workdir, prom_url, am_url)
    commands = {
        "alertmanager": [
            alertmanager,
            f"--config.file={am_config}",
            f"--storage.path={workdir / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",  # no gossip port: a single Alertmanager on loopback
            f"--web.external-url={am_url}",
        ],
        "prometheus": [
            prometheus,
            f"--config.file={prom_config}",
            f"--storage.tsdb.path={workdir / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            f"--web.external-url={prom_url}",
            # Firing alerts are re-sent every minute by default; a test wants them at once.
            *(["--rules.alert.resend-delay=1s"] if fast else []),
        ],
    }
    try:
        for name, cmd in commands.items():
            log = workdir / f"{name}.log"
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
                )
            mon.procs[name] = proc
            _wait_ready(name, am_url if name == "alertmanager" else prom_url, proc, log, 30)
    except BaseException:
        mon.stop()
        raise
    return mon


def stop_pids(pids: Mapping[str, int]) -> None:
    """Stop monitoring processes left running by an earlier `start_monitoring(detach=True)`."""
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)


def start_for_demo(workdir: Path, targets: Mapping[str, int], cluster: str) -> Monitoring | None:
    """The demo's Prometheus and Alertmanager: deploy/'s rules and 15 s scrapes, as in production.

    Starts from an empty data directory each time (the demo's cluster is new each time). Returns
    None, after saying why, when they cannot run: the demo goes on without them.
    """
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        return start_monitoring(workdir, targets, cluster)
    except MonitoringError as exc:
        print(f"Prometheus/Alertmanager not started: {exc}")
        return None
