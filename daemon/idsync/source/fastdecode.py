"""A faster way for ldap3 to read search result entries.

Measured on a 20,000-user import: ldap3's generic decoder spends about 1 ms per entry building
both a formatted and a raw case-insensitive attribute map through a recursive BER walk; idsync
only ever reads the raw values. `FastSearchStrategy` decodes plain entries (no entry controls)
with a flat loop straight into `{"dn", "raw_attributes"}` and leaves every other message
(results, references, intermediate responses, entries with controls) to ldap3 as before.
"""

from __future__ import annotations

from typing import Any

from ldap3.core.exceptions import LDAPSocketReceiveError
from ldap3.strategy.base import RESPONSE_COMPLETE, SESSION_TERMINATED_BY_SERVER
from ldap3.strategy.sync import SyncStrategy
from ldap3.utils.asn1 import decode_message_fast

_NOTICE_OF_DISCONNECTION = "1.3.6.1.4.1.1466.20036"
_MORE_TO_COME = ("searchResEntry", "searchResRef", "intermediateResponse")


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """The BER length at `pos` and the position after it."""
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    n = first & 0x7F
    return int.from_bytes(data[pos + 1 : pos + 1 + n], "big"), pos + 1 + n


def decode_entry(msg: bytes) -> tuple[int, dict[str, Any]] | None:
    """(message id, entry) for a SearchResultEntry without controls; None for anything else."""
    if not msg or msg[0] != 0x30:
        return None
    _, pos = _length(msg, 1)
    if msg[pos] != 0x02:
        return None
    n, pos = _length(msg, pos + 1)
    msgid = int.from_bytes(msg[pos : pos + n], "big", signed=True)
    pos += n
    if msg[pos] != 0x64:
        return None
    n, pos = _length(msg, pos + 1)
    if pos + n != len(msg):  # controls follow the entry: let ldap3 decode them
        return None
    n, pos = _length(msg, pos + 1)  # objectName
    dn = msg[pos : pos + n].decode("utf-8")
    pos += n
    n, pos = _length(msg, pos + 1)  # attributes
    end = pos + n
    raw: dict[str, list[bytes]] = {}
    while pos < end:
        n, pos = _length(msg, pos + 1)  # PartialAttribute
        attr_end = pos + n
        n, pos = _length(msg, pos + 1)
        name = msg[pos : pos + n].decode("utf-8")
        pos += n
        n, pos = _length(msg, pos + 1)  # SET OF value
        values_end = pos + n
        values: list[bytes] = []
        while pos < values_end:
            n, pos = _length(msg, pos + 1)
            values.append(msg[pos : pos + n])
            pos += n
        raw[name] = values
        pos = attr_end
    return msgid, {"type": "searchResEntry", "dn": dn, "raw_attributes": raw, "attributes": raw}


class FastSearchStrategy(SyncStrategy):  # type: ignore[misc]
    """ldap3's SYNC strategy with the fast entry decoder."""

    def _get_response(self, message_id: int, timeout: Any) -> Any:
        responses: list[Any] = []
        while True:
            messages = self.receiving()
            if not messages:
                return SESSION_TERMINATED_BY_SERVER
            for raw in messages:
                if not raw:
                    continue
                fast = decode_entry(raw)
                if fast is not None and fast[0] == message_id:
                    responses.append(fast[1])
                    continue
                ldap_resp = decode_message_fast(raw)
                decoded = self.decode_response_fast(ldap_resp)
                mid = int(ldap_resp["messageID"])
                if mid == message_id:
                    responses.append(decoded)
                    if decoded["type"] not in _MORE_TO_COME:
                        responses.append(RESPONSE_COMPLETE)
                        return responses
                elif mid == 0 and decoded.get("responseName") == _NOTICE_OF_DISCONNECTION:
                    return SESSION_TERMINATED_BY_SERVER
                else:
                    self.connection.last_error = f"message id {mid} received while waiting for {message_id}"
                    raise LDAPSocketReceiveError(self.connection.last_error)


def install(conn: Any) -> None:
    """Make an ldap3 SYNC connection use `FastSearchStrategy` (before it is opened)."""
    conn.strategy = FastSearchStrategy(conn)
    conn.send = conn.strategy.send
    conn.open = conn.strategy.open
    conn.get_response = conn.strategy.get_response
    conn.post_send_single_response = conn.strategy.post_send_single_response
    conn.post_send_search = conn.strategy.post_send_search
