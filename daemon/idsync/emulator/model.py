"""Directory objects and the property schemas of users and groups."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Property kinds: "str", "bool", "strs" (string collection), "dt" (read-only timestamp),
# "pwd" (passwordProfile, write-only), "opext" (onPremisesExtensionAttributes).
USER_WRITABLE: dict[str, str] = {
    "accountEnabled": "bool",
    "ageGroup": "str",
    "businessPhones": "strs",
    "city": "str",
    "companyName": "str",
    "consentProvidedForMinor": "str",
    "country": "str",
    "department": "str",
    "displayName": "str",
    "employeeHireDate": "str",  # a DateTimeOffset, normalised to UTC by users._utc_timestamp
    "employeeId": "str",
    "employeeType": "str",
    "faxNumber": "str",
    "givenName": "str",
    "jobTitle": "str",
    "mail": "str",
    "mailNickname": "str",
    "mobilePhone": "str",
    "officeLocation": "str",
    "onPremisesImmutableId": "str",
    "onPremisesExtensionAttributes": "opext",
    "otherMails": "strs",
    "passwordPolicies": "str",
    "passwordProfile": "pwd",
    "postalCode": "str",
    "preferredLanguage": "str",
    "state": "str",
    "streetAddress": "str",
    "surname": "str",
    "usageLocation": "str",
    "userPrincipalName": "str",
    "userType": "str",
}
USER_READONLY: dict[str, str] = {
    "id": "str",
    "createdDateTime": "dt",
    "deletedDateTime": "dt",
    "creationType": "str",
    "proxyAddresses": "strs",
    "imAddresses": "strs",
    "securityIdentifier": "str",
    "onPremisesSyncEnabled": "bool",
    "onPremisesDistinguishedName": "str",
    "onPremisesDomainName": "str",
    "onPremisesSamAccountName": "str",
    "onPremisesSecurityIdentifier": "str",
    "onPremisesUserPrincipalName": "str",
    "onPremisesLastSyncDateTime": "dt",
}
USER_DEFAULT_SELECT: tuple[str, ...] = (
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
)
# Relationships a $select may name on delta (tracked as annotations, not properties).
USER_RELATIONS = frozenset({"manager"})

GROUP_WRITABLE: dict[str, str] = {
    "classification": "str",
    "description": "str",
    "displayName": "str",
    "groupTypes": "strs",
    "isAssignableToRole": "bool",
    "mailEnabled": "bool",
    "mailNickname": "str",
    "securityEnabled": "bool",
    "visibility": "str",
}
GROUP_READONLY: dict[str, str] = {
    "id": "str",
    "createdDateTime": "dt",
    "deletedDateTime": "dt",
    "mail": "str",
    "proxyAddresses": "strs",
    "renewedDateTime": "dt",
    "securityIdentifier": "str",
    "onPremisesSyncEnabled": "bool",
    "onPremisesDomainName": "str",
    "onPremisesNetBiosName": "str",
    "onPremisesSamAccountName": "str",
    "onPremisesSecurityIdentifier": "str",
    "onPremisesLastSyncDateTime": "dt",
}
GROUP_DEFAULT_SELECT: tuple[str, ...] = (
    "id",
    "classification",
    "createdDateTime",
    "deletedDateTime",
    "description",
    "displayName",
    "groupTypes",
    "isAssignableToRole",
    "mail",
    "mailEnabled",
    "mailNickname",
    "onPremisesLastSyncDateTime",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "proxyAddresses",
    "renewedDateTime",
    "securityEnabled",
    "securityIdentifier",
    "visibility",
)
GROUP_RELATIONS = frozenset({"members", "owners"})

ODATA_TYPE = {"user": "#microsoft.graph.user", "group": "#microsoft.graph.group"}
TYPE_NAME = {"user": "microsoft.graph.user", "group": "microsoft.graph.group"}
RESOURCE = {"user": "User", "group": "Group"}
COLLECTION = {"user": "users", "group": "groups"}


def writable(kind: str) -> dict[str, str]:
    """The writable properties of `kind` ("user" or "group")."""
    return USER_WRITABLE if kind == "user" else GROUP_WRITABLE


def readonly(kind: str) -> dict[str, str]:
    """The read-only properties of `kind`."""
    return USER_READONLY if kind == "user" else GROUP_READONLY


def default_select(kind: str) -> tuple[str, ...]:
    """What Graph returns for `kind` when the request has no $select."""
    return USER_DEFAULT_SELECT if kind == "user" else GROUP_DEFAULT_SELECT


@dataclass(eq=False)
class DirObject:
    """A user or group. `seq` is the global change number of its last change (delta keys on it)."""

    id: str
    kind: str
    props: dict[str, Any]
    seq: int
    created_seq: int
    prop_seq: dict[str, int] = field(default_factory=dict)
    # groups: member id -> seq of the add, kept in seq order (re-inserted on change)
    members: dict[str, int] = field(default_factory=dict)
    # groups: member id -> seq of the removal, for members@delta "@removed"
    removed: dict[str, int] = field(default_factory=dict)
    # users and groups: the groups this object is a direct member of
    member_of: set[str] = field(default_factory=set)
    # soft-deleted users: when, and which groups to give back on restore
    deleted_at: float | None = None
    deleted_groups: list[str] = field(default_factory=list)
    # users: the manager's id, the change number of its last change, and the manager it replaced
    # or removed (for `manager@delta`)
    manager: str | None = None
    manager_seq: int = 0
    manager_was: str | None = None

    def to_state(self) -> dict[str, Any]:
        """A plain dict for the state file."""
        return {
            "id": self.id,
            "kind": self.kind,
            "props": self.props,
            "seq": self.seq,
            "created_seq": self.created_seq,
            "prop_seq": self.prop_seq,
            "members": list(self.members.items()),
            "removed": list(self.removed.items()),
            "member_of": sorted(self.member_of),
            "deleted_at": self.deleted_at,
            "deleted_groups": self.deleted_groups,
            "manager": self.manager,
            "manager_seq": self.manager_seq,
            "manager_was": self.manager_was,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> DirObject:
        """Inverse of `to_state`."""
        return cls(
            id=d["id"],
            kind=d["kind"],
            props=d["props"],
            seq=d["seq"],
            created_seq=d["created_seq"],
            prop_seq=d.get("prop_seq", {}),
            members=dict((k, v) for k, v in d.get("members", [])),
            removed=dict((k, v) for k, v in d.get("removed", [])),
            member_of=set(d.get("member_of", [])),
            deleted_at=d.get("deleted_at"),
            deleted_groups=list(d.get("deleted_groups", [])),
            manager=d.get("manager"),
            manager_seq=int(d.get("manager_seq", 0)),
            manager_was=d.get("manager_was"),
        )


@dataclass(frozen=True)
class Tombstone:
    """A permanently deleted object, kept so delta can report `@removed: deleted`."""

    id: str
    kind: str
    seq: int


# extensionProperty.dataType values (docs-contrib: api-reference/v1.0/resources/extensionproperty.md)
EXTENSION_TYPES = frozenset({"Binary", "Boolean", "DateTime", "Integer", "LargeInteger", "String"})
EXTENSION_TARGETS = frozenset(
    {"User", "Group", "AdministrativeUnit", "Application", "Device", "Organization"}
)


@dataclass
class ExtensionProperty:
    """A registered directory extension (Graph's `extensionProperty`), owned by one application."""

    id: str
    app_id: str  # the owning application's appId (client id)
    name: str  # extension_<appId without dashes>_<short name>
    data_type: str
    target_objects: list[str]
    is_multi_valued: bool = False
    app_display_name: str = ""

    def to_graph(self) -> dict[str, Any]:
        """The resource as Graph returns it."""
        return {
            "@odata.type": "#microsoft.graph.extensionProperty",
            "id": self.id,
            "deletedDateTime": None,
            "appDisplayName": self.app_display_name,
            "dataType": self.data_type,
            "isMultiValued": self.is_multi_valued,
            "isSyncedFromOnPremises": False,
            "name": self.name,
            "targetObjects": list(self.target_objects),
        }

    def to_state(self) -> dict[str, Any]:
        """A plain dict for the state file."""
        return {
            "id": self.id,
            "app_id": self.app_id,
            "name": self.name,
            "data_type": self.data_type,
            "target_objects": self.target_objects,
            "is_multi_valued": self.is_multi_valued,
            "app_display_name": self.app_display_name,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> ExtensionProperty:
        """Inverse of `to_state`."""
        return cls(**d)
