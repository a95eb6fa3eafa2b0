"""One long-lived Graph client per process: msgraph-sdk's request adapter, raw bytes out.

The adapter (kiota + msgraph-core middleware) does authentication, URL handling, redirects and
telemetry headers; responses come back as the raw `httpx.Response` (a native response handler),
so bulk reads are parsed with orjson and never through the SDK's models (about 600x slower).

Retries are idsync's, not the SDK middleware's (its RetryHandler is switched off): a write may
only be re-sent after the caller's fence check, every 429 must reach the write budget, and
`Retry-After: 0` must not turn into the middleware's 3.5 s pause. Reads are retried here with
jittered backoff on 429/5xx and dropped connections; writes are retried by the exporter.

Writes are fenced at the wire (`FencedTransport`, the innermost transport, under every
middleware): right before a write's first byte is sent — after the token was fetched and a
pooled connection obtained — the fence is asked again, and the whole request (pool wait,
connect, send, answer) is bounded by the fence's `write_deadline()`, never longer than the
leader's remaining lease. Every re-send (a 401 refresh, a redirect) passes the same check.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import ssl
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import structlog
from kiota_abstractions.method import Method
from kiota_abstractions.native_response_handler import NativeResponseHandler
from kiota_abstractions.request_information import RequestInformation
from kiota_http.middleware.options import (
    ResponseHandlerOption,
    RetryHandlerOption,
    UserAgentHandlerOption,
)
from msgraph_core import GraphClientFactory
from msgraph_core.base_graph_request_adapter import BaseGraphRequestAdapter

from idsync import __version__
from idsync.config.target import GraphSettings, is_microsoft_host
from idsync.fencing import Fence, Fenced
from idsync.target.auth import CredentialTokenProvider, auth_provider
from idsync.target.budget import Pacing, WriteBudget
from idsync.target.errors import GraphAuthError, GraphUnavailable

log = structlog.get_logger(__name__)

PRODUCT = f"idsync/{__version__}"
# Connection failures that mean "the request may or may not have reached Graph".
TRANSPORT_ERRORS = (httpx.TransportError,)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def user_agent(node: str, epoch: int | None = None) -> str:
    """`idsync/0.1.0 (node=a; epoch=7)`: who sent a request, readable in Graph's sign-in/audit logs."""
    who = f"node={node}" if epoch is None else f"node={node}; epoch={epoch}"
    return f"{PRODUCT} ({who})"


@dataclass(frozen=True)
class GraphResponse:
    """One HTTP answer from Graph: status, headers and the body as bytes."""

    status: int
    headers: Mapping[str, str]
    content: bytes
    client_request_id: str

    def json(self) -> Any:
        """The body parsed with orjson (None when empty)."""
        return orjson.loads(self.content) if self.content else None

    def error(self) -> tuple[str, str]:
        """Graph's `(error.code, error.message)`, or a description of a body that is not one."""
        return error_of(self.status, self.content)

    def retry_after(self) -> float | None:
        """Seconds from `Retry-After` (None when absent or not a number)."""
        return parse_retry_after(self.headers.get("retry-after"))


def error_of(status: int, body: Any) -> tuple[str, str]:
    """`(code, message)` from a Graph error body (bytes or parsed)."""
    if isinstance(body, bytes | bytearray):
        try:
            body = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            return f"HTTP{status}", body[:200].decode("utf-8", "replace")
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("code") or f"HTTP{status}"), str(err.get("message") or "")
    return f"HTTP{status}", ""


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds (Graph sends integers)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def backoff(attempt: int, base: float, cap: float = 30.0) -> float:
    """Full-jitter exponential backoff for attempt 1, 2, ...: uniform(0.5, 1) x base x 2^(n-1)."""
    return min(cap, base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


_RAW = NativeResponseHandler()

# The fence of the write being sent by the current task (None for reads): set by
# `GraphClient.send(fence=...)`, read by `FencedTransport` below every middleware.
_WRITE_FENCE: contextvars.ContextVar[Fence | None] = contextvars.ContextVar(
    "idsync_write_fence", default=None
)

Trace = Callable[[str, dict[str, Any]], Awaitable[None]]


class FencedTransport(httpx.AsyncBaseTransport):
    """The transport that fences writes at the wire (see the module docstring).

    httpcore's `trace` extension reports `<http11|http2>.send_request_headers.started` once a
    connection is in hand and immediately before the request's bytes are written: the fence is
    checked there, so a leader frozen after an earlier check (GC, SIGSTOP, a VM pause, a slow
    token fetch or pool wait) finds its lease gone when it wakes and sends nothing.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self.fenced_at_wire = 0  # writes refused at the last check (tests, metrics)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        fence = _WRITE_FENCE.get()
        if fence is None:
            return await self._inner.handle_async_request(request)
        deadline = fence.write_deadline()  # raises Fenced: not even the pool is waited for
        previous: Trace | None = request.extensions.get("trace")

        async def trace(event: str, info: dict[str, Any]) -> None:
            if event.endswith(".send_request_headers.started"):
                try:
                    fence.write_deadline()
                except Fenced:
                    self.fenced_at_wire += 1
                    raise
            if previous is not None:
                await previous(event, info)

        request.extensions["trace"] = trace
        try:
            async with asyncio.timeout(deadline):
                return await self._inner.handle_async_request(request)
        except TimeoutError:
            # Bytes already sent may still be applied: the caller treats this like a dropped
            # connection (outcome unknown), and the next target import shows what happened.
            raise httpx.WriteTimeout(
                f"write deadline of {deadline:.2f}s (the lease's remainder) passed", request=request
            ) from None

    async def aclose(self) -> None:
        await self._inner.aclose()


class GraphClient:
    """Sends Graph requests through msgraph-sdk's adapter; one instance per process.

    `node` names this instance in the User-Agent of reads; writes pass the agent of the fence
    they were made under (node and epoch).
    """

    def __init__(
        self,
        settings: GraphSettings,
        *,
        node: str = "standalone",
        read_attempts: int = 6,
        backoff_base: float = 0.5,
    ) -> None:
        self.settings = settings
        self.node = node
        self.read_attempts = read_attempts
        self.backoff_base = backoff_base
        self.base_url = f"{settings.graph_endpoint}/v1.0"
        auth, self._tokens = auth_provider(settings)
        verify: ssl.SSLContext | bool = True
        if settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(settings.ca_file))
        t = settings.request_timeout_seconds
        pool = settings.max_concurrent_batches * 2 + 4
        self.transport = FencedTransport(
            httpx.AsyncHTTPTransport(
                limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
                verify=verify,
                http2=is_microsoft_host(settings.graph_endpoint),
            )
        )
        http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(t, connect=min(t, 10.0)),
            transport=self.transport,
        )
        options = {
            RetryHandlerOption.get_key(): RetryHandlerOption(max_retries=0),
            UserAgentHandlerOption.get_key(): UserAgentHandlerOption(enabled=False),
        }
        self._http = GraphClientFactory.create_with_default_middleware(client=http, options=options)
        self.adapter = BaseGraphRequestAdapter(auth, http_client=self._http)
        self.adapter.base_url = self.base_url
        self.requests_sent = 0
        # One write budget per process: every exporter of this client spends from it.
        self.write_budget = WriteBudget(
            settings.write_budget,
            settings.write_window_seconds,
            pacing=Pacing(ceiling=settings.write_rate_ceiling),
        )

    @property
    def tokens(self) -> CredentialTokenProvider | None:
        """The token cache (None when anonymous)."""
        return self._tokens

    def url(self, path: str) -> str:
        """An absolute URL: links from Graph are used as given, paths get the base URL."""
        return path if "://" in path else self.base_url + path

    async def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        agent: str | None = None,
        headers: Mapping[str, str] | None = None,
        fence: Fence | None = None,
    ) -> GraphResponse:
        """One request, one attempt (after a token refresh when Graph says the token died).

        With `fence`, the request is a write: `FencedTransport` checks the fence right before
        its bytes go out (and before the re-send after a 401) and bounds it by the fence's
        deadline; Fenced is raised when it may not be sent.

        Raises httpx.TransportError when the connection failed: whether a write was applied is
        then unknown, and only the caller can decide how to retry.
        """
        token = _WRITE_FENCE.set(fence)
        try:
            return await self._send(method, path, body=body, agent=agent, headers=headers)
        finally:
            _WRITE_FENCE.reset(token)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None,
        agent: str | None,
        headers: Mapping[str, str] | None,
    ) -> GraphResponse:
        refreshed = False
        while True:
            cid = str(uuid.uuid4())
            ri = RequestInformation()
            ri.http_method = Method[method]
            ri.url = self.url(path)
            ri.headers.try_add("client-request-id", cid)
            ri.headers.try_add("User-Agent", agent or user_agent(self.node))
            ri.headers.try_add("Accept", "application/json")
            for k, v in (headers or {}).items():
                ri.headers.try_add(k, v)
            if body is not None:
                ri.headers.try_add("Content-Type", "application/json")
                ri.content = body
            ri.add_request_options([ResponseHandlerOption(_RAW)])
            self.requests_sent += 1
            resp: httpx.Response = await self.adapter.send_primitive_async(ri, "bytes", None)  # type: ignore[assignment]
            out = GraphResponse(resp.status_code, resp.headers, resp.content, cid)
            if out.status == 401 and self._tokens is not None and not refreshed:
                # The token expired early or was revoked: nothing was done, get a new one and resend.
                code, message = out.error()
                log.info("graph.token_rejected", code=code, message=message)
                sent = resp.request.headers.get("authorization", "")
                await self._tokens.invalidate(sent.removeprefix("Bearer "))
                refreshed = True
                continue
            if out.status == 401:
                code, message = out.error()
                raise GraphAuthError(f"Graph refused the token at {self.base_url}: {code}: {message}")
            return out

    async def get(self, path: str, *, what: str, headers: Mapping[str, str] | None = None) -> GraphResponse:
        """A read, retried on 429/5xx (after Retry-After) and on dropped connections.

        Returns the final response, which may be a 4xx for the caller to interpret; raises
        GraphUnavailable when every attempt failed.
        """
        reason = ""
        for attempt in range(1, self.read_attempts + 1):
            try:
                resp = await self.send("GET", path, headers=headers)
            except TRANSPORT_ERRORS as e:
                reason = f"{type(e).__name__}: {e}"
                wait = backoff(attempt, self.backoff_base)
            else:
                if resp.status not in RETRY_STATUSES:
                    return resp
                code, message = resp.error()
                reason = f"{resp.status} {code}: {message}"
                after = resp.retry_after()
                wait = after if after else backoff(attempt, self.backoff_base)
            if attempt < self.read_attempts:
                log.info("graph.read_retry", what=what, attempt=attempt, wait=round(wait, 2), reason=reason)
                await asyncio.sleep(wait)
        raise GraphUnavailable(what, f"{self.read_attempts} attempts, last: {reason}")

    async def close(self) -> None:
        """Close connections and the credential."""
        await self._http.aclose()
        if self._tokens is not None:
            await self._tokens.close()

    async def __aenter__(self) -> GraphClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
