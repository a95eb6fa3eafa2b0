"""Structured logging for idsync: JSON lines under systemd, readable text on a terminal.

Every event carries the node name and, once the HA loop has decided, its role and epoch.
Secrets are redacted from keys and values before anything is rendered. Libraries that
use stdlib logging (kazoo, ldap3, aiohttp, azure) go through the same renderer.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import IO, TYPE_CHECKING, Any

import orjson
import structlog

if TYPE_CHECKING:
    from idsync.config import Config

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
REDACTED = "***"

# Keys whose values are secrets. Keys naming where a secret lives (`*_file`, ...) are not.
_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)|pwd|secret|token|authori[sz]ation|api_?key|cookie|private_?key", re.IGNORECASE
)
_NOT_SECRET_SUFFIXES = ("_file", "_credential", "_path", "_count", "_seconds")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*):[^@/?#\s]*@")
_KEY_VALUE = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|client_secret|secret|access_token|refresh_token|token))"
    r"(?P<sep>\s*[=:]\s*)(?P<value>\"[^\"]*\"|'[^']*'|[^\s&,;]+)",
    re.IGNORECASE,
)
_AUTH_HEADER = re.compile(r"\b(?P<scheme>Bearer|Basic|Digest)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)

_HANDLER_MARK = "_idsync_handler"
_process_context: dict[str, Any] = {}
_process_lock = threading.Lock()


def redact_text(text: str) -> str:
    """Mask passwords in URLs (`u:***@`), `password=...` pairs and Authorization values."""
    text = _URL_PASSWORD.sub(rf"\g<head>:{REDACTED}@", text)
    text = _KEY_VALUE.sub(rf"\g<key>\g<sep>{REDACTED}", text)
    return _AUTH_HEADER.sub(rf"\g<scheme> {REDACTED}", text)


def is_secret_key(key: str) -> bool:
    """True when a field named `key` holds a secret (`password`, `client_secret`, `token`...)."""
    return bool(_SECRET_KEY.search(key)) and not key.lower().endswith(_NOT_SECRET_SUFFIXES)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_key(str(k)) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: mask secret-named keys and secrets inside string values."""
    for key, value in list(event_dict.items()):
        if key.startswith("_"):
            continue
        event_dict[key] = REDACTED if is_secret_key(key) and value is not None else _redact(value)
    return event_dict


def bind_context(**values: Any) -> None:
    """Add fields to every later event of this process, e.g. `bind_context(role="leader", epoch=7)`.

    Role and epoch belong to the whole process, so this is process-wide rather than a
    contextvar: contextvars would not reach kazoo's and ldap3's threads, nor asyncio tasks
    started before the binding. A value of None removes the field. For per-task fields
    (a cycle id), use `structlog.contextvars.bind_contextvars`; both are merged.
    """
    with _process_lock:
        for key, value in values.items():
            if value is None:
                _process_context.pop(key, None)
            else:
                _process_context[key] = value


def clear_context() -> None:
    """Forget everything bound with `bind_context` (the node name stays)."""
    with _process_lock:
        node = _process_context.get("node")
        _process_context.clear()
        if node is not None:
            _process_context["node"] = node


def _merge_process_context(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    with _process_lock:
        for key, value in _process_context.items():
            event_dict.setdefault(key, value)
    return event_dict


_FIRST_KEYS = ("timestamp", "level", "node", "role", "epoch", "logger", "event")


def _order_keys(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    # Fixed leading keys make JSON lines easy to scan in journalctl output.
    first = {k: event_dict.pop(k) for k in _FIRST_KEYS if k in event_dict}
    return {**first, **event_dict}


def _dumps(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def use_json(fmt: str, stream: IO[str]) -> bool:
    """Whether to write JSON lines: forced by `fmt`, or `auto` and not writing to a terminal."""
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return not (isatty and isatty())
    return fmt == "json"


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    node: str | None = None,
    *,
    library_level: str = "warning",
    stream: IO[str] | None = None,
) -> None:
    """Set up structlog and stdlib logging for the process; safe to call again.

    `level` applies to idsync's own loggers, `library_level` to everything else (kazoo,
    ldap3, aiohttp, azure). `fmt` is "auto", "json" or "console". Output goes to `stream`
    (default stderr, which systemd sends to the journal like stdout; keeping it off stdout
    keeps command output clean).
    """
    out = stream if stream is not None else sys.stderr
    json = use_json(fmt, out)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _merge_process_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if json
        else structlog.dev.ConsoleRenderer(colors=bool(getattr(out, "isatty", lambda: False)()))
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redact_secrets,
            _order_keys,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[library_level.lower()])
    logging.getLogger("idsync").setLevel(LEVELS[level.lower()])

    if node is not None:
        bind_context(node=node)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def configure_from_config(cfg: Config, level_override: str | None = None) -> None:
    """`configure_logging` from `[log]` and `[node]`; `level_override` is `--log-level`."""
    configure_logging(
        level_override or cfg.log.level,
        cfg.log.format,
        cfg.node.name,
        library_level=cfg.log.library_level,
    )


def get_logger(name: str = "idsync") -> Any:
    """A structlog logger; pass `__name__` so the level of `idsync.*` applies."""
    return structlog.stdlib.get_logger(name)
