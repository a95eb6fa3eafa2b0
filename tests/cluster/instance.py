"""One `idsync run` process with its own config, schema and log, driven like an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from idsync.emulator.config import DEFAULT_CLIENT_ID
from tests.harness.ldap import LdapEndpoint
from tests.harness.ports import free_port

# The directory extension carrying group anchors, registered for the emulator's default app by
# `idsync preflight --fix` (LocalCluster does that for the first node).
GROUP_ANCHOR = f"extension_{DEFAULT_CLIENT_ID.replace('-', '')}_idsyncAnchor"


@dataclass
class ClusterSpec:
    """What every node of a test cluster shares."""

    cluster: str
    pg_dsn: str
    zk_hosts: str  # including the chroot
    ldap: LdapEndpoint
    include_ous: list[str]
    graph_url: str
    session_timeout: float = 2.0
    interval: float = 0.5
    request_timeout: float = 1.0
    deletion_threshold: int = 500
    deletion_window: float = 1800.0
    # A leader whose main loop stalls this long resigns. The daemon's default is the session
    # timeout, which with the tests' 2-s sessions a slow phase on a loaded 2-core CI machine can
    # reach; tests of the hung-leader path pass None to get that default.
    stall_timeout: float | None = 8.0
    extra: dict[str, Any] = field(default_factory=dict)
    register_extension: bool = True  # run `idsync preflight --fix` before the first node starts


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_toml(sections: dict[str, dict[str, Any]]) -> str:
    out = []
    for name, values in sections.items():
        out.append(f"[{name}]")
        out += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        out.append("")
    return "\n".join(out)


def write_config(spec: ClusterSpec, node: str, workdir: Path, schema: str) -> tuple[Path, int]:
    """A complete config for `node`; secrets go to files beside it. Returns (path, admin port)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "dsn").write_text(spec.pg_dsn)
    (workdir / "ldap-password").write_text(spec.ldap.password)
    admin_port = free_port()
    retry = spec.session_timeout / 4
    sections: dict[str, dict[str, Any]] = {
        "node": {"name": node, "cluster": spec.cluster},
        "store": {"dsn_file": str(workdir / "dsn"), "schema": schema, "pool_max_size": 4},
        "source": {"kind": "ad"},
        "source.ldap": {
            "urls": [spec.ldap.url],
            "bind_dn": spec.ldap.bind_dn,
            "password_file": str(workdir / "ldap-password"),
            "base_dns": [spec.ldap.base_dn],
            "include_ous": spec.include_ous,
            "connect_timeout_seconds": 2,
            "read_timeout_seconds": 10,
        },
        "target.graph": {
            "graph_endpoint": spec.graph_url,
            "anonymous": True,
            "request_timeout_seconds": spec.request_timeout,
            # Registered by `idsync preflight --fix` (the strict emulator starts without it).
            "anchor_extension_attribute": GROUP_ANCHOR,
        },
        "sync": {
            "interval_seconds": spec.interval,
            "deletion_threshold_count": spec.deletion_threshold,
            "deletion_window_seconds": spec.deletion_window,
            # Longer than the emulator's replication lag (chaos raises it to 3 s), far shorter than
            # the default: tests see a write that did not take re-exported within seconds.
            "export_settle_seconds": 5.0,
        },
        "ha": {
            "loop_interval_seconds": spec.interval,
            "retry_timeout_seconds": retry,
            **({"stall_timeout_seconds": spec.stall_timeout} if spec.stall_timeout is not None else {}),
        },
        "ha.zookeeper": {"hosts": spec.zk_hosts, "session_timeout_seconds": spec.session_timeout},
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
        "log": {"level": "info", "format": "json"},
    }
    for key, values in spec.extra.items():
        sections.setdefault(key, {}).update(values)
    path = workdir / f"{node}.toml"
    path.write_text(render_toml(sections))
    return path, admin_port


class Instance:
    """An `idsync run` process; its JSON log is parsed for the cycle sentences."""

    def __init__(self, name: str, config: Path, admin_port: int, workdir: Path) -> None:
        self.name = name
        self.config = config
        self.admin_port = admin_port
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: list[int] = []

    def use_rules(self, rules: str | Path) -> Path:
        """Point this node's config at a rules file: `rules` is the file, or its text (written
        beside the config as rules.toml). Returns the file's path."""
        path = rules if isinstance(rules, Path) else self.workdir / "rules.toml"
        if not isinstance(rules, Path):
            path.write_text(rules)
        text = self.config.read_text()
        self.config.write_text(text.replace("[sync]\n", f'[sync]\nrules_file = "{path}"\n', 1))
        return path

    def start(self, *args: str) -> Instance:
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "idsync", "--config", str(self.config), "run", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the daemon finishes its batch, releases and exits 0."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            rc = self.proc.wait()
        self.exits.append(rc)
        return rc

    # -- log --------------------------------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        out = []
        try:
            raw = self.log_path.read_bytes()
        except FileNotFoundError:
            return []
        for line in raw.splitlines():
            if line.startswith(b"{"):
                try:
                    out.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    continue
        return out

    def sentences(self) -> list[str]:
        return [str(e.get("decision")) for e in self.events() if e.get("event") == "cycle"]

    def last_sentence(self) -> str:
        s = self.sentences()
        return s[-1] if s else ""


def wait_for(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    """Poll `cond` until it returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
