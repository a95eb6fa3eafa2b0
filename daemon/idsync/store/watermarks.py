"""Watermarks (cookies, delta links, sync positions), written in the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Watermark:
    name: str
    value: bytes
    server: str | None


def get(conn: psycopg.Connection, name: str) -> Watermark | None:
    row = conn.execute("SELECT value, server FROM watermark WHERE name = %s", (name,)).fetchone()
    if row is None:
        return None
    return Watermark(name, bytes(row[0]), row[1])


def put(conn: psycopg.Connection, name: str, value: bytes, server: str | None = None) -> None:
    conn.execute(
        "INSERT INTO watermark (name, value, server) VALUES (%s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value, server = excluded.server,"
        " updated_at = now()",
        (name, value, server),
    )


def delete(conn: psycopg.Connection, name: str) -> None:
    conn.execute("DELETE FROM watermark WHERE name = %s", (name,))
