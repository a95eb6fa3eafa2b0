"""LDAP-style attribute conditions for scoping, evaluated against an imported source object.

Supports the RFC 4515 forms operators know: `&`, `|`, `!`, equality, presence (`attr=*`),
substrings (`cn=Ann*`), `>=`, `<=`, and AD's bitwise matching rules
(`:1.2.840.113556.1.4.803:=` AND, `:1.2.840.113556.1.4.804:=` OR). Names and values compare
case-insensitively (as with AD's default matching); `>=`/`<=` compare numerically when both
sides are integers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

Attrs = Mapping[str, Sequence[str]]
Test = Callable[[Attrs], bool]

_BIT_AND = "1.2.840.113556.1.4.803"
_BIT_OR = "1.2.840.113556.1.4.804"
_ITEM = re.compile(r"^([A-Za-z0-9][A-Za-z0-9.;-]*)(?::([0-9.]+):)?(>=|<=|~=|=)(.*)$", re.DOTALL)


class FilterSyntaxError(ValueError):
    """The filter text is not a valid LDAP filter; the message says where."""


@dataclass(frozen=True)
class LdapFilter:
    """A parsed filter: call `matches(attrs)` with lower-case attribute names."""

    text: str
    test: Test

    def matches(self, attrs: Attrs) -> bool:
        return self.test(attrs)


def _unescape(value: str) -> str:
    return re.sub(r"\\([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)


def _as_int(v: str) -> int | None:
    try:
        return int(v)
    except ValueError:
        return None


def _item(text: str) -> Test:
    m = _ITEM.match(text)
    if not m:
        raise FilterSyntaxError(f"cannot read condition ({text})")
    name, rule, op, raw = m.group(1).lower(), m.group(2), m.group(3), m.group(4)
    if rule:
        if rule not in (_BIT_AND, _BIT_OR) or op != "=":
            raise FilterSyntaxError(f"unsupported matching rule {rule} in ({text})")
        mask = _as_int(raw)
        if mask is None:
            raise FilterSyntaxError(f"bitwise match needs an integer mask in ({text})")
        want_all = rule == _BIT_AND

        def bits(attrs: Attrs) -> bool:
            for v in attrs.get(name, ()):
                n = _as_int(v)
                if n is None:
                    continue
                n &= 0xFFFFFFFF
                if (n & mask == mask) if want_all else (n & mask != 0):
                    return True
            return False

        return bits
    if op == "=" and raw == "*":
        return lambda attrs: bool(attrs.get(name))
    if op in (">=", "<="):
        bound = _unescape(raw)
        ibound = _as_int(bound)

        def order(attrs: Attrs) -> bool:
            for v in attrs.get(name, ()):
                iv = _as_int(v)
                if ibound is not None and iv is not None:
                    if (iv >= ibound) if op == ">=" else (iv <= ibound):
                        return True
                elif (v.lower() >= bound.lower()) if op == ">=" else (v.lower() <= bound.lower()):
                    return True
            return False

        return order
    if "*" in raw:
        parts = [re.escape(_unescape(p).lower()) for p in raw.split("*")]
        pattern = re.compile("^" + ".*".join(parts) + "$", re.DOTALL)
        return lambda attrs: any(pattern.match(v.lower()) for v in attrs.get(name, ()))
    want = _unescape(raw).lower()
    return lambda attrs: any(v.lower() == want for v in attrs.get(name, ()))


def _parse(text: str, pos: int) -> tuple[Test, int]:
    if pos >= len(text) or text[pos] != "(":
        raise FilterSyntaxError(f"expected '(' at position {pos + 1}")
    pos += 1
    if pos < len(text) and text[pos] in "&|!":
        op = text[pos]
        pos += 1
        subs: list[Test] = []
        while pos < len(text) and text[pos] == "(":
            sub, pos = _parse(text, pos)
            subs.append(sub)
        if pos >= len(text) or text[pos] != ")":
            raise FilterSyntaxError(f"expected ')' at position {pos + 1}")
        if op == "!":
            if len(subs) != 1:
                raise FilterSyntaxError("'!' takes exactly one condition")
            inner = subs[0]
            return (lambda attrs: not inner(attrs)), pos + 1
        if not subs:
            raise FilterSyntaxError(f"'{op}' needs at least one condition")
        if op == "&":
            return (lambda attrs: all(s(attrs) for s in subs)), pos + 1
        return (lambda attrs: any(s(attrs) for s in subs)), pos + 1
    end = pos
    while end < len(text) and text[end] != ")":
        if text[end] == "(":
            raise FilterSyntaxError(f"unexpected '(' at position {end + 1} (escape it as \\28)")
        end += 1
    if end >= len(text):
        raise FilterSyntaxError("missing ')' at the end")
    return _item(text[pos:end]), end + 1


def parse(text: str) -> LdapFilter:
    """Parse an LDAP filter, or raise FilterSyntaxError naming the problem."""
    stripped = text.strip()
    test, end = _parse(stripped, 0)
    if end != len(stripped):
        raise FilterSyntaxError(f"unexpected text after the filter at position {end + 1}")
    return LdapFilter(stripped, test)
