"""The Graph emulator as a separate process (`idsync graph-emulator`), as operators run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from tests.harness.ports import free_port

DOMAIN = "test.idsync.lan"
# The tenant's initial domain (`isInitial`), where unverified UPN suffixes fall back to.
INITIAL_DOMAIN = "idsynctest.onmicrosoft.com"
# Graph's eventual consistency, on in the HA, end-to-end and chaos runs: a new or changed object
# reaches reads, $filter and delta after a random 0.1-0.8 s, and $batch items run in random order.
REPLICATION_LAG = (0.1, 0.8)


class EmulatorProcess:
    """`idsync graph-emulator --anonymous` on a free loopback port, throttling off by default.

    Strict, as a new tenant: no directory extension is registered (idsync registers its own with
    `idsync preflight --fix`, see LocalCluster). `args` are more command-line options; `lag` is
    the replication lag's (min, max) in seconds (REPLICATION_LAG in the cluster tests).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        throttle: bool = False,
        domain: str = DOMAIN,
        args: tuple[str, ...] = (),
        lag: tuple[float, float] | None = None,
    ) -> None:
        self.workdir = workdir
        self.lag = lag
        self.port = free_port()
        self.domain = domain
        self.throttle = throttle
        self.args = args
        self.log_path = workdir / "graph-emulator.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> EmulatorProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "idsync", "graph-emulator", "--listen", f"127.0.0.1:{self.port}",
            "--anonymous", "--domain", self.domain, "--domain", INITIAL_DOMAIN, *self.args,
        ]  # fmt: skip
        if not self.throttle:
            cmd.append("--no-throttle")
        if self.lag is not None:
            cmd += ["--replication-lag", f"{self.lag[0]}:{self.lag[1]}"]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"graph emulator exited: {self.log_path.read_text()[-2000:]}")
            try:
                self.get("/_emulator/health")
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"graph emulator did not answer within {timeout}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    # -- admin API --------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            return orjson.loads(resp.read())

    def post(self, path: str, body: Any) -> Any:
        req = urllib.request.Request(
            self.url + path,
            data=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return orjson.loads(raw) if raw else None

    def writes(self, since: int = 0) -> list[dict[str, Any]]:
        """The emulator's log of write requests (method, path, status, User-Agent, ...)."""
        return list(self.get(f"/_emulator/requests?writes=1&since={since}")["requests"])

    def state(self) -> dict[str, Any]:
        return dict(self.get("/_emulator/state"))
