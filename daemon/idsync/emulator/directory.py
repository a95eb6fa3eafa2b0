"""`/directory/deletedItems` (list, get, restore, purge), `/directoryObjects/{id}` and `/domains`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from idsync.emulator.call import Call, Reply
from idsync.emulator.errors import conflict, not_found
from idsync.emulator.model import ODATA_TYPE, DirObject
from idsync.emulator.odata import parse_select
from idsync.emulator.schema import render

if TYPE_CHECKING:
    from idsync.emulator.core import Emulator


def _view(obj: DirObject, select: list[str] | None) -> dict[str, Any]:
    out = {"@odata.type": ODATA_TYPE[obj.kind], **render(obj, select)}
    out["deletedDateTime"] = obj.props.get("deletedDateTime")
    return out


def list_deleted(em: Emulator, call: Call, kind: str | None) -> Reply:
    """GET /directory/deletedItems/microsoft.graph.user (or .group; security groups never land here)."""
    select = parse_select(call.query)
    value = [
        _view(o, select)
        for o in em.store.objects.values()
        if o.deleted_at is not None and (kind is None or o.kind == kind)
    ]
    return Reply(200, {"@odata.context": f"{call.base_url}/$metadata#directoryObjects", "value": value})


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
    (proxy address conflicts are resolved with `{"autoReconcileProxyConflict": true}`)."""
    obj = _find_deleted(em, ident)
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
