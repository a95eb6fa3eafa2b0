"""Validating request bodies against the user/group schemas and rendering objects as Graph does."""

from __future__ import annotations

import re
from typing import Any

from idsync.emulator.config import EmulatorConfig
from idsync.emulator.errors import (
    GraphError,
    invalid_value,
    read_only,
    unknown_extension,
    unknown_property,
)
from idsync.emulator.model import (
    RESOURCE,
    TYPE_NAME,
    DirObject,
    default_select,
    readonly,
    writable,
)

_EXT = re.compile(r"^extension_[0-9a-fA-F]{32}_[A-Za-z0-9_]+$")
_OPEXT = frozenset(f"extensionAttribute{i}" for i in range(1, 16))


def extension_names(cfg: EmulatorConfig) -> set[str]:
    """The registered directory extension properties (same set for users and groups)."""
    return {cfg.extension_name(s) for s in cfg.extensions}


def check_select(kind: str, select: list[str] | None, cfg: EmulatorConfig, relations: frozenset[str]) -> None:
    """400 for a $select naming a property the type does not have."""
    if select is None:
        return
    exts = extension_names(cfg)
    known = writable(kind).keys() | readonly(kind).keys()
    for name in select:
        if name in known or name in exts or name in relations:
            continue
        raise GraphError(
            400,
            "BadRequest",
            f"Parsing OData Select and Expand failed: Could not find a property named '{name}' on type "
            f"'{TYPE_NAME[kind]}'.",
        )


def render(obj: DirObject, select: list[str] | None) -> dict[str, Any]:
    """The object as Graph shows it: the default property set, or `id` plus the $select."""
    props = obj.props
    names = default_select(obj.kind) if select is None else select
    out: dict[str, Any] = {"id": obj.id}
    for n in names:
        if n == "passwordProfile" or n in ("members", "owners", "manager"):
            continue
        v = props.get(n)
        if v is None and (
            n in ("businessPhones", "proxyAddresses", "groupTypes", "otherMails", "imAddresses")
        ):
            v = []
        out[n] = v
    return out


def _check_type(kind: str, name: str, ptype: str, value: Any) -> None:
    if value is None:
        return
    ok = True
    if ptype == "bool":
        ok = isinstance(value, bool)
    elif ptype == "str":
        ok = isinstance(value, str)
    elif ptype == "strs":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif ptype == "pwd" or ptype == "opext":
        ok = isinstance(value, dict)
    if not ok:
        raise invalid_value(name, RESOURCE[kind])


def clean_body(kind: str, body: dict[str, Any], cfg: EmulatorConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a POST/PATCH body into (property values, `x@odata.bind` references), strictly.

    Instance annotations (`@odata.type` and friends) are accepted and dropped; unknown or
    read-only properties, unregistered extensions and wrongly typed values are Graph's 400s.
    """
    props: dict[str, Any] = {}
    binds: dict[str, Any] = {}
    w, ro = writable(kind), readonly(kind)
    exts = extension_names(cfg)
    for name, value in body.items():
        if name.endswith("@odata.bind"):
            binds[name[: -len("@odata.bind")]] = value
            continue
        if name.startswith("@") or "@odata." in name:
            continue
        if name in w:
            _check_type(kind, name, w[name], value)
            if w[name] == "pwd" and value is not None:
                for k in value:
                    if k not in (
                        "password",
                        "forceChangePasswordNextSignIn",
                        "forceChangePasswordNextSignInWithMfa",
                    ) and not k.startswith("@"):
                        raise unknown_property(k, "microsoft.graph.passwordProfile")
            if w[name] == "opext" and value is not None:
                for k, v in value.items():
                    if k.startswith("@"):
                        continue
                    if k not in _OPEXT:
                        raise unknown_property(k, "microsoft.graph.onPremisesExtensionAttributes")
                    if v is not None and not isinstance(v, str):
                        raise invalid_value(name, RESOURCE[kind])
            props[name] = value
        elif name in ro:
            raise read_only(name)
        elif name in exts:
            if value is not None and not isinstance(value, (str, int, bool)):
                raise invalid_value(name, RESOURCE[kind])
            if isinstance(value, str) and len(value) > 256:
                raise invalid_value(name, RESOURCE[kind])
            props[name] = value
        elif _EXT.match(name):
            raise unknown_extension(name)
        else:
            raise unknown_property(name, TYPE_NAME[kind])
    return props, binds
