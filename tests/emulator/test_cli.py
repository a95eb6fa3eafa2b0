"""`idsync graph-emulator`'s strictness flags, as an operator passes them."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from idsync.commands import graph_emulator

ROOT = Path(__file__).resolve().parents[2]


def _call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    req = urllib.request.Request(
        base + path,
        data=None if body is None else orjson.dumps(body),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, orjson.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def test_roles_preregistration_and_lag_flags(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    secret = tmp_path / "other-secret"
    secret.write_text("other\n")
    other = "00000000-0000-4000-8000-0000000000f6"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "idsync",
            "graph-emulator",
            "--listen",
            f"127.0.0.1:{port}",
            "--anonymous",
            "--client-roles",
            "User.Read.All,Directory.Read.All",
            "--preregister-extension",
            "idsyncAnchor",
            "--extra-client",
            f"{other}:{secret}:Group.Read.All",
            "--replication-lag",
            "2:4",
            "--replication-seed",
            "9",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stdout.readline().decode() if proc.stdout else ""
        assert f"http://127.0.0.1:{port}/v1.0" in line, line
        base = f"http://127.0.0.1:{port}"
        assert _call(base, "GET", "/v1.0/users")[0] == 200
        status, body = _call(base, "POST", "/v1.0/users", {"displayName": "x"})
        assert status == 403 and body["error"]["code"] == "Authorization_RequestDenied"
        status, body = _call(base, "POST", "/v1.0/directoryObjects/getAvailableExtensionProperties", {})
        assert status == 200
        assert [e["name"] for e in body["value"]] == [
            "extension_000000000000400080000000000000a1_idsyncAnchor"
        ]
        status, cfg = _call(base, "GET", "/_emulator/config")
        assert cfg["replication_lag_min"] == 2.0 and cfg["replication_lag_max"] == 4.0
        assert cfg["replication_seed"] == 9
        assert cfg["extra_clients"] == [{"client_id": other, "roles": ["Group.Read.All"]}]
        assert b"other" not in orjson.dumps(cfg).replace(b'"client_id"', b"")  # no secret
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--replication-lag", "soon"],
        ["--extra-client", "no-secret-file"],
        ["--extra-client", "id:/nonexistent/secret:User.Read.All"],
    ],
)
def test_bad_strictness_flags_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    graph_emulator.configure(parser)
    assert graph_emulator.run(parser.parse_args(argv)) == 2
    assert "graph-emulator:" in capsys.readouterr().err


def test_the_old_extension_flag_is_gone() -> None:
    # pre-registration is explicit now (--preregister-extension); --extension would silently mean it
    parser = argparse.ArgumentParser()
    graph_emulator.configure(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--extension", "idsyncAnchor"])
