"""Which Graph attributes idsync reads and writes, and which target objects are idsync's own.

Ownership (docs/target.md): a target object is idsync's when it carries idsync's anchor — a
non-empty `onPremisesImmutableId` on a user, a non-empty anchor extension attribute on a group —
and is not mastered by Entra Connect (`onPremisesSyncEnabled` true: Graph cannot write it). The
target space stores that anchor value in `target_object.anchor`; every other object has NULL
there and is *foreign*: idsync never deletes it, and adopts it only when the sync engine joins it
to a source object (soft match), by writing the anchor onto it.

Attribute names are kept flat, as the sync rules name them:
`onPremisesExtensionAttributes.extensionAttribute1` in idsync is the nested property in Graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from idsync.model import ObjectType

EXT_ATTRS = "onPremisesExtensionAttributes"
SYNC_FLAG = "onPremisesSyncEnabled"
USER_ANCHOR = "onPremisesImmutableId"

# The attributes of the standard AD flows (sync/defaults.py); the daemon passes the rules' own.
DEFAULT_USER_ATTRIBUTES: tuple[str, ...] = (
    "accountEnabled",
    "businessPhones",
    "city",
    "companyName",
    "country",
    "department",
    "displayName",
    "employeeId",
    "employeeType",
    "faxNumber",
    "givenName",
    "jobTitle",
    "mail",
    "mailNickname",
    "mobilePhone",
    "officeLocation",
    "postalCode",
    "state",
    "streetAddress",
    "surname",
    "usageLocation",
    "userPrincipalName",
)
DEFAULT_GROUP_ATTRIBUTES: tuple[str, ...] = (
    "description",
    "displayName",
    "mailEnabled",
    "mailNickname",
    "securityEnabled",
)


@dataclass(frozen=True)
class TargetSchema:
    """The managed attributes per type and the attribute carrying idsync's anchor per type."""

    group_anchor: str
    user_attributes: tuple[str, ...] = DEFAULT_USER_ATTRIBUTES
    group_attributes: tuple[str, ...] = DEFAULT_GROUP_ATTRIBUTES
    user_anchor: str = USER_ANCHOR
    # Track each user's manager: `$select=manager` on users/delta gives `manager@delta`
    # ("$select also supports manager and members navigation properties for users and groups
    # respectively", docs-contrib concepts/delta-query-overview.md).
    manager: bool = False

    def anchor_attribute(self, object_type: ObjectType) -> str:
        """The Graph property holding idsync's anchor on objects of this type."""
        return self.user_anchor if object_type == "user" else self.group_anchor

    def attributes(self, object_type: ObjectType) -> tuple[str, ...]:
        """The managed attributes (flat names) of this type."""
        return self.user_attributes if object_type == "user" else self.group_attributes

    def select(self, object_type: ObjectType) -> list[str]:
        """The delta `$select`: managed attributes, the anchor, the Entra Connect flag, members."""
        names = {a.split(".", 1)[0] for a in self.attributes(object_type)}
        names.add(self.anchor_attribute(object_type))
        names.add(SYNC_FLAG)
        out = sorted(names)
        if object_type == "group":
            out.append("members")
        elif self.manager:
            out.append("manager")
        return out

    def signature(self, object_type: ObjectType) -> str:
        """A stable text of the `$select`: delta links made for another one are not reused."""
        return ",".join(self.select(object_type))


# Instance annotations a delta item may carry next to its properties.
ANNOTATIONS = ("members@delta", "manager@delta", "@removed", "@odata.type", "@odata.id", "@odata.etag")


def flatten(item: Mapping[str, Any]) -> dict[str, Any]:
    """A Graph object's properties as idsync names them (no id, no annotations, flat extensions)."""
    out = dict(item)  # the import's hot path: copy, then take out the few keys that are no property
    out.pop("id", None)
    for name in ANNOTATIONS:
        out.pop(name, None)
    ext = out.pop(EXT_ATTRS, None)
    if isinstance(ext, dict):
        for name, val in ext.items():
            if "@" not in name:
                out[f"{EXT_ATTRS}.{name}"] = val
    elif ext is not None:
        out[EXT_ATTRS] = ext
    return out


def nest(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """idsync's flat names back into a Graph request body."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if k.startswith(EXT_ATTRS + "."):
            out.setdefault(EXT_ATTRS, {})[k.split(".", 1)[1]] = v
        else:
            out[k] = v
    return out


def owned_anchor(item: Mapping[str, Any], anchor_attribute: str) -> str | None:
    """idsync's anchor on a Graph object, or None when the object is foreign."""
    if item.get(SYNC_FLAG) is True:
        return None  # mastered by Entra Connect: read-only to Graph, never idsync's
    value = item.get(anchor_attribute)
    if isinstance(value, str) and value.strip():
        return value
    return None


def odata_quote(value: str) -> str:
    """A string literal for `$filter`."""
    return "'" + value.replace("'", "''") + "'"


def anchor_filter(anchor_attribute: str, values: Iterable[str]) -> str:
    """`$filter` matching any of `values` in the anchor attribute."""
    vals = list(values)
    if len(vals) == 1:
        return f"{anchor_attribute} eq {odata_quote(vals[0])}"
    return f"{anchor_attribute} in ({', '.join(odata_quote(v) for v in vals)})"
