"""A minimal BER reader and writer: enough for the few LDAP controls ldap3 leaves undecoded.

ldap3 hands back the raw value of controls and intermediate responses it does not know
(RFC 4533 sync state, sync info, sync done). Reading them needs only tag-length-value walking.
"""

from __future__ import annotations

from dataclasses import dataclass


class BerError(ValueError):
    """The bytes are not the BER structure that was expected."""


@dataclass(frozen=True, slots=True)
class Tlv:
    """One BER element: its tag byte, its content, and whether it is constructed."""

    tag: int
    value: bytes

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)

    def children(self) -> list[Tlv]:
        """The elements inside a constructed element."""
        return read_all(self.value)

    def as_int(self) -> int:
        """The content as a signed (two's complement) integer, as BER INTEGER/ENUMERATED hold it."""
        return int.from_bytes(self.value, "big", signed=True) if self.value else 0

    def as_bool(self) -> bool:
        return any(self.value)


def read_one(data: bytes, pos: int = 0) -> tuple[Tlv, int]:
    """Read the element starting at `pos`; return it and the position after it."""
    if pos + 2 > len(data):
        raise BerError(f"truncated BER element at offset {pos}")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise BerError(f"multi-byte BER tags are not used by LDAP (offset {pos})")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise BerError(f"bad BER length at offset {pos - 1}")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    end = pos + length
    if end > len(data):
        raise BerError(f"BER element at offset {pos} runs past the end ({length} bytes)")
    return Tlv(tag, bytes(data[pos:end])), end


def read_all(data: bytes) -> list[Tlv]:
    """All consecutive elements in `data`."""
    out: list[Tlv] = []
    pos = 0
    while pos < len(data):
        tlv, pos = read_one(data, pos)
        out.append(tlv)
    return out


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, value: bytes) -> bytes:
    """Encode one element (definite length)."""
    return bytes([tag]) + encode_length(len(value)) + value


def integer(value: int, tag: int = 0x02) -> bytes:
    """A BER INTEGER (or ENUMERATED with tag 0x0A) in the shortest two's-complement form."""
    length = max(1, (value + (value < 0)).bit_length() // 8 + 1)
    return tlv(tag, value.to_bytes(length, "big", signed=True))


def octets(value: bytes, tag: int = 0x04) -> bytes:
    return tlv(tag, value)


def boolean(value: bool) -> bytes:
    return tlv(0x01, b"\xff" if value else b"\x00")


def sequence(*parts: bytes, tag: int = 0x30) -> bytes:
    return tlv(tag, b"".join(parts))
