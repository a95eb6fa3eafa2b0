"""Connections to the directory: servers tried in order, TLS, simple bind, jittered reconnect.

ldap3's SYNC strategy is not thread-safe, so each thread gets its own `LdapSession`
(`LdapConnector.session()`); a session that lost its socket is replaced on the next call.
"""

from __future__ import annotations

import contextlib
import math
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import ldap3
import structlog
from ldap3.core import exceptions as lx

from idsync.source import fastdecode
from idsync.source.controls import PAGED_OID, Control
from idsync.source.errors import SearchFailed, SourceBindFailed, SourceUnavailable
from idsync.source.settings import LdapSourceSettings

log = structlog.get_logger(__name__)

Entry = dict[str, Any]  # an ldap3 response item: dn, raw_attributes, controls, type

_NETWORK_ERRORS = (
    lx.LDAPCommunicationError,
    lx.LDAPSessionTerminatedByServerError,
    lx.LDAPResponseTimeoutError,
    lx.LDAPSocketReceiveError,
    lx.LDAPSocketOpenError,
    lx.LDAPSocketSendError,
)
_ROOT_DSE_ATTRS = [
    "dnsHostName",
    "defaultNamingContext",
    "namingContexts",
    "supportedControl",
    "dsServiceName",
    "highestCommittedUSN",
]


@dataclass(frozen=True)
class ServerInfo:
    """What the root DSE of the bound server says about itself."""

    url: str
    dns_host_name: str | None = None
    default_nc: str | None = None
    naming_contexts: tuple[str, ...] = ()
    supported_controls: frozenset[str] = frozenset()
    ds_service_name: str | None = None

    @property
    def name(self) -> str:
        """The server's identity for watermarks: its DNS host name, else its URL."""
        return (self.dns_host_name or self.url).lower()


@dataclass
class SearchResult:
    """One search response: entries, intermediate messages and the result's controls."""

    entries: list[Entry]
    intermediates: list[Entry] = field(default_factory=list)
    controls: dict[str, Any] = field(default_factory=dict)
    code: int = 0
    message: str = ""


def _first(values: Any) -> bytes | None:
    return bytes(values[0]) if values else None


class LdapSession:
    """One bound connection and the server it is bound to; used by one thread at a time."""

    def __init__(self, conn: ldap3.Connection, url: str) -> None:
        self.conn = conn
        self.url = url
        self.info = ServerInfo(url)
        self.info = self._read_info()

    @property
    def alive(self) -> bool:
        return bool(self.conn.bound and not self.conn.closed)

    def close(self) -> None:
        with contextlib.suppress(lx.LDAPException):  # already gone: nothing to release
            self.conn.unbind()

    def root_dse(self) -> dict[str, list[bytes]]:
        """The root DSE's raw attributes (re-read each call: highestCommittedUSN moves)."""
        res = self.search("", "(objectClass=*)", ldap3.BASE, _ROOT_DSE_ATTRS)
        if not res.entries:
            return {}
        return {k.lower(): [bytes(v) for v in vals] for k, vals in res.entries[0]["raw_attributes"].items()}

    def _read_info(self) -> ServerInfo:
        dse = self.root_dse()

        def text(name: str) -> str | None:
            raw = _first(dse.get(name.lower()))
            return raw.decode() if raw is not None else None

        return ServerInfo(
            url=self.url,
            dns_host_name=text("dnsHostName"),
            default_nc=text("defaultNamingContext"),
            naming_contexts=tuple(v.decode() for v in dse.get("namingcontexts", [])),
            supported_controls=frozenset(v.decode() for v in dse.get("supportedcontrol", [])),
            ds_service_name=text("dsServiceName"),
        )

    def search(
        self,
        base: str,
        search_filter: str,
        scope: Any,
        attributes: Sequence[str],
        controls: Sequence[Control] | None = None,
        *,
        paged_size: int | None = None,
        paged_cookie: bytes | None = None,
        allow: Sequence[int] = (),
    ) -> SearchResult:
        """Run one search; raise SearchFailed for an error result not in `allow`.

        Result code 32 (noSuchObject) on a BASE search is returned, not raised, when allowed.
        """
        try:
            self.conn.search(
                base,
                search_filter,
                search_scope=scope,
                attributes=list(attributes) or ldap3.NO_ATTRIBUTES,
                controls=list(controls) if controls else None,
                paged_size=paged_size,
                paged_cookie=paged_cookie,
                dereference_aliases=ldap3.DEREF_NEVER,
            )
        except _NETWORK_ERRORS as exc:
            self.close()
            raise SourceUnavailable({self.url: f"connection lost during search: {exc}"}) from exc
        result = self.conn.result or {}
        code = int(result.get("result", 0))
        if code not in (0, *allow):
            raise SearchFailed(
                base, search_filter, code, str(result.get("description", "")), str(result.get("message", ""))
            )
        entries: list[Entry] = []
        inter: list[Entry] = []
        for item in self.conn.response or ():
            kind = item.get("type")
            if kind == "searchResEntry":
                entries.append(item)
            elif kind == "intermediateResponse":
                inter.append(item)
        return SearchResult(
            entries, inter, result.get("controls") or {}, code, str(result.get("message", ""))
        )

    def paged(
        self,
        base: str,
        search_filter: str,
        attributes: Sequence[str],
        page_size: int,
        controls: Sequence[Control] | None = None,
        scope: Any = ldap3.SUBTREE,
    ) -> Iterator[list[Entry]]:
        """Pages of a simple-paged-results search (RFC 2696), one list of entries per page.

        The server may return fewer entries than asked (AD caps pages at 1,000); the loop
        follows the cookie, not the count.
        """
        cookie: bytes | None = None
        while True:
            res = self.search(
                base, search_filter, scope, attributes, controls, paged_size=page_size, paged_cookie=cookie
            )
            yield res.entries
            paged = (res.controls.get(PAGED_OID) or {}).get("value") or {}
            cookie = paged.get("cookie") if isinstance(paged, dict) else None
            if not cookie:
                return


class LdapConnector:
    """Opens sessions to the first server that answers, with retries and jittered backoff."""

    def __init__(
        self,
        settings: LdapSourceSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._rand = rand
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[LdapSession] = []

    def _server(self, url: str) -> ldap3.Server:
        s = self.settings
        tls = None
        if url.lower().startswith("ldaps://") or s.start_tls:
            tls = ldap3.Tls(
                validate=ssl.CERT_REQUIRED,
                ca_certs_file=str(s.ca_file) if s.ca_file else None,
                version=ssl.PROTOCOL_TLS_CLIENT,
            )
        return ldap3.Server(url, connect_timeout=s.connect_timeout, get_info=ldap3.NONE, tls=tls)

    def _open_one(self, url: str) -> LdapSession:
        s = self.settings
        password = s.read_password()
        conn = ldap3.Connection(
            self._server(url),
            user=s.bind_dn,
            password=password,
            authentication=ldap3.SIMPLE if s.bind_dn else ldap3.ANONYMOUS,
            auto_bind=ldap3.AUTO_BIND_NONE,
            receive_timeout=max(1, math.ceil(s.read_timeout)),  # ldap3 packs it as an integer
            return_empty_attributes=False,  # absent must stay absent (DirSync: "unchanged")
            auto_range=False,  # ranged values are followed by idsync itself
            raise_exceptions=False,
            read_only=True,
            auto_referrals=False,
        )
        fastdecode.install(conn)
        conn.open()
        if s.start_tls and not url.lower().startswith("ldaps://") and not conn.start_tls():
            conn.unbind()
            raise SourceBindFailed(url, s.bind_dn, f"StartTLS failed: {conn.result}")
        if not conn.bind():
            result = conn.result or {}
            conn.unbind()
            raise SourceBindFailed(
                url, s.bind_dn, f"{result.get('description', '?')} {result.get('message', '')}".strip()
            )
        return LdapSession(conn, url)

    def open(self) -> LdapSession:
        """A new bound session: each URL in order, then again after a jittered backoff.

        A refused bind (bad credentials) is raised at once: retrying would only lock the account.
        """
        s = self.settings
        reasons: dict[str, str] = {}
        delay = s.backoff_initial
        for attempt in range(max(1, s.connect_attempts)):
            if attempt:
                pause = min(s.backoff_max, delay) * (0.5 + 0.5 * self._rand())
                log.info("source.reconnect_wait", seconds=round(pause, 2), attempt=attempt + 1)
                self._sleep(pause)
                delay *= 2
            for url in s.urls:
                try:
                    session = self._open_one(url)
                except SourceBindFailed:
                    raise
                except (lx.LDAPException, OSError, ssl.SSLError) as exc:
                    reasons[url] = str(exc) or type(exc).__name__
                    log.warning("source.connect_failed", url=url, error=reasons[url])
                    continue
                log.info("source.connected", url=url, server=session.info.name)
                with self._lock:
                    self._all.append(session)
                return session
        raise SourceUnavailable(reasons)

    def session(self, *, check: bool = False) -> LdapSession:
        """This thread's session, (re)opened when missing or dead.

        With `check`, a cached session is probed first (its root DSE re-read): a server restart
        is only noticed on the next request, and an import should not start on a dead socket.
        """
        cur: LdapSession | None = getattr(self._local, "session", None)
        if cur is not None and cur.alive and check:
            try:
                cur.info = cur._read_info()
            except (SourceUnavailable, SearchFailed):
                log.info("source.reconnect", url=cur.url, reason="connection lost since the last import")
                cur.close()
                cur = None
        if cur is None or not cur.alive:
            cur = self.open()
            self._local.session = cur
        return cur

    def reset(self) -> None:
        """Drop this thread's session (the next `session()` reconnects)."""
        cur: LdapSession | None = getattr(self._local, "session", None)
        if cur is not None:
            cur.close()
            self._local.session = None

    def close(self) -> None:
        """Close every session this connector opened."""
        with self._lock:
            sessions, self._all = self._all, []
        for sess in sessions:
            sess.close()
        self._local = threading.local()
