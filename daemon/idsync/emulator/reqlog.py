"""The request log: every Graph call the emulator answered, for tests to prove who wrote what."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One answered call. Batch items carry the envelope's `batch` request-id and their `item` id."""

    seq: int
    time: float
    method: str
    path: str
    status: int
    write: bool
    client_request_id: str
    user_agent: str
    app_id: str
    request_id: str
    batch: str | None = None
    item: str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON view."""
        return asdict(self)


class RequestLog:
    """A bounded, ordered log; `seq` increases by one per entry and survives trimming."""

    def __init__(self, size: int) -> None:
        self.entries: deque[LoggedRequest] = deque(maxlen=size)
        self.seq = 0

    def add(self, **kw: Any) -> LoggedRequest:
        """Append an entry (fields of LoggedRequest except `seq`)."""
        self.seq += 1
        e = LoggedRequest(seq=self.seq, **kw)
        self.entries.append(e)
        return e

    def since(self, seq: int = 0, writes_only: bool = False, limit: int | None = None) -> list[LoggedRequest]:
        """Entries after `seq`, oldest first."""
        out = []
        for e in self.entries:
            if e.seq <= seq or (writes_only and not e.write):
                continue
            out.append(e)
            if limit is not None and len(out) >= limit:
                break
        return out

    def clear(self) -> None:
        """Forget all entries (seq keeps counting)."""
        self.entries.clear()


EPOCH_PATTERN = r"epoch[=:/ ]?(\d+)"


def stale_epoch_writes(entries: list[LoggedRequest], pattern: str = EPOCH_PATTERN) -> list[LoggedRequest]:
    """Writes whose User-Agent names an older epoch than a write already seen before them.

    This is the fencing check of the HA tests: once epoch N has written, no write from an epoch
    below N may reach Graph. Requests dropped before processing never reached it and are skipped;
    writes without an epoch in their User-Agent are ignored.
    """
    rx = re.compile(pattern, re.IGNORECASE)
    newest = -1
    out = []
    for e in entries:
        if not e.write or (e.status == 0 and e.note.startswith("dropped before")):
            continue
        m = rx.search(e.user_agent)
        if not m:
            continue
        epoch = int(m.group(1))
        if epoch < newest:
            out.append(e)
        newest = max(newest, epoch)
    return out
