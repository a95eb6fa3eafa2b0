"""Reading `idsync.toml`: file, TOML, environment overrides, validation, cross-field rules."""

from __future__ import annotations

import copy
import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from idsync.config import env as envmod
from idsync.config.base import BASE_DIR_CONTEXT
from idsync.config.errors import ConfigError, ConfigProblem
from idsync.config.model import Config
from idsync.config.rules import cross_field_problems, file_problems
from idsync.config.secrets import CREDENTIALS_ENV

DEFAULT_CONFIG_PATH = Path("/etc/idsync/idsync.toml")
CONFIG_ENV = "IDSYNC_CONFIG"
# Keys holding inline secrets: their bad values are never echoed in messages.
_INLINE_SECRET_KEYS = frozenset({"password", "dsn", "client_secret", "token", "auth"})
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def config_path(path: str | Path | None, env: Mapping[str, str] = os.environ) -> Path:
    """The file to read: `path`, else `$IDSYNC_CONFIG`, else /etc/idsync/idsync.toml."""
    if path is not None and str(path):
        return Path(path)
    return Path(env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError.single(str(path), "no such file") from None
    except IsADirectoryError:
        raise ConfigError.single(str(path), "is a directory, not a file") from None
    except PermissionError:
        raise ConfigError.single(str(path), "is not readable (permission denied)") from None
    except OSError as exc:
        raise ConfigError.single(str(path), f"cannot be read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError.single(str(path), f"is not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = _TOML_POSITION.search(message)
        if where:
            line, col = where.groups()
            reason = message[: where.start()]
            message = f"TOML syntax error at line {line}, column {col}: {reason[:1].lower()}{reason[1:]}"
        else:
            message = f"TOML syntax error: {message}"
        raise ConfigError.single(str(path), message) from None


def _loc_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        hit = envmod._field(model, str(part).lower()) if isinstance(model, type) else None
        if hit is None:
            return None
        model = hit[1]
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    parent = _model_at(loc[:-1])
    if parent is None:
        return "unknown setting"
    keys = [info.alias or name for name, info in parent.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.75)
    return f"unknown setting (did you mean {close[0]!r}?)" if close else "unknown setting"


def _message(err: Any) -> str:
    kind, loc = err["type"], err["loc"]
    if kind == "missing":
        return "required but not set"
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a table (a [section] or { ... })"
    msg: str = err["msg"]
    msg = msg.removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    value = err.get("input")
    secret = any(str(part) in _INLINE_SECRET_KEYS for part in loc)
    if not secret and isinstance(value, str | int | float | bool):
        msg += f" (got {value!r})"
    return msg


def _validation_problems(exc: ValidationError, origin: Mapping[str, str]) -> list[ConfigProblem]:
    problems = []
    for err in exc.errors():
        path = _loc_path(tuple(err["loc"]))
        message = _message(err)
        var = next((v for p, v in origin.items() if path == p or path.startswith(p + "[")), None)
        if var:
            message += f" (from {var})"
        problems.append(ConfigProblem(path, message))
    return problems


def _attach_credentials(cfg: Config, credentials_dir: Path | None) -> None:
    for section in [cfg, *cfg.sections()]:
        section._credentials_dir = credentials_dir


def parse_config(
    data: Mapping[str, Any],
    env: Mapping[str, str] = os.environ,
    *,
    base_dir: Path | None = None,
    check_files: bool = False,
) -> Config:
    """Validate already-parsed TOML data (e.g. a dict built by a test) like `load_config` does.

    `base_dir` anchors relative paths (default: the working directory).
    """
    raw: dict[str, Any] = copy.deepcopy(dict(data))
    overrides, problems = envmod.env_overrides(Config, env)
    origin = envmod.apply(raw, overrides)
    base = (base_dir or Path.cwd()).absolute()
    try:
        cfg = Config.model_validate(raw, context={BASE_DIR_CONTEXT: base})
    except ValidationError as exc:
        raise ConfigError(problems + _validation_problems(exc, origin)) from None
    problems += cross_field_problems(cfg)
    creds = env.get(CREDENTIALS_ENV)
    _attach_credentials(cfg, Path(creds) if creds else None)
    if check_files:
        problems += file_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] = os.environ,
    *,
    check_files: bool = False,
) -> Config:
    """Read, override from `IDSYNC_*` variables in `env`, and validate the configuration.

    `path` None means `$IDSYNC_CONFIG`, else /etc/idsync/idsync.toml. With `check_files`,
    also prove every referenced secret and CA file readable (secret values are read and
    discarded). Raises `ConfigError` listing every problem found.
    """
    file = config_path(path, env)
    return parse_config(_read_toml(file), env, base_dir=file.parent, check_files=check_files)
