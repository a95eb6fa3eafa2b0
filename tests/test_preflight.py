"""`idsync preflight` when things are wrong: every check still reports, each problem with its fix."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import psycopg
import pytest

from idsync.cli import main
from idsync.commands.preflight import Check, render
from idsync.emulator.config import DEFAULT_TENANT
from tests.cluster.instance import wait_for
from tests.harness.ports import free_port
from tests.sync.conftest import node_config
from tests.target.tls import make_tls

READ_ONLY = "00000000-0000-4000-8000-0000000000b3"


def test_the_report_has_one_line_per_check_and_the_fix_below() -> None:
    text = render(
        [
            Check("token", "OK", "obtained"),
            Check("group-extension", "FAIL", "extension_x_y is not registered", "idsync preflight --fix"),
        ]
    )
    assert text.splitlines() == [
        "OK    token            obtained",
        "FAIL  group-extension  extension_x_y is not registered",
        "                       fix: idsync preflight --fix",
    ]


def test_unreachable_services_fail_with_their_fix(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # PostgreSQL is up; LDAP, Graph and ZooKeeper point at a closed port.
    cfg = node_config(tmp_path / "idsync.toml", pg_dsn)
    assert main(["--config", str(cfg), "preflight", "--json"]) == 2
    checks = {c["name"]: c for c in orjson.loads(capsys.readouterr().out)}
    assert checks["postgresql"]["status"] == "OK"
    with psycopg.connect(pg_dsn) as conn:
        autovacuum = conn.execute("SELECT current_setting('autovacuum')::bool").fetchone()
    assert ("autovacuum off" in checks["postgresql"]["detail"]) == (autovacuum == (False,))
    assert checks["zookeeper"]["status"] == "FAIL" and "127.0.0.1:1" in checks["zookeeper"]["detail"]
    assert checks["token"]["status"] == "WARN" and "anonymous" in checks["token"]["detail"]
    assert checks["domains"]["status"] == "WARN" and "cannot read" in checks["domains"]["detail"]
    assert checks["group-extension"]["status"] == "WARN"
    assert checks["source"]["status"] == "FAIL" and checks["source"]["fix"].startswith("check [source.ldap]")
    assert "upn-suffixes" not in checks  # nothing read, nothing to compare


def test_standalone_skips_zookeeper_and_an_unreadable_config_is_exit_2(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = node_config(tmp_path / "idsync.toml", pg_dsn)
    main(["--config", str(cfg), "preflight", "--standalone"])
    out = capsys.readouterr().out
    assert "OK    zookeeper        not used (--standalone)" in out
    assert main(["--config", str(tmp_path / "missing.toml"), "preflight"]) == 2


def test_idsync_run_refuses_to_start_without_the_permissions_it_needs(
    tmp_path: Path, pg_dsn: str, pg_schema: str
) -> None:
    """A real `idsync run` against the emulator over TLS, as an app an admin gave read rights only."""
    ca, _ = make_tls(tmp_path)
    (tmp_path / "secret").write_text("read-only-secret")
    port = free_port()
    emulator = subprocess.Popen(
        [
            sys.executable, "-m", "idsync", "graph-emulator", "--listen", f"127.0.0.1:{port}",
            "--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key"),
            "--extra-client", f"{READ_ONLY}:{tmp_path / 'secret'}:User.Read.All,Directory.Read.All",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        url = f"https://127.0.0.1:{port}"
        cfg = node_config(tmp_path / "idsync.toml", pg_dsn, pg_schema)  # its own schema
        text = cfg.read_text().replace(
            'graph_endpoint = "http://127.0.0.1:1"\nanonymous = true',
            f'graph_endpoint = "{url}"\nauthority_host = "{url}"\ntenant_id = "{DEFAULT_TENANT}"\n'
            f'client_id = "{READ_ONLY}"\nclient_secret_file = "{tmp_path / "secret"}"\nca_file = "{ca}"',
        )
        cfg.write_text(text)
        _wait_port(port)
        res = subprocess.run(
            [sys.executable, "-m", "idsync", "--config", str(cfg), "run", "--standalone", "--once"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.killpg(emulator.pid, signal.SIGTERM)
        emulator.wait(timeout=10)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "lacks application permissions idsync cannot work without" in res.stderr
    assert "to create, update and delete users it needs one of User.ReadWrite.All" in res.stderr


def _wait_port(port: int) -> None:
    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    wait_for(up, 20, "the emulator to listen")
