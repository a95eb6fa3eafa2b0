"""Validating request bodies against the user/group schemas and rendering objects as Graph does."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from idsync.emulator.errors import (
    GraphError,
    extensions_not_available,
    invalid_value,
    read_only,
    unknown_extension,
    unknown_property,
)
from idsync.emulator.model import (
    RESOURCE,
    TYPE_NAME,
    DirObject,
    ExtensionProperty,
    default_select,
    readonly,
    writable,
)

Extensions = Mapping[str, ExtensionProperty]

_EXT = re.compile(r"^extension_[0-9a-fA-F]{32}_[A-Za-z0-9_]+$")
_OPEXT = frozenset(f"extensionAttribute{i}" for i in range(1, 16))


def extension_names(exts: Extensions, kind: str) -> set[str]:
    """The directory extensions registered for `kind` ("user" or "group")."""
    target = RESOURCE[kind]
    return {name for name, e in exts.items() if target in e.target_objects}


def check_select(
    kind: str,
    select: list[str] | None,
    exts: Extensions,
    relations: frozenset[str],
    ignore_unregistered: bool = False,
) -> list[str] | None:
    """The $select to render, or 400 for a property the type does not have.

    Microsoft documents neither an error nor silence for an extension nobody registered (for
    this type): by default the emulator answers as for any unknown property (OData's select
    parser error); with `ignore_unregistered` (`--unregistered-extension-query ignore`) it leaves
    the name out of the answer instead.
    """
    if select is None:
        return None
    registered = extension_names(exts, kind)
    known = writable(kind).keys() | readonly(kind).keys()
    out: list[str] = []
    for name in select:
        if name in known or name in registered or name in relations:
            out.append(name)
            continue
        if ignore_unregistered and _EXT.match(name):
            continue
        raise GraphError(
            400,
            "BadRequest",
            f"Parsing OData Select and Expand failed: Could not find a property named '{name}' on type "
            f"'{TYPE_NAME[kind]}'.",
        )
    return out


def render(obj: DirObject, select: list[str] | None) -> dict[str, Any]:
    """The object as Graph shows it: the default property set, or `id` plus the $select."""
    props = obj.props
    names = default_select(obj.kind) if select is None else select
    out: dict[str, Any] = {"id": obj.id}
    for n in names:
        if n in ("members", "owners", "manager"):
            continue
        if n == "passwordProfile":
            # user.md: passwordProfile is "Returned only on $select"; the password itself is never
            # returned (write-only: the emulator does not even keep it), so it reads as null.
            pp = props.get(n)
            out[n] = None if pp is None else {**pp, "password": None}
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


def _extension_value(kind: str, ext: ExtensionProperty, value: Any) -> None:
    """400 unless `value` fits the extension's dataType (limits from
    docs-contrib: api-reference/v1.0/api/application-post-extensionproperty.md)."""
    if value is None:
        return
    values = value if ext.is_multi_valued and isinstance(value, list) else [value]
    if ext.is_multi_valued != isinstance(value, list):
        raise invalid_value(ext.name, RESOURCE[kind])
    for v in values:
        t = ext.data_type
        ok = True
        if t == "String":
            ok = isinstance(v, str) and len(v) <= 256
        elif t == "Boolean":
            ok = isinstance(v, bool)
        elif t in ("Integer", "LargeInteger"):
            bits = 31 if t == "Integer" else 63
            ok = isinstance(v, int) and not isinstance(v, bool) and -(2**bits) <= v < 2**bits
        elif t == "DateTime":
            try:
                ok = isinstance(v, str) and datetime.fromisoformat(v.replace("Z", "+00:00")) is not None
            except ValueError:
                ok = False
        elif t == "Binary":
            try:
                ok = isinstance(v, str) and len(base64.b64decode(v, validate=True)) <= 256
            except (binascii.Error, ValueError):
                ok = False
        if not ok:
            raise invalid_value(ext.name, RESOURCE[kind])


def clean_body(kind: str, body: dict[str, Any], exts: Extensions) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a POST/PATCH body into (property values, `x@odata.bind` references), strictly.

    Instance annotations (`@odata.type` and friends) are accepted and dropped; unknown or
    read-only properties, unregistered extensions and wrongly typed values are Graph's 400s.
    """
    props: dict[str, Any] = {}
    binds: dict[str, Any] = {}
    w, ro = writable(kind), readonly(kind)
    registered = extension_names(exts, kind)
    missing: list[str] = []
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
        elif name in registered:
            _extension_value(kind, exts[name], value)
            props[name] = value
        elif _EXT.match(name):
            missing.append(name)
        elif name.startswith("extension_"):
            raise unknown_extension(name)
        else:
            raise unknown_property(name, TYPE_NAME[kind])
    if missing:
        raise extensions_not_available(missing)
    return props, binds
