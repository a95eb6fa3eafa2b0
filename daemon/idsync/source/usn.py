"""Active Directory delta import by uSNChanged polling, for accounts without the replication right.

The position is the DC's highestCommittedUSN read *before* each pass, with the DC's name and
invocationId: uSNChanged is not replicated, so a position is only good on the DC that issued it,
and a changed invocationId (a restored DC) invalidates it. Changed objects are searched at the
naming-context root and scoped client-side, so a move out of scope is seen as a delete; deleted
objects are found with the show-deleted control.
"""

from __future__ import annotations

import contextlib

import ldap3

from idsync.model import OBJECT_TYPES, Quarantined, SourceObject
from idsync.source.connection import LdapSession
from idsync.source.controls import Control, show_deleted_control
from idsync.source.errors import BadEntry, CookieRejected
from idsync.source.full import to_object
from idsync.source.normalize import MEMBER, guid_str, lower_keys, parse_extended_dn
from idsync.source.run import RunContext

WATERMARK = "source.usn"


def position(session: LdapSession) -> tuple[int, str]:
    """(highestCommittedUSN, invocationId) of the bound DC, read now."""
    dse = session.root_dse()
    usn_raw = dse.get("highestcommittedusn")
    service = session.info.ds_service_name
    if not usn_raw or not service:
        raise CookieRejected("usn", session.info.name, "the server does not publish highestCommittedUSN")
    res = session.search(service, "(objectClass=*)", ldap3.BASE, ["invocationId"])
    inv = lower_keys(res.entries[0]["raw_attributes"]).get("invocationid") if res.entries else None
    if not inv:
        raise CookieRejected("usn", session.info.name, f"no invocationId on {service}")
    return int(usn_raw[0]), guid_str(bytes(inv[0]))


def run_delta(ctx: RunContext, ncs: list[str], since: int, controls: list[Control]) -> None:
    """Apply every in-scope object changed after USN `since`, and every object deleted after it."""
    session, scope = ctx.session, ctx.scope
    for nc in ncs:
        for object_type in OBJECT_TYPES:
            attrs = [*scope.attributes, MEMBER] if object_type == "group" else list(scope.attributes)
            search_filter = f"(&{scope.filter_for(object_type)}(uSNChanged>={since + 1}))"
            for page in session.paged(nc, search_filter, attrs, ctx.settings.page_size, controls):
                objects: list[SourceObject] = []
                bad: list[Quarantined] = []
                gone: list[str] = []
                for entry in page:
                    if not scope.in_scope(parse_extended_dn(entry["dn"]).dn):
                        with contextlib.suppress(BadEntry):  # no anchor: nothing of ours
                            gone.append(
                                ctx.normalizer.anchor_of(
                                    entry["dn"], lower_keys(entry["raw_attributes"]), None
                                )
                            )
                        continue
                    try:
                        objects.append(to_object(session, ctx.normalizer, entry, object_type, controls))
                    except BadEntry as exc:
                        bad.append(ctx.bad(exc, object_type))
                ctx.commit(objects, bad=bad, deletes=gone)
        tomb_controls = [*controls, show_deleted_control()]
        tomb_filter = f"(&(isDeleted=TRUE)(uSNChanged>={since + 1}))"
        for page in session.paged(nc, tomb_filter, ["objectGUID"], ctx.settings.page_size, tomb_controls):
            deletes = []
            for entry in page:
                raw = lower_keys(entry["raw_attributes"]).get("objectguid")
                if raw:
                    deletes.append(guid_str(bytes(raw[0])))
            ctx.commit(tombstones=deletes)
