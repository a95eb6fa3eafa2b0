"""JSON `$batch` bodies and responses, built by hand (msgraph-core's batch helpers break writes).

Sub-request URLs are relative to the version (`/users`), every write carries Content-Type, and
responses are matched by id because Graph may answer them in any order.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

MAX_REQUESTS = 20


@dataclass(frozen=True)
class SubRequest:
    """One request of a batch."""

    id: str
    method: str
    url: str
    body: Any = None
    client_request_id: str = ""

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "method": self.method, "url": self.url}
        headers: dict[str, str] = {}
        if self.client_request_id:
            headers["client-request-id"] = self.client_request_id
        if self.body is not None:
            headers["Content-Type"] = "application/json"
            d["body"] = self.body
        if headers:
            d["headers"] = headers
        return d


@dataclass(frozen=True)
class SubResponse:
    """One answer of a batch: status, headers (lower-case names) and the parsed body."""

    id: str
    status: int
    headers: dict[str, str]
    body: Any

    def retry_after(self) -> float | None:
        raw = self.headers.get("retry-after")
        try:
            return max(0.0, float(raw)) if raw is not None else None
        except ValueError:
            return None


def encode(requests: list[SubRequest]) -> bytes:
    """The `$batch` request body."""
    if not 0 < len(requests) <= MAX_REQUESTS:
        raise ValueError(f"a batch holds 1 to {MAX_REQUESTS} requests, not {len(requests)}")
    return orjson.dumps({"requests": [r.to_json() for r in requests]})


def _body(raw: Any) -> Any:
    if isinstance(raw, str):  # a non-JSON body comes base64-encoded
        try:
            data = base64.b64decode(raw, validate=True)
            return orjson.loads(data)
        except (binascii.Error, ValueError, orjson.JSONDecodeError):
            return raw
    return raw


def decode(content: bytes) -> dict[str, SubResponse]:
    """The responses of a `$batch` answer, by request id."""
    data = orjson.loads(content)
    out: dict[str, SubResponse] = {}
    for r in data.get("responses") or []:
        headers = {str(k).lower(): str(v) for k, v in (r.get("headers") or {}).items()}
        out[str(r["id"])] = SubResponse(str(r["id"]), int(r["status"]), headers, _body(r.get("body")))
    return out
