"""`IDSYNC_*` environment overrides.

Rule: `IDSYNC_` + the TOML path in upper case with `__` (double underscore) between
levels. `IDSYNC_STORE__DSN` sets `[store] dsn`, `IDSYNC_SOURCE__LDAP__URLS` sets
`[source.ldap] urls`. Keys are matched case-insensitively. Variables without `__`
(e.g. `IDSYNC_CONFIG`) are not overrides. Values are text converted like TOML values
would be: numbers and booleans (`true`/`false`) by the setting's type; lists either as
JSON (`["ldaps://a", "ldaps://b"]`) or comma-separated (`ldaps://a,ldaps://b`).
An override that names no setting is a problem, like an unknown key in the file.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from idsync.config.errors import ConfigProblem

PREFIX = "IDSYNC_"
SEPARATOR = "__"


def _strip(annotation: Any) -> Any:
    """`Annotated[X, ...] | None` → X."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else annotation
            if len(args) != 1:
                return annotation
        else:
            return annotation


def _field(model: type[BaseModel], key: str) -> tuple[str, Any] | None:
    """The TOML key and stripped type of `key` in `model`, or None."""
    for name, info in model.model_fields.items():
        toml_key = info.alias or name
        if toml_key.lower() == key:
            return toml_key, _strip(info.annotation)
    return None


def _parse(raw: str, annotation: Any) -> Any:
    if typing.get_origin(annotation) is list:
        text = raw.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return raw


def env_overrides(
    root: type[BaseModel], env: Mapping[str, str]
) -> tuple[list[tuple[list[str], Any, str]], list[ConfigProblem]]:
    """Parse overrides from `env`: ([(toml path keys, value, variable)], problems)."""
    found: list[tuple[list[str], Any, str]] = []
    problems: list[ConfigProblem] = []
    for var in sorted(env):
        if not var.upper().startswith(PREFIX) or SEPARATOR not in var:
            continue
        segments = var[len(PREFIX) :].lower().split(SEPARATOR)
        model: Any = root
        keys: list[str] = []
        annotation: Any = None
        for seg in segments:
            hit = _field(model, seg) if isinstance(model, type) and issubclass(model, BaseModel) else None
            if hit is None:
                where = ".".join([*keys, seg])
                problems.append(ConfigProblem(var, f"names no setting ({where} does not exist)"))
                break
            keys.append(hit[0])
            model = annotation = hit[1]
        else:
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                problems.append(ConfigProblem(var, f"names the section [{'.'.join(keys)}], not a setting"))
                continue
            try:
                found.append((keys, _parse(env[var], annotation), var))
            except json.JSONDecodeError as exc:
                problems.append(ConfigProblem(var, f"is not a JSON list: {exc.msg} at column {exc.colno}"))
    return found, problems


def apply(data: dict[str, Any], overrides: list[tuple[list[str], Any, str]]) -> dict[str, str]:
    """Set each override in `data` (in place); return {toml path: variable} for messages."""
    origin: dict[str, str] = {}
    for keys, value, var in overrides:
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[keys[-1]] = value
        origin[".".join(keys)] = var
    return origin
