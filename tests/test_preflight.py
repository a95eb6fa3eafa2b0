"""`idsync preflight` when things are wrong: every check still reports, each problem with its fix."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from idsync.cli import main
from idsync.commands.preflight import Check, render
from tests.sync.conftest import node_config


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
