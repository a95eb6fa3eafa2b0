"""The base class of every harness service: one process, started once, probed, and controllable."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from .process import (
    ServiceStartError,
    group_task_states,
    pid_alive,
    signal_group,
    spawn,
    terminate,
    wait_until,
)


class SharedServiceError(RuntimeError):
    """Raised when a test tries to stop or pause a service it does not own (the shared `.stack/` one)."""


class Service(ABC):
    """A real service run by the harness in its own directory, on loopback.

    `start()` (same ports and data every time), `stop()`, `restart()`, `pause()` (SIGSTOP),
    `resume()` (SIGCONT) are the chaos helpers. A service attached from the shared stack is
    `shared`: this process may use it but never disrupt it, because other sessions use it too.
    """

    name: ClassVar[str]
    ready_timeout: ClassVar[float] = 60.0

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pid: int | None = None
        self.shared = False
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # --- what a subclass provides -------------------------------------------------------------

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The constructor keyword arguments (besides workdir) that recreate this service from JSON."""

    @abstractmethod
    def command(self) -> list[str]:
        """The argv that runs the service in the foreground."""

    @abstractmethod
    def probe(self) -> bool:
        """True once the service answers real requests (a bind, a query, `srvr`)."""

    @abstractmethod
    def describe(self) -> str:
        """Where it listens and how to reach it, for the `status` table."""

    def prepare(self) -> None:
        """One-time set-up before the first start: config files, data directories, provisioning."""
        return None

    def after_ready(self) -> None:
        """Runs after each successful start (e.g. create the base entry if missing)."""
        return None

    def check_can_start(self) -> None:
        """Raise ServiceStartError if the service cannot start here (e.g. its fixed port is taken)."""
        return None

    @property
    def log(self) -> Path:
        """The file that receives the service's stdout and stderr."""
        return self.workdir / f"{self.name}.log"

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> float:
        """Start the service (preparing it the first time) and wait until it answers; return seconds."""
        self._guard("start")
        if self.running():
            raise ServiceStartError(self.name, f"already running as pid {self.pid}")
        t0 = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.check_can_start()  # before prepare(): do not provision a Samba that cannot run
        marker = self.workdir / ".prepared"
        if not marker.exists():
            self.prepare()
            marker.touch()
        self.launch()
        try:
            wait_until(
                self.probe,
                service=self.name,
                timeout=self.ready_timeout,
                log=self.log,
                alive=self.running,
            )
            self.after_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self.startup_seconds

    def launch(self) -> None:
        """Spawn the process, detached into its own session."""
        self._proc = spawn(self.command(), self.log, cwd=self.workdir)
        self.pid = self._proc.pid

    def running(self) -> bool:
        """True while the service's process exists (paused counts as running)."""
        if self._proc is not None and self._proc.poll() is not None:
            return False
        return pid_alive(self.pid)

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 15 s); data and ports are kept for start()."""
        self._guard("stop")
        if self.pid is not None:
            terminate(self.pid)
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        self.pid = None

    def restart(self) -> float:
        """stop() then start(); returns the start-up seconds."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        """Freeze the service (SIGSTOP to its process group): connections stay open, nothing answers.

        Returns once every thread is observed stopped: kill() only queues the signal, and a thread
        busy on another core could otherwise still answer one more request.
        """
        self._guard("pause")
        self._signal(signal.SIGSTOP)
        assert self.pid is not None
        pgid = self.pid
        wait_until(
            lambda: all(st in "tT" for st in group_task_states(pgid) or ["?"]),
            service=self.name,
            timeout=10,
            log=self.log,
            what="stopped by SIGSTOP",
        )

    def resume(self) -> None:
        """Undo pause() (SIGCONT); returns once no thread is stopped any more."""
        self._guard("resume")
        self._signal(signal.SIGCONT)
        assert self.pid is not None
        pgid = self.pid
        wait_until(
            lambda: not any(st in "tT" for st in group_task_states(pgid)),
            service=self.name,
            timeout=10,
            log=self.log,
            what="continued by SIGCONT",
        )

    def destroy(self) -> None:
        """Stop the service and delete its directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _signal(self, sig: signal.Signals) -> None:
        if self.pid is None:
            raise RuntimeError(f"{self.name} is not running")
        signal_group(self.pid, sig)

    def _guard(self, action: str) -> None:
        if self.shared:
            raise SharedServiceError(
                f"{self.name} belongs to the shared stack in .stack/ (other sessions use it); "
                f"refusing to {action} it. Use the `spawn` fixture for a private instance."
            )

    # --- JSON state (stack.json) --------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything needed to find and control this service from another process."""
        return {
            "workdir": str(self.workdir),
            "pid": self.pid,
            "startup_seconds": self.startup_seconds,
            "params": self.params(),
            "endpoint": self.describe(),
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> Service:
        """Recreate a handle on a service described by state() (possibly started by another process)."""
        svc = cls(Path(data["workdir"]), **data["params"])
        svc.pid = data.get("pid")
        svc.startup_seconds = data.get("startup_seconds")
        return svc
