"""LDAP controls idsync builds and reads itself: DirSync, extended DN, show-deleted, RFC 4533 sync.

ldap3's own DirSync control sends Flags 0x80000801 as a 5-byte INTEGER on 64-bit Linux (it
relies on ctypes.c_long being 32-bit); Active Directory rejects that with
unavailableCriticalExtension while Samba accepts it. Here every value is encoded by hand, with
Flags as a signed 32-bit integer, so the bytes on the wire are the ones MS-ADTS specifies.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from idsync.source import ber

Control = tuple[str, bool, bytes | None]

DIRSYNC_OID = "1.2.840.113556.1.4.841"
EXTENDED_DN_OID = "1.2.840.113556.1.4.529"
SHOW_DELETED_OID = "1.2.840.113556.1.4.417"
PAGED_OID = "1.2.840.113556.1.4.319"
SYNC_REQUEST_OID = "1.3.6.1.4.1.4203.1.9.1.1"
SYNC_STATE_OID = "1.3.6.1.4.1.4203.1.9.1.2"
SYNC_DONE_OID = "1.3.6.1.4.1.4203.1.9.1.3"
SYNC_INFO_OID = "1.3.6.1.4.1.4203.1.9.1.4"

# DirSync flags (MS-ADTS 3.1.1.3.4.1.3).
DIRSYNC_OBJECT_SECURITY = 0x00000001
DIRSYNC_ANCESTORS_FIRST_ORDER = 0x00000800
DIRSYNC_PUBLIC_DATA_ONLY = 0x00002000
DIRSYNC_INCREMENTAL_VALUES = 0x80000000
DIRSYNC_MAX_BYTES = 0x7FFFFFFF  # "as much as the server will send"


def signed32(value: int) -> int:
    """A 32-bit flag word as the signed INTEGER that AD expects (0x80000000 -> -2**31)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def dirsync_request_value(flags: int, cookie: bytes, max_bytes: int = DIRSYNC_MAX_BYTES) -> bytes:
    """BER of DirSyncRequestValue ::= SEQUENCE { Flags INTEGER, MaxBytes INTEGER, Cookie OCTET STRING }."""
    return ber.sequence(ber.integer(signed32(flags)), ber.integer(max_bytes), ber.octets(cookie))


def dirsync_control(
    cookie: bytes | None,
    *,
    object_security: bool = False,
    incremental_values: bool = True,
    ancestors_first: bool = True,
    max_bytes: int = DIRSYNC_MAX_BYTES,
) -> Control:
    """The DirSync request control (always critical, as AD and Samba require)."""
    flags = 0
    if object_security:
        flags |= DIRSYNC_OBJECT_SECURITY
    if ancestors_first:
        flags |= DIRSYNC_ANCESTORS_FIRST_ORDER
    if incremental_values:
        flags |= DIRSYNC_INCREMENTAL_VALUES
    return (DIRSYNC_OID, True, dirsync_request_value(flags, cookie or b"", max_bytes))


@dataclass(frozen=True)
class DirSyncResponse:
    """The DirSync response control: whether more batches wait, and the cookie after this one."""

    more_results: bool
    cookie: bytes


def dirsync_response(controls: dict[str, Any] | None) -> DirSyncResponse | None:
    """Read the DirSync response control from an ldap3 result's `controls` (None when absent)."""
    if not controls or DIRSYNC_OID not in controls:
        return None
    value = controls[DIRSYNC_OID].get("value")
    if isinstance(value, dict):  # ldap3 decodes this control itself
        return DirSyncResponse(bool(value.get("more_results")), bytes(value.get("cookie") or b""))
    if isinstance(value, bytes | bytearray):
        seq, _ = ber.read_one(bytes(value))
        parts = seq.children()
        return DirSyncResponse(parts[0].as_int() != 0, parts[2].value)
    raise ber.BerError(f"unexpected DirSync response control value {value!r}")


def extended_dn_control(string_guids: bool = True) -> Control:
    """Extended DN: every DN (entry names and DN-valued attributes) carries <GUID=…>;<SID=…>."""
    return (EXTENDED_DN_OID, False, ber.sequence(ber.integer(1 if string_guids else 0)))


def show_deleted_control() -> Control:
    """Show deleted: tombstones under CN=Deleted Objects become visible to the search."""
    return (SHOW_DELETED_OID, False, None)


# --- RFC 4533 content synchronization ------------------------------------------------------------

SYNC_MODE_REFRESH_ONLY = 1

STATE_PRESENT, STATE_ADD, STATE_MODIFY, STATE_DELETE = 0, 1, 2, 3


def sync_request_control(cookie: bytes | None, reload_hint: bool = False) -> Control:
    """syncRequestValue ::= SEQUENCE { mode ENUMERATED, cookie OPTIONAL, reloadHint BOOLEAN }."""
    parts = [ber.integer(SYNC_MODE_REFRESH_ONLY, tag=0x0A)]
    if cookie:
        parts.append(ber.octets(cookie))
    if reload_hint:
        parts.append(ber.boolean(True))
    return (SYNC_REQUEST_OID, True, ber.sequence(*parts))


def _uuid_str(raw: bytes) -> str:
    if len(raw) != 16:
        raise ber.BerError(f"syncUUID must be 16 bytes, got {len(raw)}")
    return str(uuid.UUID(bytes=raw))


@dataclass(frozen=True)
class SyncState:
    """Sync State control on an entry: what happened to it, its entryUUID, maybe a cookie."""

    state: int
    entry_uuid: str
    cookie: bytes | None


def sync_state(value: bytes) -> SyncState:
    """Decode syncStateValue ::= SEQUENCE { state ENUMERATED, entryUUID OCTET STRING, cookie OPTIONAL }."""
    parts = ber.read_one(value)[0].children()
    if len(parts) < 2:
        raise ber.BerError("syncStateValue needs state and entryUUID")
    cookie = parts[2].value if len(parts) > 2 else None
    return SyncState(parts[0].as_int(), _uuid_str(parts[1].value), cookie)


@dataclass(frozen=True)
class SyncInfo:
    """Sync Info intermediate message: a new cookie, the end of a phase, or a set of UUIDs.

    `kind` is newcookie, refreshDelete, refreshPresent or syncIdSet. For syncIdSet, `uuids` are
    deleted entries when `refresh_deletes`, else the entries still present (present phase).
    """

    kind: str
    cookie: bytes | None = None
    refresh_done: bool = True
    refresh_deletes: bool = False
    uuids: tuple[str, ...] = field(default_factory=tuple)


def sync_info(value: bytes) -> SyncInfo:
    """Decode syncInfoValue (a CHOICE of [0] newcookie … [3] syncIdSet, implicitly tagged)."""
    top = ber.read_one(value)[0]
    choice = top.tag & 0x1F
    if choice == 0:
        return SyncInfo("newcookie", cookie=top.value)
    kind = {1: "refreshDelete", 2: "refreshPresent", 3: "syncIdSet"}.get(choice)
    if kind is None:
        raise ber.BerError(f"unknown syncInfoValue choice [{choice}]")
    info: dict[str, Any] = {"cookie": None}
    uuids: tuple[str, ...] = ()
    for part in top.children():
        if part.tag == 0x04:
            info["cookie"] = part.value
        elif part.tag == 0x01:
            info["refresh_deletes" if kind == "syncIdSet" else "refresh_done"] = part.as_bool()
        elif part.tag == 0x31:  # SET OF syncUUID
            uuids = tuple(_uuid_str(u.value) for u in part.children())
    return SyncInfo(kind, uuids=uuids, **info)


@dataclass(frozen=True)
class SyncDone:
    """Sync Done control on SearchResultDone: the final cookie (None: keep the old one)."""

    cookie: bytes | None
    refresh_deletes: bool


def sync_done(value: bytes | None) -> SyncDone:
    """Decode syncDoneValue ::= SEQUENCE { cookie OPTIONAL, refreshDeletes BOOLEAN DEFAULT FALSE }."""
    if not value:
        return SyncDone(None, False)
    cookie: bytes | None = None
    deletes = False
    for part in ber.read_one(value)[0].children():
        if part.tag == 0x04:
            cookie = part.value
        elif part.tag == 0x01:
            deletes = part.as_bool()
    return SyncDone(cookie, deletes)
