"""`POST /$batch`: up to 20 requests, validated the way Graph validates them.

Batch-level problems (malformed JSON, more than 20 items, duplicate ids, absolute URLs, a write
without Content-Type, unknown or cyclic dependsOn) fail the whole batch with 400 and run nothing.
Items run in request order, or in a random one (`batch_random_order`), dependencies first; an
item whose dependency failed gets 424; each item is
throttled on its own and answers its own status and headers.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from idsync.emulator.call import WRITE_METHODS, Call, Reply
from idsync.emulator.errors import GraphError

MAX_REQUESTS = 20
JSON_CT = (
    "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8"
)


def _invalid(message: str = "Invalid batch payload format.") -> GraphError:
    return GraphError(400, "BadRequest", message)


def _order(
    reqs: list[dict[str, Any]], shuffle: Callable[[list[Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Requests in an order where every dependency runs first: the request order, or a random
    one when `shuffle` is given (Graph promises no order for independent items)."""
    if shuffle is not None:
        reqs = list(reqs)
        shuffle(reqs)
    by_id = {r["id"].lower(): r for r in reqs}
    done: set[str] = set()
    out: list[dict[str, Any]] = []
    visiting: set[str] = set()

    def visit(r: dict[str, Any]) -> None:
        key = r["id"].lower()
        if key in done:
            return
        if key in visiting:
            raise _invalid(f"Circular dependency found in dependsOn of request '{r['id']}'.")
        visiting.add(key)
        for dep in r.get("dependsOn") or []:
            visit(by_id[dep.lower()])
        visiting.discard(key)
        done.add(key)
        out.append(r)

    for r in reqs:
        visit(r)
    return out


def validate(payload: Any, shuffle: Callable[[list[Any]], None] | None = None) -> list[dict[str, Any]]:
    """The batch's requests in the order they run, or the 400 Graph returns for the whole batch."""
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("requests"), list)
        or not payload["requests"]
    ):
        raise _invalid()
    reqs = payload["requests"]
    if len(reqs) > MAX_REQUESTS:
        raise _invalid(f"The number of batch requests ({len(reqs)}) exceeds the limit of {MAX_REQUESTS}.")
    seen: set[str] = set()
    for r in reqs:
        if not isinstance(r, dict):
            raise _invalid()
        rid, method, url = r.get("id"), r.get("method"), r.get("url")
        if not isinstance(rid, str) or not rid or not isinstance(method, str) or not isinstance(url, str):
            raise _invalid()
        if rid.lower() in seen:
            raise _invalid(f"Request ids must be unique within a batch; '{rid}' is repeated.")
        seen.add(rid.lower())
        if "://" in url or url.startswith("//"):
            raise _invalid()
        headers = r.get("headers") or {}
        if not isinstance(headers, dict):
            raise _invalid()
        has_ct = any(k.lower() == "content-type" for k in headers)
        if method.upper() in ("POST", "PATCH", "PUT") and ("body" not in r or not has_ct):
            raise GraphError(
                400, "BadRequest", f"Write request id : {rid} does not contain Content-Type header or body."
            )
        if "body" in r and not has_ct:
            raise GraphError(
                400, "BadRequest", f"Write request id : {rid} does not contain Content-Type header or body."
            )
    for r in reqs:
        deps = r.get("dependsOn")
        if deps is None:
            continue
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise _invalid()
        for d in deps:
            if d.lower() not in seen:
                raise _invalid(f"Request '{r['id']}' depends on '{d}', which is not in the batch.")
            if d.lower() == r["id"].lower():
                raise _invalid(f"Request '{r['id']}' cannot depend on itself.")
    return _order(reqs, shuffle)


def _sub_call(outer: Call, r: dict[str, Any]) -> Call:
    parts = urlsplit(r["url"] if r["url"].startswith("/") else "/" + r["url"])
    headers = {k.lower(): str(v) for k, v in (r.get("headers") or {}).items()}
    for inherited in ("client-request-id", "user-agent", "authorization"):
        if inherited in outer.headers and inherited not in headers:
            headers[inherited] = outer.headers[inherited]
    call = Call(
        method=r["method"].upper(),
        path=unquote(parts.path),
        query=dict(parse_qsl(parts.query, keep_blank_values=True)),
        headers=headers,
        body=None,
        base_url=outer.base_url,
        app_id=outer.app_id,
        in_batch=True,
        roles=outer.roles,
        principal=outer.principal,
    )
    if "body" in r:
        body = r["body"]
        ct = headers.get("content-type", "")
        if "json" in ct:
            # a JSON body travels inline; a string here is a JSON string, not an object
            call.parsed = body
        elif isinstance(body, str):
            try:
                call.body = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                call.body = body.encode()
    return call


def run(
    outer: Call,
    execute: Callable[[Call, str], Reply],
    shuffle: Callable[[list[Any]], None] | None,
    order: Callable[[list[Any]], None] | None = None,
) -> Reply:
    """Validate and run a batch; `execute(call, item_id)` answers one item (auth already done).
    `shuffle` reorders the responses, `order` the execution (dependencies still run first)."""
    reqs = validate(outer.json(), order)
    status: dict[str, int] = {}
    responses: list[dict[str, Any]] = []
    for r in reqs:
        rid = r["id"]
        failed = [d for d in (r.get("dependsOn") or []) if status.get(d.lower(), 0) >= 400]
        if failed:
            reply = Reply(
                424,
                GraphError(
                    424, "FailedDependency", f"Failed dependency: request '{failed[0]}' did not succeed."
                ).body(outer.headers.get("client-request-id")),
            )
        else:
            sub = _sub_call(outer, r)
            if sub.method not in WRITE_METHODS and sub.method != "GET":
                reply = Reply(
                    405,
                    GraphError(
                        405,
                        "Request_BadRequest",
                        "Specified HTTP method is not allowed for the request target.",
                    ).body(),
                )
            else:
                reply = execute(sub, rid)
        status[rid.lower()] = reply.status
        item: dict[str, Any] = {"id": rid, "status": reply.status, "headers": dict(reply.headers)}
        if reply.body is not None:
            item["headers"]["Content-Type"] = JSON_CT
            item["body"] = reply.body
        responses.append(item)
    if shuffle is not None:
        shuffle(responses)
    return Reply(200, {"responses": responses})
