"""Directory values to the canonical text the source space stores.

Binary attributes become text once, here: objectGUID → canonical GUID string (also the anchor),
ImmutableId → base64 of the raw GUID bytes (Entra's sourceAnchor), objectSid → S-1-5-… . Any other
value must be UTF-8; a value that is not, or that is larger than the configured limit, makes the
whole entry a `BadEntry` (quarantined by the importer, never half-imported).
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ldap3.utils.dn import parse_dn

from idsync.model import ObjectType, SourceObject
from idsync.source.errors import BadEntry

# Attributes that are binary in AD/OpenLDAP and are stored as base64 unless handled specially.
BINARY_ATTRIBUTES = frozenset(
    {
        "objectguid",
        "objectsid",
        "sidhistory",
        "tokengroups",
        "ms-ds-consistencyguid",
        "msexchmailboxguid",
        "thumbnailphoto",
        "jpegphoto",
        "usercertificate",
        "usercertificate;binary",
        "cacertificate",
        "ntsecuritydescriptor",
        "logonhours",
    }
)
GUID_ATTRIBUTES = frozenset({"objectguid", "ms-ds-consistencyguid", "msexchmailboxguid"})
SID_ATTRIBUTES = frozenset({"objectsid", "sidhistory", "tokengroups"})
MEMBER = "member"

_EXT_DN = re.compile(r"^<GUID=([^>]*)>;(?:<SID=([^>]*)>;)?(.*)$", re.DOTALL)


def guid_str(raw: bytes) -> str:
    """AD objectGUID bytes (little-endian first three fields) → canonical lower-case GUID string."""
    if len(raw) != 16:
        raise ValueError(f"a GUID has 16 bytes, this value has {len(raw)}")
    return str(uuid.UUID(bytes_le=raw))


def immutable_id(raw: bytes) -> str:
    """Entra ImmutableId: base64 of the raw GUID bytes in AD order (not RFC 4122 order)."""
    return base64.b64encode(raw).decode("ascii")


def immutable_id_of_guid(guid: str) -> str:
    """ImmutableId from a canonical GUID string."""
    return immutable_id(uuid.UUID(guid).bytes_le)


def sid_str(raw: bytes) -> str:
    """Binary SID → S-R-I-S-S… string form (MS-DTYP 2.4.2.2)."""
    if len(raw) < 8 or raw[0] != 1 or len(raw) != 8 + 4 * raw[1]:
        raise ValueError(f"not a binary SID ({len(raw)} bytes)")
    authority = int.from_bytes(raw[2:8], "big")
    subs = [int.from_bytes(raw[8 + 4 * i : 12 + 4 * i], "little") for i in range(raw[1])]
    return "S-1-" + "-".join(str(x) for x in [authority, *subs])


@dataclass(frozen=True, slots=True)
class ExtendedDn:
    """A DN as the extended-DN control returns it: `<GUID=…>;<SID=…>;CN=…`."""

    guid: str | None
    sid: str | None
    dn: str


def parse_extended_dn(value: str | bytes) -> ExtendedDn:
    """Split an extended DN into GUID, SID and plain DN (a plain DN passes through)."""
    text = value.decode("utf-8") if isinstance(value, bytes | bytearray) else value
    m = _EXT_DN.match(text)
    if not m:
        return ExtendedDn(None, None, text)
    guid = m.group(1)
    if len(guid) == 32 and "-" not in guid:  # hex form (option 0): raw byte order
        guid = guid_str(bytes.fromhex(guid))
    return ExtendedDn(guid.lower(), m.group(2), m.group(3))


def member_ref(value: str | bytes) -> str:
    """A member value → the member's anchor when the server gave its GUID, else `dn:<dn>`."""
    ext = parse_extended_dn(value)
    return ext.guid if ext.guid else "dn:" + ext.dn


def unescape_dn_value(value: str) -> str:
    """An RDN value without its DN escaping (`\\,` and `\\2C` both become `,`)."""
    out = bytearray()
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            pair = value[i + 1 : i + 3]
            if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                out += bytes.fromhex(pair)
                i += 3
                continue
            out += value[i + 1].encode()
            i += 2
            continue
        out += ch.encode()
        i += 1
    return out.decode("utf-8", "replace")


def first_rdn(dn: str) -> tuple[str, str] | None:
    """The naming attribute (lower case) and its unescaped value, e.g. ("cn", "Smith, John")."""
    parts = parse_dn(dn)
    if not parts:
        return None
    return parts[0][0].lower(), unescape_dn_value(parts[0][1])


def split_dn(dn: str) -> list[str]:
    """RDNs of a DN, lower-cased and trimmed, honouring backslash escapes."""
    parts: list[str] = []
    cur: list[str] = []
    escaped = False
    for ch in dn:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\":
            cur.append(ch)
            escaped = True
        elif ch in ",;":
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if cur or parts:
        parts.append("".join(cur).strip())
    return [re.sub(r"\s*=\s*", "=", p, count=1).lower() for p in parts if p]


def is_under(dn: str, base: str) -> bool:
    """True when `dn` equals `base` or lies below it (case-insensitive, RDN-wise)."""
    d, b = split_dn(dn), split_dn(base)
    return len(d) >= len(b) and d[len(d) - len(b) :] == b


@dataclass(frozen=True)
class Normalizer:
    """Turns raw LDAP attribute values into a `SourceObject` for one directory kind."""

    kind: str  # "ad" | "openldap"
    attributes: frozenset[str]  # lower-case names stored in attrs
    max_value_bytes: int = 1_048_576

    def anchor_of(self, dn: str, raw: Mapping[str, Sequence[bytes]], ext: ExtendedDn | None) -> str:
        """The entry's immutable anchor (objectGUID / entryUUID), or BadEntry."""
        if self.kind == "ad":
            values = raw.get("objectguid")
            if values:
                try:
                    return guid_str(bytes(values[0]))
                except ValueError as exc:
                    raise BadEntry(dn, f"objectGUID is malformed: {exc}") from None
            if ext is not None and ext.guid:
                return ext.guid
            raise BadEntry(dn, "entry has no objectGUID (no anchor)")
        values = raw.get("entryuuid")
        if not values:
            raise BadEntry(dn, "entry has no entryUUID (no anchor)")
        try:
            return str(uuid.UUID(bytes(values[0]).decode("ascii")))
        except (ValueError, UnicodeDecodeError):
            raise BadEntry(dn, f"entryUUID {bytes(values[0])!r} is not a UUID") from None

    def values(self, dn: str, name: str, raw_values: Iterable[bytes]) -> tuple[str, ...]:
        """Normalize the values of one attribute (lower-case `name`), or raise BadEntry."""
        out: list[str] = []
        for i, raw in enumerate(raw_values):
            raw = bytes(raw)
            if len(raw) > self.max_value_bytes:
                raise BadEntry(
                    dn,
                    f"attribute {name} value {i} is {len(raw)} bytes, over the {self.max_value_bytes} limit",
                )
            try:
                if name in GUID_ATTRIBUTES and len(raw) == 16:
                    out.append(guid_str(raw))
                elif name in SID_ATTRIBUTES:
                    out.append(sid_str(raw))
                elif name in BINARY_ATTRIBUTES:
                    out.append(base64.b64encode(raw).decode("ascii"))
                else:
                    text = raw.decode("utf-8")
                    if text.startswith("<GUID="):  # a DN-valued attribute under the extended-DN control
                        text = parse_extended_dn(text).dn
                    out.append(text)
            except (ValueError, UnicodeDecodeError) as exc:
                raise BadEntry(dn, f"attribute {name} value {i} cannot be decoded: {exc}") from None
        return tuple(out)

    def attrs(self, dn: str, raw: Mapping[str, Sequence[bytes]]) -> dict[str, tuple[str, ...] | None]:
        """Normalized stored attributes present in `raw`; an attribute with no values maps to None."""
        out: dict[str, tuple[str, ...] | None] = {}
        for name, vals in raw.items():
            if name in self.attributes and name != MEMBER:
                out[name] = self.values(dn, name, vals) or None
        return out

    def complete(self, attrs: Mapping[str, tuple[str, ...] | None]) -> dict[str, tuple[str, ...]]:
        """Drop cleared attributes and add the derived ones (immutableid)."""
        done = {k: v for k, v in attrs.items() if v}
        source = done.get("ms-ds-consistencyguid") or done.get("objectguid")
        if self.kind == "ad" and source:
            try:
                done["immutableid"] = (immutable_id_of_guid(source[0]),)
            except ValueError:
                done["immutableid"] = (source[0],)
        return done

    def to_object(
        self,
        dn_value: str,
        raw: Mapping[str, Sequence[bytes]],
        object_type: ObjectType,
        members: Sequence[bytes] | None = None,
    ) -> SourceObject:
        """A complete entry (full import, BASE read, syncrepl add) → SourceObject, or BadEntry.

        `raw` must have lower-case keys; `members` are the group's complete member values.
        """
        ext = parse_extended_dn(dn_value)
        dn = ext.dn
        anchor = self.anchor_of(dn, raw, ext)
        try:
            attrs = self.complete(self.attrs(dn, raw))
            refs: tuple[str, ...] | None = None
            if object_type == "group":
                refs = tuple(dict.fromkeys(self.member_refs(dn, members or ())))
        except BadEntry as exc:
            raise BadEntry(dn, exc.reason, anchor) from None
        return SourceObject(anchor=anchor, object_type=object_type, dn=dn, attrs=attrs, members=refs)

    def member_refs(self, dn: str, values: Iterable[bytes]) -> list[str]:
        """Member values → member references (anchors where the extended DN gives the GUID)."""
        out = []
        for i, v in enumerate(values):
            try:
                out.append(member_ref(bytes(v)))
            except (ValueError, UnicodeDecodeError) as exc:
                raise BadEntry(dn, f"member value {i} cannot be decoded: {exc}") from None
        return out


def lower_keys(raw: Mapping[str, Sequence[bytes]]) -> dict[str, Sequence[bytes]]:
    """Attribute names are case-insensitive; the source space keys them in lower case."""
    return {k.lower(): v for k, v in raw.items()}
