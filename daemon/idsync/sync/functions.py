"""The helper functions attribute-flow expressions can call, on top of CEL's own.

Every helper accepts null (a missing source attribute) and returns null for it, the way Entra
Connect's expression functions do, so `lower(source.mail)` of a user without mail is null, not an
error.
"""

from __future__ import annotations

import base64
import re
import unicodedata
import uuid
from collections.abc import Callable
from typing import Any

from cel import stdlib


def immutable_id(guid: str | None) -> str | None:
    """AD objectGUID (canonical text) → base64 of its 16 bytes in Windows order (Entra ImmutableId)."""
    if guid is None:
        return None
    return base64.b64encode(uuid.UUID(str(guid)).bytes_le).decode("ascii")


def uuid_base64(value: str | None) -> str | None:
    """A UUID (e.g. OpenLDAP entryUUID) → base64 of its 16 bytes in RFC 4122 (network) order."""
    if value is None:
        return None
    return base64.b64encode(uuid.UUID(str(value)).bytes).decode("ascii")


def lower(value: str | None) -> str | None:
    return None if value is None else str(value).lower()


def upper(value: str | None) -> str | None:
    return None if value is None else str(value).upper()


def trim_(value: str | None) -> str | None:
    return None if value is None else str(value).strip()


def split_(value: str | None, sep: str) -> list[str] | None:
    return None if value is None else str(value).split(sep)


def join_(values: list[Any] | None, sep: str = "") -> str | None:
    """Join the non-null, non-empty items; null when nothing is left."""
    if values is None:
        return None
    parts = [str(v) for v in values if v is not None and v != ""]
    return sep.join(parts) if parts else None


def coalesce(*values: Any) -> Any:
    """The first argument that is neither null nor an empty string or list."""
    for v in values:
        if v is not None and v != "" and v != []:
            return v
    return None


def bit_set(value: Any, bit: int) -> bool | None:
    """True when `bit` (a mask such as 2 for ACCOUNTDISABLE) is set in an integer attribute.

    AD writes flags as signed 32-bit decimal text; they are read as unsigned.
    """
    if value is None:
        return None
    return (int(str(value)) & 0xFFFFFFFF) & int(bit) != 0


def local_part(value: str | None) -> str | None:
    """The part of an address before '@' (the whole value when there is none)."""
    return None if value is None else str(value).split("@", 1)[0]


def left(value: str | None, n: int) -> str | None:
    return None if value is None else str(value)[: int(n)]


def replace_(value: str | None, old: str, new: str) -> str | None:
    return None if value is None else str(value).replace(old, new)


# Graph's mailNickname: at most 64 characters (resources/user.md and resources/group.md: "Maximum
# length is 64 characters"); for groups ASCII 0-127 except @ ( ) \ [ ] " ; : . < > , and space
# (learn.microsoft.com/graph/api/group-post-groups, docs-contrib api-reference/v1.0/api/
# group-post-groups.md: "These characters can't be used in the mailNickName: `@()\[]";:.<>,SPACE`").
# Graph documents no character list for users; the same set applies except the dot, which user
# aliases (`ann.lee`) commonly carry and Entra ID accepts.
MAIL_NICKNAME_MAX = 64
_NICKNAME_FORBIDDEN = frozenset('@()\\[]";:.<>, ')
_USER_NICKNAME_FORBIDDEN = _NICKNAME_FORBIDDEN - {"."}


def mail_nickname(value: str | None, object_type: str = "group") -> str | None:
    """`value` made into a mailNickname Graph accepts: accents folded to ASCII (`Müller` →
    `Muller`), every other non-ASCII, control or forbidden character dropped (`Sales Team (EU)` →
    `SalesTeamEU`), cut to 64 characters; null when nothing is left. Pass `object_type` ("user")
    to keep dots in user aliases."""
    if value is None:
        return None
    bad = _USER_NICKNAME_FORBIDDEN if object_type == "user" else _NICKNAME_FORBIDDEN
    folded = unicodedata.normalize("NFKD", str(value))
    kept = "".join(c for c in folded if 32 < ord(c) < 127 and c not in bad)
    return kept[:MAIL_NICKNAME_MAX] or None


def take(values: list[Any] | None, n: int) -> list[Any] | None:
    """The first `n` non-empty items of a list; null when there are none.

    For `businessPhones`: a string collection of which Graph keeps only one number ("only one
    number can be set for this property", docs-contrib api-reference/v1.0/resources/user.md and
    api/user-update.md).
    """
    if values is None:
        return None
    kept = [v for v in values if v is not None and v != ""][: int(n)]
    return kept or None


def rdn(dn: str | None) -> str | None:
    """The value of a DN's first component (`CN=Ann Lee,OU=x` → `Ann Lee`)."""
    if dn is None:
        return None
    first = str(dn).split(",", 1)[0]
    return first.split("=", 1)[1] if "=" in first else first


HELPERS: dict[str, Callable[..., Any]] = {
    "immutable_id": immutable_id,
    "uuid_base64": uuid_base64,
    "lower": lower,
    "upper": upper,
    "trim": trim_,
    "split": split_,
    "join": join_,
    "coalesce": coalesce,
    "bit_set": bit_set,
    "local_part": local_part,
    "left": left,
    "replace": replace_,
    "rdn": rdn,
    "mail_nickname": mail_nickname,
    "take": take,
}

# What an expression may call: our helpers, cel-python's string/list libraries, CEL's own.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    **{k: v for lib in ("strings", "lists") for k, v in stdlib.EXTENSIONS[lib].items()},
    **HELPERS,
}
CEL_BUILTINS = frozenset(
    {
        "size",
        "has",
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        "int",
        "uint",
        "double",
        "string",
        "bytes",
        "bool",
        "timestamp",
        "duration",
        "all",
        "exists",
        "exists_one",
        "map",
        "filter",
        "type",
        "dyn",
    }
)


_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*$")


def unknown_functions(names: list[str]) -> list[str]:
    """The function names an expression calls that neither CEL nor idsync provides."""
    return [n for n in names if _NAME.match(n) and n not in FUNCTIONS and n not in CEL_BUILTINS]
