"""The systemd units: they verify cleanly, their exposure score is at most 2.0, and the daemon
works under their syscall filter and W^X policy (tests/ops/sandbox.py).

`systemd-analyze verify` also checks that ExecStart's program exists; the units name the
documented install path /opt/idsync/bin/idsync, so the copy verified here points at this
checkout's .venv/bin/idsync instead (the only change).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
INSTALLED = "/opt/idsync/bin/idsync"
MAX_EXPOSURE = 2.0
# unit file -> the name verified (a template is verified as one of its instances)
CASES = {"idsync.service": "idsync.service", "idsync@.service": "idsync@a.service"}

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not found (Debian package systemd; deploy/local/install-deps.sh)"
)


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def local_copy(unit: str, tmp_path: Path, text: str | None = None) -> Path:
    """The unit in tmp_path with ExecStart pointing at this checkout's idsync."""
    idsync = Path(sys.executable).parent / "idsync"
    assert idsync.exists(), f"{idsync} missing: pip install -e . in the venv"
    body = (text if text is not None else (UNITS / unit).read_text()).replace(INSTALLED, str(idsync))
    dest = tmp_path / unit
    dest.write_text(body)
    return dest


@needs_analyze
@pytest.mark.parametrize("unit", list(CASES))
def test_unit_verifies_without_a_warning(unit: str, tmp_path: Path) -> None:
    local_copy(unit, tmp_path)
    res = analyze("verify", f"./{CASES[unit]}", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout + res.stderr == "", res.stdout + res.stderr


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """What the test above relies on: verify prints a warning for a mistyped directive."""
    text = (UNITS / "idsync.service").read_text().replace("WatchdogSec=", "WatchdgSec=")
    local_copy("idsync.service", tmp_path, text)
    res = analyze("verify", "./idsync.service", cwd=tmp_path)
    assert "Unknown key 'WatchdgSec'" in res.stdout + res.stderr


@needs_analyze
@pytest.mark.parametrize("unit", list(CASES))
def test_exposure_score(unit: str, tmp_path: Path) -> None:
    shutil.copy(UNITS / unit, tmp_path / unit)
    res = analyze("security", "--offline=true", f"./{CASES[unit]}", cwd=tmp_path)
    out = res.stdout + res.stderr
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert m, out
    score = float(m.group(1))
    print(f"systemd-analyze security --offline=true {CASES[unit]}: exposure {score}")
    assert score <= MAX_EXPOSURE, out


def test_units_carry_what_the_daemon_needs() -> None:
    for unit in CASES:
        text = (UNITS / unit).read_text()
        for line in (
            "Type=notify",
            "NotifyAccess=main",
            "Restart=on-failure",
            "DynamicUser=yes",
            "MemoryDenyWriteExecute=yes",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
            "SystemCallFilter=@system-service",
        ):
            assert re.search(rf"^{re.escape(line)}$", text, re.M), (unit, line)
        assert re.search(r"^WatchdogSec=\S+$", text, re.M)
        assert re.search(r"^TimeoutStopSec=\S+$", text, re.M)
        assert re.search(r"^LoadCredential=store-dsn:", text, re.M)
    template = (UNITS / "idsync@.service").read_text()
    assert "--config /etc/idsync/%i.toml run" in template
    assert "SyslogIdentifier=idsync-%i" in template


def test_daemon_runs_under_the_units_syscall_policy(zk_hosts: str, pg_dsn: str) -> None:
    """Admin API, HA, store, TLS and Graph libraries under @system-service and W^X."""
    python3 = "/usr/bin/python3"
    probe = subprocess.run([python3, "-c", "import seccomp"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail("python3-seccomp is missing: run deploy/local/install-deps.sh")
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not found: it lists the syscall groups the sandbox applies")
    res = subprocess.run(
        [
            python3,
            str(ROOT / "tests" / "ops" / "sandbox.py"),
            sys.executable,
            "-m",
            "tests.ops.sandbox_smoke",
            zk_hosts,
            pg_dsn,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(res.stdout, res.stderr)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "refused as it must be: W+X mmap" in res.stdout
    assert "sandbox smoke: all checks passed" in res.stdout
