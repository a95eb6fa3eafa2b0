"""OData query options: $select, $filter, $top, and opaque paging/delta tokens."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from idsync.emulator.errors import GraphError, bad_request


def parse_select(query: Mapping[str, str]) -> list[str] | None:
    """`$select=a,b` -> ["a", "b"]; None when absent."""
    raw = query.get("$select")
    if raw is None:
        return None
    names = [s.strip() for s in raw.split(",") if s.strip()]
    if not names:
        raise GraphError(400, "BadRequest", "Invalid $select: empty property list.")
    return names


def parse_top(query: Mapping[str, str], default: int, maximum: int) -> int:
    """`$top` within Graph's bounds (1..999 for users and groups)."""
    raw = query.get("$top")
    if raw is None:
        return default
    try:
        top = int(raw)
    except ValueError:
        raise bad_request(f"Invalid page size specified: '{raw}'.", code="BadRequest") from None
    if top < 1 or top > maximum:
        raise bad_request(
            f"Invalid page size specified: '{raw}'. Must be between 1 and {maximum} inclusive.",
            code="Request_UnsupportedQuery",
        )
    return top


@dataclass(frozen=True)
class Clause:
    """One `prop eq 'value'`, `prop in ('a','b')` or `startswith(prop,'v')` term of a $filter."""

    prop: str
    values: tuple[Any, ...]
    op: str = "eq"


# prop eq 'v' | prop eq true | prop in ('a', 'b')
_TOKEN = re.compile(
    r"\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<str>'(?:[^']|'')*')|(?P<kw>eq|in|and|or)\b|(?P<word>[A-Za-z0-9_./]+)|(?P<comma>,))",
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise _bad_filter(text)
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _bad_filter(text: str) -> GraphError:
    return bad_request(f"Invalid filter clause: syntax error in '{text}'.", code="BadRequest")


def parse_filter(text: str) -> tuple[str, list[Clause]]:
    """Parse the $filter subset Graph's directory supports without advanced queries: `eq`, `in`
    and `startswith(prop,'v')` terms joined by all-`or` or all-`and`.

    Returns ("or" | "and", clauses). Anything else is a 400, as Graph answers an unsupported
    filter.
    """
    toks = _tokens(text)
    clauses: list[Clause] = []
    joiner = ""
    i = 0

    def literal(tok: tuple[str, str]) -> Any:
        kind, val = tok
        if kind == "str":
            return val[1:-1].replace("''", "'")
        if kind == "word" and val in ("true", "false"):
            return val == "true"
        if kind == "word" and val == "null":
            return None
        if kind == "word" and re.fullmatch(r"-?\d+", val):
            return int(val)
        raise _bad_filter(text)

    while i < len(toks):
        if toks[i][0] != "word":
            raise _bad_filter(text)
        prop = toks[i][1]
        if i + 2 >= len(toks):
            raise _bad_filter(text)
        op = toks[i + 1]
        if prop == "startswith" and op[0] == "lp":
            # startswith ( prop , 'value' )
            if (
                i + 6 > len(toks)
                or toks[i + 2][0] != "word"
                or toks[i + 3][0] != "comma"
                or toks[i + 5][0] != "rp"
            ):
                raise _bad_filter(text)
            value = literal(toks[i + 4])
            if not isinstance(value, str):
                raise _bad_filter(text)
            clauses.append(Clause(toks[i + 2][1], (value,), "startswith"))
            i += 6
        elif op == ("kw", "eq"):
            clauses.append(Clause(prop, (literal(toks[i + 2]),)))
            i += 3
        elif op == ("kw", "in"):
            if toks[i + 2][0] != "lp":
                raise _bad_filter(text)
            j = i + 3
            vals: list[Any] = []
            while j < len(toks) and toks[j][0] != "rp":
                if toks[j][0] == "comma":
                    j += 1
                    continue
                vals.append(literal(toks[j]))
                j += 1
            if j >= len(toks):
                raise _bad_filter(text)
            clauses.append(Clause(prop, tuple(vals)))
            i = j + 1
        else:
            raise _bad_filter(text)
        if i < len(toks):
            kind, val = toks[i]
            if kind != "kw" or val not in ("and", "or") or (joiner and joiner != val):
                raise _bad_filter(text)
            joiner = val
            i += 1
            if i >= len(toks):
                raise _bad_filter(text)
    if not clauses:
        raise _bad_filter(text)
    return joiner or "and", clauses


def encode_token(data: dict[str, Any]) -> str:
    """An opaque, URL-safe token (Graph's tokens are opaque too)."""
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def decode_token(token: str) -> dict[str, Any] | None:
    """The dict inside a token, or None if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
