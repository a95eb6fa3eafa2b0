"""The fast entry decoder reads what ldap3's own decoder reads, long lengths included."""

from __future__ import annotations

from ldap3.utils.asn1 import decode_message_fast

from idsync.source import ber
from idsync.source.fastdecode import decode_entry
from tests.source.fakeldap import Entry, entry_ber


def message(entry_op: bytes, msgid: int = 7, controls: bytes = b"") -> bytes:
    return ber.sequence(ber.integer(msgid), entry_op, controls)


def test_entries_decode_like_ldap3_with_short_and_long_lengths() -> None:
    e = Entry("CN=Zoë,DC=x", {"cn": ["Zoë".encode()], "photo": [b"\x00" * 300, b"\xff" * 70000], "empty": []})
    msgid, got = decode_entry(message(entry_ber(e), msgid=300)) or (None, None)
    assert msgid == 300 and got is not None
    assert got["dn"] == "CN=Zoë,DC=x" and got["type"] == "searchResEntry"
    assert got["raw_attributes"] == e.attrs
    # ldap3's decoder agrees on the message id and the objectName
    ref = decode_message_fast(message(entry_ber(e), msgid=300))
    assert ref["messageID"] == 300 and bytes(ref["payload"][0][3]).decode() == got["dn"]


def test_entries_with_controls_and_other_messages_are_left_to_ldap3() -> None:
    e = Entry("CN=a", {"cn": [b"a"]})
    ctl = ber.sequence(ber.sequence(ber.octets(b"1.3.6.1.4.1.4203.1.9.1.2"), ber.octets(b"x")), tag=0xA0)
    assert decode_entry(message(entry_ber(e), controls=ctl)) is None
    done = ber.sequence(ber.integer(0, tag=0x0A), ber.octets(b""), ber.octets(b""), tag=0x65)
    assert decode_entry(message(done)) is None
