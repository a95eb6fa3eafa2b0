"""Process plumbing shared by every service: spawn detached, probe until ready, signal, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .packages import install_hint


class ServiceStartError(RuntimeError):
    """A service did not become ready; the message carries the reason and the tail of its log."""

    def __init__(self, service: str, reason: str, log: Path | None = None) -> None:
        tail = log_tail(log) if log is not None else ""
        # A module the service could not load names the Debian package to install.
        hint = install_hint(log_tail(log, lines=2000)) if log is not None else ""
        if hint:
            reason = f"{reason} -- {hint}"
        detail = f"\n--- last lines of {log} ---\n{tail}" if tail else ""
        super().__init__(f"{service}: {reason}{detail}")
        self.service = service
        self.reason = reason


def log_tail(path: Path | None, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or "" if it does not exist."""
    if path is None or not path.exists():
        return ""
    with path.open("rb") as f:
        # Logs can be large (slapd/samba under load); read only the end.
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - max(16384, lines * 400)))
        data = f.read().decode("utf-8", "replace")
    return "\n".join(data.splitlines()[-lines:])


def pid_alive(pid: int | None) -> bool:
    """True if `pid` exists and is neither a zombie nor dead (works for processes we did not spawn)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def group_task_states(pgid: int) -> list[str]:
    """The state letter (R, S, T, ...) of every thread of every process in process group `pgid`."""
    states = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # fields: state, ppid, pgrp, ...
                continue
            for task in (proc / "task").iterdir():
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        except (OSError, IndexError, ValueError):
            continue  # the process or thread went away meanwhile
    return states


def pid_cmdline(pid: int) -> str:
    """The command line of `pid` as one string ("" if gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def spawn(
    argv: Sequence[str],
    log: Path,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session (it outlives us; signals reach its group); output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%F %T')} exec {' '.join(argv)}\n".encode())
        out.flush()
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            user=user,
            start_new_session=True,
        )


def wait_until(
    probe: Callable[[], bool],
    *,
    service: str,
    timeout: float,
    log: Path | None,
    alive: Callable[[], bool] | None = None,
    what: str = "ready",
) -> float:
    """Poll `probe` until it returns True; return the seconds waited.

    Fails fast if `alive` says the process died, and after `timeout` otherwise, in both cases with
    the log tail. The poll interval grows from 20 ms to 200 ms: readiness is observed, never assumed.
    """
    start = time.monotonic()
    interval = 0.02
    last_error = ""
    while True:
        try:
            if probe():
                return time.monotonic() - start
        except Exception as e:  # a probe failing is the normal "not yet" case
            last_error = f" (last probe error: {type(e).__name__}: {e})"
        if alive is not None and not alive():
            raise ServiceStartError(service, f"process exited before it was {what}{last_error}", log)
        if time.monotonic() - start > timeout:
            raise ServiceStartError(service, f"not {what} after {timeout:.0f} s{last_error}", log)
        time.sleep(interval)
        interval = min(interval * 1.5, 0.2)


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send `sig` to the process group led by `pid` (our services are session leaders)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def terminate(pid: int, *, timeout: float = 15.0, sig: signal.Signals = signal.SIGTERM) -> None:
    """Stop the group led by `pid`: `sig`, wait for it to exit, SIGKILL if it will not."""
    # A stopped process cannot act on SIGTERM; continue it first.
    signal_group(pid, signal.SIGCONT)
    signal_group(pid, sig)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.02)
    if pid_alive(pid):
        signal_group(pid, signal.SIGKILL)
        while pid_alive(pid):
            _reap(pid)
            time.sleep(0.02)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect our own child so it does not linger as a zombie; harmless for other processes."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
