"""A scripted LDAP server on loopback, for what Samba cannot show (it is lenient where AD is not).

It speaks real LDAP (BER over TCP) to the real ldap3 client, so the bytes idsync sends are the
bytes asserted on: AD's 1,000-entry page cap, its 1,500-value ranges, DirSync batches with
MoreResults, and the DirSync control as encoded on the wire. A test supplies `on_search`, which
gets each `SearchRequest` and returns the entries and the result controls to send back.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from idsync.source import ber


@dataclass
class SearchRequest:
    """What the client asked for, with its controls (oid → (criticality, raw value))."""

    base: str
    scope: int
    filter_ber: bytes
    attributes: list[str]
    controls: dict[str, tuple[bool, bytes | None]] = field(default_factory=dict)

    def control(self, oid: str) -> bytes | None:
        got = self.controls.get(oid)
        return got[1] if got else None


@dataclass
class Entry:
    dn: str
    attrs: dict[str, list[bytes]]


@dataclass
class Reply:
    """Entries, then a SearchResultDone with `code` and `controls` (oid → raw value)."""

    entries: list[Entry] = field(default_factory=list)
    controls: dict[str, bytes] = field(default_factory=dict)
    code: int = 0
    message: str = ""


OnSearch = Callable[[SearchRequest], Reply]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("client closed")
        buf += chunk
    return buf


def _recv_message(sock: socket.socket) -> bytes:
    head = _recv_exact(sock, 2)
    length = head[1]
    extra = b""
    if length & 0x80:
        extra = _recv_exact(sock, length & 0x7F)
        length = int.from_bytes(extra, "big")
    return head + extra + _recv_exact(sock, length)


def _parse_controls(tlv: ber.Tlv) -> dict[str, tuple[bool, bytes | None]]:
    out: dict[str, tuple[bool, bytes | None]] = {}
    for ctl in tlv.children():
        parts = ctl.children()
        oid = parts[0].value.decode()
        crit = False
        value = None
        for p in parts[1:]:
            if p.tag == 0x01:
                crit = p.as_bool()
            elif p.tag == 0x04:
                value = p.value
        out[oid] = (crit, value)
    return out


def _controls_ber(controls: dict[str, bytes]) -> bytes:
    if not controls:
        return b""
    return ber.sequence(
        *(ber.sequence(ber.octets(oid.encode()), ber.octets(val)) for oid, val in controls.items()), tag=0xA0
    )


def _message(msgid: int, op: bytes, controls: dict[str, bytes] | None = None) -> bytes:
    return ber.sequence(ber.integer(msgid), op, _controls_ber(controls or {}))


def entry_ber(e: Entry) -> bytes:
    attrs = [
        ber.sequence(ber.octets(name.encode()), ber.sequence(*(ber.octets(v) for v in vals), tag=0x31))
        for name, vals in e.attrs.items()
    ]
    return ber.sequence(ber.octets(e.dn.encode()), ber.sequence(*attrs), tag=0x64)


def paged_value(cookie: bytes) -> bytes:
    """The simple-paged-results response control value."""
    return ber.sequence(ber.integer(0), ber.octets(cookie))


def dirsync_value(more: bool, cookie: bytes) -> bytes:
    """The DirSync response control value: { MoreResults, unused, CookieServer }."""
    return ber.sequence(ber.integer(1 if more else 0), ber.integer(0), ber.octets(cookie))


class FakeLdapServer:
    """Listens on 127.0.0.1:<free port>; every search goes to `on_search`; binds always succeed."""

    def __init__(self, on_search: OnSearch) -> None:
        self.on_search = on_search
        self.requests: list[SearchRequest] = []
        self.raw_requests: list[bytes] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    raw = _recv_message(conn)
                except (ConnectionError, OSError):
                    return
                self.raw_requests.append(raw)
                parts = ber.read_one(raw)[0].children()
                msgid = parts[0].as_int()
                op = parts[1]
                controls = _parse_controls(parts[2]) if len(parts) > 2 and parts[2].tag == 0xA0 else {}
                if op.tag == 0x60:  # bind
                    done = ber.sequence(ber.integer(0, tag=0x0A), ber.octets(b""), ber.octets(b""), tag=0x61)
                    conn.sendall(_message(msgid, done))
                elif op.tag == 0x42:  # unbind
                    return
                elif op.tag == 0x63:  # search
                    f = op.children()
                    req = SearchRequest(
                        base=f[0].value.decode(),
                        scope=f[1].as_int(),
                        filter_ber=ber.tlv(f[6].tag, f[6].value),
                        attributes=[a.value.decode() for a in f[7].children()],
                        controls=controls,
                    )
                    self.requests.append(req)
                    reply = self.on_search(req)
                    out = b"".join(_message(msgid, entry_ber(e)) for e in reply.entries)
                    done = ber.sequence(
                        ber.integer(reply.code, tag=0x0A),
                        ber.octets(b""),
                        ber.octets(reply.message.encode()),
                        tag=0x65,
                    )
                    conn.sendall(out + _message(msgid, done, reply.controls))
                # abandon and anything else: no answer


ROOT_DSE = Entry(
    "",
    {
        "dnsHostName": [b"fake-dc.example.org"],
        "defaultNamingContext": [b"DC=fake,DC=example"],
        "namingContexts": [b"DC=fake,DC=example"],
        "supportedControl": [b"1.2.840.113556.1.4.529", b"1.2.840.113556.1.4.841", b"1.2.840.113556.1.4.319"],
        "dsServiceName": [b"CN=NTDS Settings,CN=DC1,DC=fake,DC=example"],
        "highestCommittedUSN": [b"1000"],
    },
)
