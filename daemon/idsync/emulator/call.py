"""A Graph call independent of HTTP, so `$batch` items and plain requests share one path."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from idsync.emulator.errors import GraphError, bad_request

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


@dataclass
class Call:
    """One request to the Graph namespace.

    `path` is decoded and relative to the version (`/users/abc`); `headers` is looked up with
    lower-case names (a case-insensitive mapping, or a dict with lower-case keys);
    `base_url` is the emulator's own `scheme://host:port/v1.0`, used to build every link.
    """

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes | None
    base_url: str
    app_id: str = ""
    in_batch: bool = False
    parsed: Any = None
    # the token's `roles` claim (application permissions) and the caller's service principal
    roles: frozenset[str] = frozenset()
    principal: str = ""

    @property
    def is_write(self) -> bool:
        """Graph counts POST/PATCH/PUT/DELETE against the write quota (a `$batch` envelope is not one)."""
        return self.method in WRITE_METHODS and self.path != "/$batch"

    def json(self) -> dict[str, Any]:
        """The body as a JSON object, or Graph's 400 for anything else."""
        if self.parsed is not None:
            if not isinstance(self.parsed, dict):
                raise bad_request("Invalid request body: a JSON object is required.", code="BadRequest")
            return self.parsed
        if not self.body:
            raise bad_request("Empty Payload, JSON content expected.", code="BadRequest")
        try:
            data = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise bad_request(
                "Unable to read JSON request payload. Please ensure Content-Type header is set "
                "and payload is of valid JSON format.",
                code="BadRequest",
            ) from None
        if not isinstance(data, dict):
            raise bad_request("Invalid request body: a JSON object is required.", code="BadRequest")
        self.parsed = data
        return data


@dataclass
class Reply:
    """A Graph response: status, JSON body (None for 204) and extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def error_reply(err: GraphError, call: Call) -> Reply:
    """The Reply for a GraphError, echoing the caller's client-request-id."""
    return Reply(err.status, err.body(call.headers.get("client-request-id")), dict(err.headers))
