"""The stored delta position of each mode: opaque server state plus the scope it was taken under."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg

from idsync.store import watermarks


@dataclass(frozen=True)
class Position:
    """A delta position: the server that issued it, the scope fingerprint, and mode-specific state."""

    server: str
    scope: str
    cookie: bytes = b""
    state: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return orjson.dumps(
            {"scope": self.scope, "cookie": base64.b64encode(self.cookie).decode(), "state": self.state}
        )

    def summary(self) -> str:
        """Short text for run history (never the whole cookie)."""
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.state.items()))
        return f"{self.server} cookie={len(self.cookie)}B" + (f" {extra}" if extra else "")


def load(conn: psycopg.Connection, name: str) -> Position | None:
    """The stored position, or None (also when it was written by an older, different format)."""
    wm = watermarks.get(conn, name)
    if wm is None:
        return None
    try:
        doc = orjson.loads(wm.value)
        return Position(
            server=wm.server or "",
            scope=str(doc["scope"]),
            cookie=base64.b64decode(doc.get("cookie") or ""),
            state=dict(doc.get("state") or {}),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def save(conn: psycopg.Connection, name: str, pos: Position) -> None:
    """Write the position in the caller's transaction (together with the data it covers)."""
    watermarks.put(conn, name, pos.encode(), pos.server)
