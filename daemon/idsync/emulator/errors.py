"""Graph's error bodies, as real Microsoft Graph returns them.

Handlers raise `GraphError`; the HTTP edge and `$batch` turn it into
`{"error": {"code", "message", "innerError": {...}, "details"?}}`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class GraphError(Exception):
    """A Graph error response: HTTP status, `error.code`, `error.message` and optional details."""

    status: int
    code: str
    message: str
    details: list[dict[str, str]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    inner: dict[str, str] | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    def body(self, client_request_id: str | None = None, request_id: str | None = None) -> dict[str, Any]:
        """The JSON body Graph sends for this error."""
        inner: dict[str, str] = {
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "request-id": request_id or str(uuid.uuid4()),
            "client-request-id": client_request_id or request_id or str(uuid.uuid4()),
        }
        if self.inner:
            inner.update(self.inner)
        err: dict[str, Any] = {"code": self.code, "message": self.message, "innerError": inner}
        if self.details is not None:
            err["details"] = self.details
        return {"error": err}


def not_found(ident: str) -> GraphError:
    """404 for an object id (or UPN) that names nothing."""
    return GraphError(
        404,
        "Request_ResourceNotFound",
        f"Resource '{ident}' does not exist or one of its queried reference-property objects "
        "are not present.",
    )


def bad_request(message: str, code: str = "Request_BadRequest", **kw: Any) -> GraphError:
    """400 with Graph's directory code by default."""
    return GraphError(400, code, message, **kw)


def invalid_value(prop: str, resource: str) -> GraphError:
    """400 for a missing required property or a value Graph refuses."""
    return bad_request(f"Invalid value specified for property '{prop}' of resource '{resource}'.")


def conflict(prop: str) -> GraphError:
    """400 ObjectConflict: the uniqueness error Graph returns for UPN, proxyAddresses, immutable id."""
    return bad_request(
        f"Another object with the same value for property {prop} already exists.",
        details=[{"code": "ObjectConflict", "message": "", "target": prop}],
    )


def unknown_property(prop: str, odata_type: str) -> GraphError:
    """400 for a body property the type does not declare."""
    return GraphError(
        400,
        "BadRequest",
        f"The property '{prop}' does not exist on type '{odata_type}'. "
        "Make sure to only use property names that are defined by the type.",
    )


def unknown_extension(prop: str) -> GraphError:
    """400 for an `extension_<appid>_<name>` property that is not registered."""
    return bad_request(f"Property '{prop}' does not exist as a declared property or extension property.")


def extensions_not_available(names: list[str]) -> GraphError:
    """400 for `extension_<appid>_<name>` properties in a body that no application registered
    (or not for this object type). Microsoft's pages do not give the message; this is the one
    Graph returns in practice (observed: microsoftgraph/msgraph-sdk-dotnet#2680,
    Azure-Samples/ms-identity-dotnetcore-b2c-account-management#17)."""
    return bad_request(f"The following extension properties are not available: {','.join(names)}.")


def forbidden() -> GraphError:
    """403 for a call the token's application permissions (or the app's directory roles) do not
    allow (docs-contrib: concepts/json-batching.md shows this body; concepts/errors.md lists it)."""
    return GraphError(
        403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
    )


def read_only(prop: str) -> GraphError:
    """400 for writing a property Graph computes or that only sync can set."""
    return bad_request(f"Property '{prop}' is read-only and cannot be set.")


CLOUD_MASTERED = frozenset({"usageLocation", "preferredLanguage", "passwordPolicies", "passwordProfile"})


def check_cloud_writable(props: dict[str, Any], names: object = ()) -> None:
    """400 when a write touches an object Entra Connect syncs from on-premises AD.

    `props` are the target object's properties; `names` the properties being written (empty for
    deletes and membership changes, which are refused outright).
    """
    written = set(names)  # type: ignore[call-overload]
    if props.get("onPremisesSyncEnabled") is False and "onPremisesExtensionAttributes" in written:
        # user.md: for a cloud-only user previously synced from on-premises AD,
        # onPremisesExtensionAttributes are read-only in Graph. Microsoft gives no message for
        # this case; the emulator answers as for a synced object.
        raise bad_request(
            "Unable to update the specified properties for on-premises mastered Directory Sync objects "
            "or objects currently undergoing migration."
        )
    if props.get("onPremisesSyncEnabled") is not True:
        return
    if written and written <= CLOUD_MASTERED:
        return
    raise bad_request(
        "Unable to update the specified properties for on-premises mastered Directory Sync objects or "
        "objects currently undergoing migration."
    )


def method_not_allowed() -> GraphError:
    """405 as Graph sends it for a method the target does not support."""
    return GraphError(
        405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target."
    )


def segment_not_found(segment: str) -> GraphError:
    """400 for a URL segment Graph does not know."""
    return GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")


def invalid_object_id(ident: str) -> GraphError:
    """400 for an id that is not a GUID where Graph requires one."""
    return bad_request(f"Invalid object identifier '{ident}'.")


def sync_state_not_found() -> GraphError:
    """400 for an expired, stale or unknown delta token: the client must resync."""
    return GraphError(
        400,
        "syncStateNotFound",
        "The sync state generation is not found. The delta token is expired and data must be "
        "synchronized again.",
    )


def too_many_requests(retry_after: int, scope: str, info: str) -> GraphError:
    """429 with Retry-After and the x-ms-throttle-* headers."""
    return GraphError(
        429,
        "TooManyRequests",
        "Please retry again later.",
        headers={
            "Retry-After": str(retry_after),
            "x-ms-throttle-scope": scope,
            "x-ms-throttle-information": info,
        },
        inner={"code": "429", "message": "Please retry after", "status": "429"},
    )


def unauthorized(message: str) -> GraphError:
    """401 for a missing, malformed or expired bearer token."""
    return GraphError(
        401,
        "InvalidAuthenticationToken",
        message,
        headers={"WWW-Authenticate": 'Bearer realm="", authorization_uri="", error="invalid_token"'},
    )


STATUS_MESSAGES = {
    500: "An internal server error occurred.",
    502: "Bad gateway.",
    503: "The service is temporarily unavailable. Please retry later.",
    504: "The request timed out.",
}
