"""The recycle bin: a user to create whose anchor a soft-deleted user carries is restored instead.

A user deleted in Entra ID stays in `/directory/deletedItems` for 30 days, and "if the user is
restored within 30 days, [its mailbox and license assignments] are restored to them. The user is
also restored to any groups they were a member of" (docs-contrib api-reference/v1.0/api/
user-delete.md). A user that leaves scope (deprovision "delete") and comes back, or one restored
in AD, must therefore get that object back — Entra Connect restores by hard match too — not a new
one without its mailbox, licences, cloud group memberships and MFA methods.

How the export finds it: with the lookup of the live anchor, in the same read `$batch`, one
`GET /directory/deletedItems/microsoft.graph.user?$filter=onPremisesImmutableId eq '…'`. The list
"supports the query parameters that are supported by the resource that is specified by the
OData cast" (directory-deleteditems-list.md) and onPremisesImmutableId "Supports $filter"
(resources/user.md). One read per user create, whatever the size of the recycle bin — listing
it instead would cost a page per 999 deleted users on every export run.

Then `POST /directory/deletedItems/{id}/restore` (directory-deleteditems-restore.md) goes out in
the write `$batch` in place of the create; the next target import shows the user again, the
sync engine links it by its anchor, and the normal update brings its attributes in line. A
restore that conflicts (its userPrincipalName, proxy address or immutable id was taken
meanwhile) is quarantined with the reason: nothing is created beside it, nothing is lost.

Only users: "Security groups and Distribution groups … are permanently deleted immediately"
and restore "is not applicable to security groups" (group-delete.md,
directory-deleteditems-restore.md); the groups idsync creates are security groups.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import structlog

from idsync.target.batch import SubRequest, SubResponse
from idsync.target.client import error_of
from idsync.target.errors import ExportRejected
from idsync.target.schema import SYNC_FLAG, USER_ANCHOR, anchor_filter, owned_anchor

log = structlog.get_logger(__name__)

DELETED_USERS = "/directory/deletedItems/microsoft.graph.user"
# A `$batch` POST item without a body and Content-Type is refused ("Write request id : … does not
# contain Content-Type header or body.", see emulator/batch.py); the restore takes no option idsync
# wants (autoReconcileProxyConflict would drop the user's conflicting proxy addresses).
RESTORE_BODY: dict[str, Any] = {}


@dataclass(frozen=True)
class DeletedUser:
    """A soft-deleted user carrying the anchor of a user idsync is about to create."""

    id: str
    deleted: str | None  # deletedDateTime
    upn: str | None


def restorable(object_type: str, anchor_attribute: str) -> bool:
    """Whether a create of this type can be a restore: users anchored by onPremisesImmutableId."""
    return object_type == "user" and anchor_attribute == USER_ANCHOR


def lookup(sub_id: str, value: str) -> SubRequest:
    """The recycle-bin read for one anchor (a sub-request of the lookup `$batch`)."""
    filt = quote(anchor_filter(USER_ANCHOR, [value]), safe="")
    select = f"id,{USER_ANCHOR},{SYNC_FLAG},userPrincipalName,deletedDateTime"
    url = f"{DELETED_USERS}?$filter={filt}&$select={select}"
    return SubRequest(sub_id, "GET", url, client_request_id=str(uuid.uuid4()))


def pick(sub: SubResponse | None, anchor: str, value: str) -> DeletedUser | None:
    """The deleted user to restore for `value`, if the recycle bin holds one of idsync's.

    Several (a tenant where someone created and deleted it twice): the most recently deleted one.
    An unreadable recycle bin is logged and the create goes ahead, as it did before restores.
    """
    if sub is None:
        return None
    if sub.status != 200:
        code, message = error_of(sub.status, sub.body)
        log.warning(
            "export.recycle_bin_unreadable", anchor=anchor, status=sub.status, code=code, error=message
        )
        return None
    found = [
        o
        for o in (sub.body or {}).get("value", [])
        if isinstance(o, dict) and isinstance(o.get("id"), str) and owned_anchor(o, USER_ANCHOR) == value
    ]
    if not found:
        return None
    if len(found) > 1:
        log.warning("export.recycle_bin_duplicates", anchor=anchor, ids=[o["id"] for o in found])
    best = max(found, key=lambda o: (str(o.get("deletedDateTime") or ""), o["id"]))
    return DeletedUser(best["id"], best.get("deletedDateTime"), best.get("userPrincipalName"))


def restore_url(deleted: DeletedUser) -> str:
    """The write that brings it back."""
    return f"/directory/deletedItems/{deleted.id}/restore"


def refused(anchor: str, deleted_id: str, status: int, body: Any) -> ExportRejected:
    """Why a restore failed, for the quarantine: the object, Graph's reason, and what to do."""
    code, message = error_of(status, body)
    err = body.get("error") if isinstance(body, dict) else None
    details = (err or {}).get("details") if isinstance(err, dict) else None
    taken = next(
        (d.get("target") for d in details or [] if isinstance(d, dict) and d.get("code") == "ObjectConflict"),
        None,
    )
    if taken or "already exists" in message:
        what = f"its {taken}" if taken else "one of its unique values"
        fix = (
            f"another object took {what} while it was deleted; nothing was created beside it (free"
            " the value, or purge the deleted user to let idsync create a new one, then"
            " `idsync quarantine retry`)"
        )
    elif status == 403:
        fix = (
            "an app-only caller needs a privileged role of its own to restore a user that holds an"
            " administrator role (directory-deleteditems-restore.md); restore it by hand or give the"
            " app's service principal that role, then `idsync quarantine retry`"
        )
    else:
        fix = "look at the deleted user in the portal, then `idsync quarantine retry`"
    return ExportRejected(
        anchor,
        code,
        f"restoring the deleted user {deleted_id}, which carries this anchor, failed: {message} — {fix}",
        status,
    )
