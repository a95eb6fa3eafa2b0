"""`/directory/deletedItems` (list, get, restore, purge), `/directoryObjects/{id}` and `/domains`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from idsync.emulator import roles
from idsync.emulator.call import Call, Reply
from idsync.emulator.errors import GraphError, bad_request, conflict, not_found, sync_state_not_found
from idsync.emulator.listing import compile_filter, link, page
from idsync.emulator.model import GROUP_RELATIONS, ODATA_TYPE, TYPE_NAME, USER_RELATIONS, DirObject
from idsync.emulator.odata import decode_token, encode_token, parse_select, parse_top
from idsync.emulator.schema import check_select, render

if TYPE_CHECKING:
    from idsync.emulator.core import Emulator


def _view(obj: DirObject, select: list[str] | None) -> dict[str, Any]:
    out = {"@odata.type": ODATA_TYPE[obj.kind], **render(obj, select)}
    if select is None or "deletedDateTime" in select:
        out["deletedDateTime"] = obj.props.get("deletedDateTime")
    return out


def list_deleted(em: Emulator, call: Call, kind: str | None) -> Reply:
    """GET /directory/deletedItems/microsoft.graph.user (or .group; security groups never land here).

    directory-deleteditems-list.md: the OData cast is required ("calling GET
    /directory/deleteditems without a type is not supported"); the list takes "the query
    parameters that are supported by the resource that is specified by the OData cast" — so
    `$filter` and `$select` are checked as on /users or /groups (onPremisesImmutableId supports
    $filter, resources/user.md) — and returns "100 objects by default and ... up to 999 objects
    per page using $top", with nextLink paging. $count, $orderby, $search and $expand (advanced
    queries) are not emulated: 400, never silently ignored.
    """
    if kind is None:
        raise bad_request(
            "The OData cast type is a required part of the URI: list /directory/deletedItems/"
            "microsoft.graph.user or /directory/deletedItems/microsoft.graph.group.",
            code="Request_BadRequest",
        )
    q = dict(call.query)
    after = 0
    tok = q.pop("$skiptoken", None)
    if tok is not None:
        data = decode_token(tok)
        if not data or data.get("g") != em.store.generation or data.get("k") != f"deleted:{kind}":
            raise sync_state_not_found()
        after = int(data["c"])
    for opt in ("$count", "$orderby", "$orderBy", "$expand", "$search", "$skip"):
        if opt in q:
            raise GraphError(
                400,
                "Request_UnsupportedQuery",
                f"The query option {opt} is not supported by the idsync Graph emulator for deleted items.",
            )
    relations = USER_RELATIONS if kind == "user" else GROUP_RELATIONS
    ignore = em.cfg.unregistered_extension_query == "ignore"
    select = check_select(kind, parse_select(q), em.store.extensions, relations, ignore)
    top = parse_top(q, 100, 999)
    st = em.store
    objs: Iterable[DirObject] = st.iter_deleted(kind, after)
    match: Callable[[DirObject], bool] | None = None
    if "$filter" in q:
        _, clauses, match = compile_filter(em, kind, q["$filter"])
        if kind == "user" and all(c.prop == "onPremisesImmutableId" and c.op == "eq" for c in clauses):
            # the recycle bin's lookup by anchor: from the index, not a scan of every deleted user
            found = {o.id: o for c in clauses for v in c.values for o in st.deleted_with_immutable_id(str(v))}
            objs = sorted((o for o in found.values() if o.created_seq > after), key=lambda o: o.created_seq)
    value, last, more = page(objs, match, top, after, lambda o: _view(o, select))
    body: dict[str, Any] = {"@odata.context": f"{call.base_url}/$metadata#directoryObjects", "value": value}
    if more:
        q["$skiptoken"] = encode_token({"g": st.generation, "k": f"deleted:{kind}", "c": last})
        body["@odata.nextLink"] = link(call.base_url, f"/directory/deletedItems/{TYPE_NAME[kind]}", q)
    return Reply(200, body)


def _find_deleted(em: Emulator, ident: str) -> DirObject:
    obj = em.store.deleted(ident)
    if obj is None:
        raise not_found(ident)
    return obj


def get_deleted(em: Emulator, call: Call, ident: str) -> Reply:
    """GET /directory/deletedItems/{id}."""
    obj = _find_deleted(em, ident)
    body = {"@odata.context": f"{call.base_url}/$metadata#directoryObjects/$entity", **_view(obj, None)}
    return Reply(200, body)


def restore(em: Emulator, call: Call, ident: str) -> Reply:
    """POST /directory/deletedItems/{id}/restore -> 200; conflicts if its UPN etc. was reused meanwhile
    (proxy address conflicts are resolved with `{"autoReconcileProxyConflict": true}`).

    The user comes back whole, with the same id: "user resources, including their mailbox and
    license assignments, are moved to a temporary container and if the user is restored within
    30 days, these objects are restored to them. The user is also restored to any groups they
    were a member of" (user-delete.md). "In app-only scenarios, the User.ReadWrite.All
    application permission isn't enough privilege to restore deleted users with administrator
    roles" (directory-deleteditems-restore.md): 403 as for deleting one.
    """
    obj = _find_deleted(em, ident)
    if obj.kind == "user":
        roles.check_sensitive_change(em, call, obj, None)
    st = em.store
    body = call.json() if call.body or call.parsed is not None else {}
    if body.get("autoReconcileProxyConflict") is True:
        # Graph drops the restored user's proxy addresses that an active object now holds
        keep = [
            a for a in obj.props.get("proxyAddresses") or [] if a.split(":", 1)[-1].lower() not in st.by_proxy
        ]
        obj.props["proxyAddresses"] = keep
    prop = st.conflict_with(obj.id, st.keys_of(obj))
    if prop:
        raise conflict(prop)
    st.restore(obj)
    body = {
        "@odata.context": f"{call.base_url}/$metadata#directoryObjects/$entity",
        "@odata.type": ODATA_TYPE[obj.kind],
        **render(obj, None),
    }
    return Reply(200, body)


def purge(em: Emulator, call: Call, ident: str) -> Reply:
    """DELETE /directory/deletedItems/{id} -> 204, permanently."""
    em.store.purge(_find_deleted(em, ident))
    return Reply(204)


def get_directory_object(em: Emulator, call: Call, ident: str) -> Reply:
    """GET /directoryObjects/{id}: a user or group with its `@odata.type`."""
    obj = em.store.live(None, ident)
    if obj is None:
        raise not_found(ident)
    select = parse_select(call.query)
    body = {
        "@odata.context": f"{call.base_url}/$metadata#directoryObjects/$entity",
        "@odata.type": ODATA_TYPE[obj.kind],
        **render(em.store.visible(obj), select),
    }
    return Reply(200, body)


def get_organization(em: Emulator, call: Call) -> Reply:
    """GET /organization: the tenant, with its `verifiedDomains` (organization-get.md;
    user-update.md points UPN domains there)."""
    initial = initial_domain(em.cfg.domains)
    verified = [
        {
            "capabilities": "Email",
            "isDefault": i == 0,
            "isInitial": d == initial,
            "name": d,
            "type": authentication_type(em, d),
        }
        for i, d in enumerate(em.cfg.domains)
    ]
    org = {
        "@odata.type": "#microsoft.graph.organization",
        "id": em.cfg.tenant_id,
        "displayName": "idsync emulated tenant",
        "verifiedDomains": verified,
        "onPremisesSyncEnabled": None,
    }
    return Reply(200, {"@odata.context": f"{call.base_url}/$metadata#organization", "value": [org]})


def initial_domain(domains: list[str]) -> str | None:
    """The tenant's initial domain: the `<name>.onmicrosoft.com` one Microsoft creates with every
    tenant (resources/domain.md, isInitial), else the first configured domain."""
    return next((d for d in domains if d.endswith(".onmicrosoft.com")), domains[0] if domains else None)


def authentication_type(em: Emulator, domain: str) -> str:
    """resources/domain.md, authenticationType: "The value is either Managed or Federated. Managed
    indicates a cloud managed domain where Microsoft Entra ID performs user authentication.
    Federated indicates authentication is federated with an identity provider" (`--federated-domain`)."""
    federated = {f.lower() for f in em.cfg.federated_domains}
    return "Federated" if domain.lower() in federated else "Managed"


def list_domains(em: Emulator, call: Call) -> Reply:
    """GET /domains: the verified domains UPNs may use (resources/domain.md)."""
    initial = initial_domain(em.cfg.domains)
    value = [
        {
            "id": d,
            "isVerified": True,
            "isDefault": i == 0,
            "isInitial": d == initial,
            "authenticationType": authentication_type(em, d),
            "supportedServices": ["Email"],
        }
        for i, d in enumerate(em.cfg.domains)
    ]
    return Reply(200, {"@odata.context": f"{call.base_url}/$metadata#domains", "value": value})
