"""Logging: JSON lines off a terminal, text on one, node/role/epoch on every event, secrets masked."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from idsync.config import load_config
from idsync.log import bind_context, clear_context, configure_from_config, configure_logging, get_logger


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_idsync_handler", False)]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("idsync").setLevel(logging.NOTSET)
    bind_context(node=None)
    clear_context()
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_json_when_not_a_terminal(tmp_path: Path) -> None:
    out = io.StringIO()
    configure_logging("info", "auto", "node-a", stream=out)
    get_logger("idsync.test").info("export.batch", ops=20)
    [event] = lines(out)
    assert event["event"] == "export.batch" and event["ops"] == 20
    assert event["node"] == "node-a" and event["level"] == "info" and event["logger"] == "idsync.test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", event["timestamp"])


def test_console_on_a_terminal() -> None:
    out = Terminal()
    configure_logging("info", "auto", "node-a", stream=out)
    get_logger("idsync.test").info("cycle.done", objects=3)
    text = out.getvalue()
    assert "cycle.done" in text and "objects" in text and "node-a" in text
    assert not text.lstrip().startswith("{")


def test_format_can_be_forced() -> None:
    out = Terminal()
    configure_logging("info", "json", "n", stream=out)
    get_logger("idsync.test").info("x")
    assert lines(out)[0]["event"] == "x"
    plain = io.StringIO()
    configure_logging("info", "console", "n", stream=plain)
    get_logger("idsync.test").info("y")
    assert "y" in plain.getvalue() and not plain.getvalue().startswith("{")


def test_role_and_epoch_reach_every_event_including_other_threads() -> None:
    import threading

    out = io.StringIO()
    configure_logging("info", "json", "node-a", stream=out)
    bind_context(role="leader", epoch=7)
    thread = threading.Thread(target=lambda: logging.getLogger("kazoo.client").warning("lost"))
    thread.start()
    thread.join()
    get_logger("idsync.ha").info("promoted")
    bind_context(role="staging", epoch=None)
    get_logger("idsync.ha").info("demoted")
    kazoo, promoted, demoted = lines(out)
    assert (kazoo["role"], kazoo["epoch"], kazoo["node"]) == ("leader", 7, "node-a")
    assert (promoted["role"], promoted["epoch"]) == ("leader", 7)
    assert demoted["role"] == "staging" and "epoch" not in demoted


def test_secrets_are_redacted() -> None:
    out = io.StringIO()
    configure_logging("info", "json", "n", stream=out)
    get_logger("idsync.test").info(
        "connect postgresql://idsync:pgpw@db/idsync",
        password="hunter2",
        client_secret="cs",
        authorization="Bearer eyJabc",
        token_file="/etc/idsync/admin-token",
        dsn="host=db user=idsync password=kv-pw",
        nested={"access_token": "at", "url": "ldaps://cn=admin:ldappw@dc1"},
        headers=["Authorization: Bearer abc.def-ghi"],
    )
    [event] = lines(out)
    raw = out.getvalue()
    for secret in ("pgpw", "hunter2", '"cs"', "eyJabc", "kv-pw", '"at"', "ldappw", "abc.def-ghi"):
        assert secret not in raw, secret
    assert event["event"] == "connect postgresql://idsync:***@db/idsync"
    assert event["password"] == "***" and event["client_secret"] == "***"
    assert event["token_file"] == "/etc/idsync/admin-token"  # where a secret lives is not secret
    assert event["dsn"] == "host=db user=idsync password=***"
    assert event["nested"] == {"access_token": "***", "url": "ldaps://cn=admin:***@dc1"}
    assert event["headers"] == ["Authorization: Bearer ***"]


def test_tracebacks_are_redacted_too() -> None:
    out = io.StringIO()
    configure_logging("info", "json", "n", stream=out)
    try:
        raise ConnectionError("cannot reach postgresql://idsync:tbpw@db/idsync")
    except ConnectionError:
        get_logger("idsync.test").exception("store.unreachable")
    [event] = lines(out)
    assert "postgresql://idsync:***@db/idsync" in event["exception"]
    assert "tbpw" not in out.getvalue()


def test_library_loggers_share_the_renderer_at_warning() -> None:
    out = io.StringIO()
    configure_logging("debug", "json", "n", stream=out)
    logging.getLogger("ldap3").info("chatty")
    logging.getLogger("azure.identity").warning("token for %s failed", "app")
    get_logger("idsync.test").debug("ours")
    events = lines(out)
    assert [(e["logger"], e["event"]) for e in events] == [
        ("azure.identity", "token for app failed"),
        ("idsync.test", "ours"),
    ]


def test_level_filters_idsync_events() -> None:
    out = io.StringIO()
    configure_logging("warning", "json", "n", stream=out)
    log = get_logger("idsync.test")
    log.info("hidden")
    log.warning("shown")
    assert [e["event"] for e in lines(out)] == ["shown"]


def test_cli_log_level_overrides_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dsn").write_text("host=db\n")
    (tmp_path / "idsync.toml").write_text(
        '[node]\nname = "cfg-node"\n[store]\ndsn_file = "dsn"\n[source]\nkind = "ad"\n[source.ldap]\n'
        'urls = ["ldap://x"]\nbase_dns = ["DC=x"]\n[target.graph]\ngraph_endpoint = "http://127.0.0.1:1"\n'
        'anonymous = true\n[ha.zookeeper]\nhosts = "z:2181"\n[log]\nlevel = "warning"\nformat = "json"\n'
    )
    cfg = load_config(tmp_path / "idsync.toml", {})
    out = io.StringIO()
    monkeypatch.setattr("sys.stderr", out)
    configure_from_config(cfg)
    get_logger("idsync.test").info("quiet")
    configure_from_config(cfg, level_override="debug")
    get_logger("idsync.test").debug("loud")
    assert [(e["event"], e["node"]) for e in lines(out)] == [("loud", "cfg-node")]


def test_reconfiguring_does_not_duplicate_output() -> None:
    out = io.StringIO()
    configure_logging("info", "json", "n", stream=out)
    configure_logging("info", "json", "n", stream=out)
    get_logger("idsync.test").info("once")
    assert len(lines(out)) == 1
