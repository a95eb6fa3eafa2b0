"""`/applications` and directory extensions (`extensionProperties`, getAvailableExtensionProperties).

Every configured client has an application object (id, appId) and a service principal; a
directory extension exists only once it is registered on an application
(docs-contrib: api-reference/v1.0/resources/extensionproperty.md,
api-reference/v1.0/api/application-post-extensionproperty.md).
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from idsync.emulator.call import Call, Reply
from idsync.emulator.config import ClientSpec, application_object_id, service_principal_id
from idsync.emulator.errors import GraphError, bad_request, conflict, forbidden, invalid_value, not_found
from idsync.emulator.model import EXTENSION_TARGETS, EXTENSION_TYPES, ExtensionProperty
from idsync.emulator.odata import parse_filter

if TYPE_CHECKING:
    from idsync.emulator.core import Emulator

# A directory extension's short name: Graph documents no rule; letters, digits and `_` are
# what every documented example uses, so the emulator accepts exactly those.
_SHORT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")
# Permissions that let an app manage every application, not only those it owns.
_ALL_APPS = frozenset({"Application.ReadWrite.All"})
_READ_ALL_APPS = frozenset({"Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All"})


def _apps(em: Emulator) -> list[ClientSpec]:
    return em.cfg.clients()


def _view(c: ClientSpec) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.application",
        "id": application_object_id(c.client_id),
        "appId": c.client_id,
        "displayName": c.display_name or c.client_id,
        "signInAudience": "AzureADMyOrg",
        "deletedDateTime": None,
    }


def find_app(em: Emulator, segment: str) -> ClientSpec:
    """`{id}` or `(appId='{appId}')` addressing (both in application-post-extensionproperty.md)."""
    if segment.startswith("applications("):
        inner = segment[len("applications(") : -1] if segment.endswith(")") else ""
        key, _, val = inner.partition("=")
        if key.strip() != "appId" or not val:
            raise bad_request(f"Invalid key segment '{inner}'.", code="BadRequest")
        app_id = val.strip().strip("'")
        for c in _apps(em):
            if c.client_id.lower() == app_id.lower():
                return c
        raise not_found(app_id)
    for c in _apps(em):
        if application_object_id(c.client_id) == segment:
            return c
    raise not_found(segment)


def _owned(call: Call, app: ClientSpec) -> bool:
    # Application.ReadWrite.OwnedBy: only applications the calling app owns. The emulator makes
    # each app's service principal an owner of its own application, which OwnedBy needs.
    return call.principal == service_principal_id(app.client_id)


def _check_write(call: Call, app: ClientSpec) -> None:
    if not (call.roles & _ALL_APPS) and not _owned(call, app):
        raise forbidden()


def _check_read(call: Call, app: ClientSpec) -> None:
    if not (call.roles & _READ_ALL_APPS) and not _owned(call, app):
        raise forbidden()


def list_applications(em: Emulator, call: Call) -> Reply:
    """GET /applications, with `$filter=appId eq '...'` (application-list.md)."""
    apps = [a for a in _apps(em) if call.roles & _READ_ALL_APPS or _owned(call, a)]
    if "$filter" in call.query:
        _, clauses = parse_filter(call.query["$filter"])
        for c in clauses:
            if c.prop not in ("appId", "id", "displayName") or c.op != "eq":
                raise GraphError(
                    400,
                    "Request_UnsupportedQuery",
                    f"Unsupported or invalid query filter clause specified for property '{c.prop}' of "
                    "resource 'Application'.",
                )
        apps = [a for a in apps if all(_view(a).get(c.prop) in c.values for c in clauses)]
    value = [_view(a) for a in apps]
    return Reply(200, {"@odata.context": f"{call.base_url}/$metadata#applications", "value": value})


def get_application(em: Emulator, call: Call, segment: str) -> Reply:
    """GET /applications/{id} or /applications(appId='{appId}') (application-get.md)."""
    app = find_app(em, segment)
    _check_read(call, app)
    return Reply(200, {"@odata.context": f"{call.base_url}/$metadata#applications/$entity", **_view(app)})


def _app_ctx(call: Call, app: ClientSpec) -> str:
    return f"{call.base_url}/$metadata#applications('{application_object_id(app.client_id)}')"


def _props_of(em: Emulator, app: ClientSpec) -> list[ExtensionProperty]:
    return [e for e in em.store.extensions.values() if e.app_id.lower() == app.client_id.lower()]


def list_extension_properties(em: Emulator, call: Call, segment: str) -> Reply:
    """GET /applications/{id}/extensionProperties (application-list-extensionproperty.md)."""
    app = find_app(em, segment)
    _check_read(call, app)
    ctx = f"{_app_ctx(call, app)}/extensionProperties"
    value = [e.to_graph() for e in _props_of(em, app)]
    return Reply(200, {"@odata.context": ctx, "value": value})


def get_extension_property(em: Emulator, call: Call, segment: str, ext_id: str) -> Reply:
    """GET /applications/{id}/extensionProperties/{id} (extensionproperty-get.md)."""
    app = find_app(em, segment)
    _check_read(call, app)
    for e in _props_of(em, app):
        if e.id == ext_id:
            return Reply(200, e.to_graph())
    raise not_found(ext_id)


def register(
    em: Emulator,
    app: ClientSpec,
    short: str,
    data_type: str = "String",
    targets: list[str] | None = None,
    multi: bool = False,
) -> ExtensionProperty:
    """Register `extension_<appId>_<short>` on `app`; 400 as Graph for bad or duplicate input."""
    if not isinstance(short, str) or not _SHORT_NAME.match(short):
        raise invalid_value("name", "ExtensionProperty")
    if data_type not in EXTENSION_TYPES:
        raise invalid_value("dataType", "ExtensionProperty")
    targets = targets if targets is not None else ["User", "Group"]
    if not targets or not all(isinstance(t, str) and t in EXTENSION_TARGETS for t in targets):
        raise invalid_value("targetObjects", "ExtensionProperty")
    name = em.cfg.extension_name(short, app.client_id)
    if name in em.store.extensions:
        # Microsoft documents no answer for a duplicate registration: the directory's
        # uniqueness error (ObjectConflict on `name`) is the emulator's guess
        raise conflict("name")
    ext = ExtensionProperty(
        id=str(uuid.uuid4()),
        app_id=app.client_id,
        name=name,
        data_type=data_type,
        target_objects=list(targets),
        is_multi_valued=multi,
        app_display_name=app.display_name or app.client_id,
    )
    em.store.extensions[name] = ext
    return ext


def create_extension_property(em: Emulator, call: Call, segment: str) -> Reply:
    """POST /applications/{id}/extensionProperties -> 201 and the extensionProperty."""
    app = find_app(em, segment)
    _check_write(call, app)
    body = call.json()
    for k in body:
        if k not in ("name", "dataType", "targetObjects", "isMultiValued") and not k.startswith("@"):
            raise GraphError(
                400,
                "BadRequest",
                f"The property '{k}' does not exist on type 'microsoft.graph.extensionProperty'. Make sure "
                "to only use property names that are defined by the type.",
            )
    for k in ("name", "dataType", "targetObjects"):
        if body.get(k) is None:
            raise invalid_value(k, "ExtensionProperty")
    multi = body.get("isMultiValued", False)
    if not isinstance(multi, bool) or not isinstance(body["targetObjects"], list):
        raise invalid_value(
            "isMultiValued" if not isinstance(multi, bool) else "targetObjects", "ExtensionProperty"
        )
    ext = register(em, app, body["name"], body["dataType"], body["targetObjects"], multi)
    ctx = f"{_app_ctx(call, app)}/extensionProperties/$entity"
    return Reply(201, {"@odata.context": ctx, **ext.to_graph()})


def delete_extension_property(em: Emulator, call: Call, segment: str, ext_id: str) -> Reply:
    """DELETE /applications/{id}/extensionProperties/{id} -> 204 (extensionproperty-delete.md).
    Values already written stay on the objects but can no longer be read or written."""
    app = find_app(em, segment)
    _check_write(call, app)
    for e in _props_of(em, app):
        if e.id == ext_id:
            del em.store.extensions[e.name]
            return Reply(204)
    raise not_found(ext_id)


def available_extension_properties(em: Emulator, call: Call) -> Reply:
    """POST /directoryObjects/getAvailableExtensionProperties -> 200 and every registered
    extension (directoryobject-getavailableextensionproperties.md); `isSyncedFromOnPremises`
    true lists none, since the emulator has no Entra Connect."""
    body = call.json() if call.body or call.parsed is not None else {}
    synced = body.get("isSyncedFromOnPremises")
    if synced is not None and not isinstance(synced, bool):
        raise invalid_value("isSyncedFromOnPremises", "getAvailableExtensionProperties")
    value = [] if synced is True else [e.to_graph() for e in em.store.extensions.values()]
    return Reply(
        200,
        {
            "@odata.context": f"{call.base_url}/$metadata#Collection(microsoft.graph.extensionProperty)",
            "value": value,
        },
    )


def _sp_view(spec: ClientSpec) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.servicePrincipal",
        "id": service_principal_id(spec.client_id),
        "appId": spec.client_id,
        "displayName": spec.display_name or spec.client_id,
        "servicePrincipalType": "Application",
    }


def list_service_principals(em: Emulator, call: Call) -> Reply:
    """GET /servicePrincipals, with `$filter=appId eq '...'` (serviceprincipal-list.md)."""
    sps = [_sp_view(a) for a in _apps(em)]
    if "$filter" in call.query:
        _, clauses = parse_filter(call.query["$filter"])
        for c in clauses:
            if c.prop not in ("appId", "id", "displayName") or c.op != "eq":
                raise GraphError(
                    400,
                    "Request_UnsupportedQuery",
                    f"Unsupported or invalid query filter clause specified for property '{c.prop}' of "
                    "resource 'ServicePrincipal'.",
                )
        sps = [sp for sp in sps if all(sp.get(c.prop) in c.values for c in clauses)]
    return Reply(200, {"@odata.context": f"{call.base_url}/$metadata#servicePrincipals", "value": sps})


def find_service_principal(em: Emulator, segment: str) -> ClientSpec:
    """`{id}` or `(appId='{appId}')` addressing of a client's service principal, or 404."""
    spec: ClientSpec | None = None
    if segment.startswith("servicePrincipals("):
        inner = segment[len("servicePrincipals(") : -1]
        key, _, val = inner.partition("=")
        if key.strip() != "appId":
            raise bad_request(f"Invalid key segment '{inner}'.", code="BadRequest")
        app_id = val.strip().strip("'")
        spec = next((c for c in _apps(em) if c.client_id.lower() == app_id.lower()), None)
    else:
        spec = next((c for c in _apps(em) if service_principal_id(c.client_id) == segment), None)
    if spec is None:
        raise not_found(segment)
    return spec


def get_service_principal(em: Emulator, call: Call, segment: str) -> Reply:
    """GET /servicePrincipals/{id} or /servicePrincipals(appId='{appId}') (serviceprincipal-get.md):
    enough to find the id a directory role is assigned to."""
    spec = find_service_principal(em, segment)
    body = {"@odata.context": f"{call.base_url}/$metadata#servicePrincipals/$entity", **_sp_view(spec)}
    return Reply(200, body)
