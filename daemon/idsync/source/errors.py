"""Errors of the source connector, each naming the server or object and the reason."""

from __future__ import annotations


class SourceError(Exception):
    """Base class of source-connector errors."""


class SourceUnavailable(SourceError):
    """No configured directory server could be reached and bound."""

    def __init__(self, reasons: dict[str, str]) -> None:
        detail = "; ".join(f"{url}: {why}" for url, why in reasons.items())
        super().__init__(f"no directory server reachable ({detail})")
        self.reasons = reasons


class SourceBindFailed(SourceError):
    """The server answered but refused the bind (wrong DN or password, or TLS required)."""

    def __init__(self, url: str, bind_dn: str | None, reason: str) -> None:
        super().__init__(f"bind as {bind_dn or '(anonymous)'} to {url} failed: {reason}")
        self.url = url
        self.bind_dn = bind_dn
        self.reason = reason


class SearchFailed(SourceError):
    """A search returned an LDAP error result."""

    def __init__(self, base: str, search_filter: str, code: int, description: str, message: str) -> None:
        super().__init__(
            f"search of {base!r} with {search_filter} failed: {code} {description}"
            + (f" ({message.strip()})" if message and message.strip() else "")
        )
        self.base = base
        self.search_filter = search_filter
        self.code = code
        self.description = description
        self.message = message


class CookieRejected(SourceError):
    """The server would not continue from the stored delta position; a full import is needed."""

    def __init__(self, mode: str, server: str, reason: str) -> None:
        super().__init__(f"{mode} position on {server} cannot be used: {reason}")
        self.mode = mode
        self.server = server
        self.reason = reason


class BadEntry(SourceError):
    """One directory entry that cannot be imported; it is quarantined and the import goes on."""

    def __init__(self, dn: str, reason: str, anchor: str | None = None) -> None:
        super().__init__(f"{dn}: {reason}")
        self.dn = dn
        self.reason = reason
        self.anchor = anchor
