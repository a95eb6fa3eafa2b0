"""The target connector's errors: each names the object (or the call) and the reason."""

from __future__ import annotations


class TargetError(Exception):
    """Base class of errors raised by the Graph connector."""


class GraphUnavailable(TargetError):
    """Graph could not be reached, or kept answering 5xx/429, after every retry."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: Graph unavailable: {reason}")
        self.what = what
        self.reason = reason


class GraphAuthError(TargetError):
    """The identity platform refused to issue a token, or Graph refused every token (401/403)."""


class GraphRequestError(TargetError):
    """A read Graph answered with a 4xx that no retry can fix (names the call, code and message)."""

    def __init__(self, what: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{what}: {status} {code}: {message}")
        self.what = what
        self.status = status
        self.code = code
        self.message = message


class ResyncRequired(TargetError):
    """A delta link is stale, expired or unknown to Graph: the round must restart from scratch."""

    def __init__(self, collection: str, status: int, code: str) -> None:
        super().__init__(f"{collection} delta: {status} {code}: token no longer valid, full resync needed")
        self.collection = collection
        self.status = status
        self.code = code


class ExportRejected(TargetError):
    """Graph (or idsync's own guard) refused an export operation on one object.

    `anchor` is the source anchor of the object, `code` Graph's error code (or idsync's, such as
    `NotOwned`), `message` Graph's message as sent.
    """

    def __init__(self, anchor: str, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{anchor}: {code}: {message}")
        self.anchor = anchor
        self.code = code
        self.message = message
        self.status = status


class NotOwned(ExportRejected):
    """idsync refused to delete (or otherwise destroy) an object that does not carry its anchor."""

    def __init__(self, anchor: str, target_id: str, reason: str) -> None:
        super().__init__(anchor, "NotOwned", f"target object {target_id} is not idsync's: {reason}")
        self.target_id = target_id


class PasswordRefused(ExportRejected):
    """The rules' initial password for a user create cannot be used (the expression failed, or its
    result breaks Entra ID's password rules). No retry can fix it: the create is quarantined at
    once. The reason never quotes the password."""

    def __init__(self, anchor: str, reason: str) -> None:
        super().__init__(anchor, "InitialPassword", f"{reason}; quarantined without sending it")
