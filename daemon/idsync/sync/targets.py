"""The Microsoft Graph attributes a flow may write, per object type."""

from __future__ import annotations

import re

from idsync.model import ObjectType

USER_ATTRIBUTES = frozenset(
    {
        "accountEnabled",
        "ageGroup",
        "businessPhones",
        "city",
        "companyName",
        "consentProvidedForMinor",
        "country",
        "department",
        "displayName",
        "employeeHireDate",
        "employeeId",
        "employeeLeaveDateTime",
        "employeeType",
        "faxNumber",
        "givenName",
        "jobTitle",
        "mail",
        "mailNickname",
        "mobilePhone",
        "officeLocation",
        "onPremisesImmutableId",
        "otherMails",
        "postalCode",
        "preferredLanguage",
        "showInAddressList",
        "state",
        "streetAddress",
        "surname",
        "usageLocation",
        "userPrincipalName",
        "userType",
    }
    | {f"onPremisesExtensionAttributes.extensionAttribute{i}" for i in range(1, 16)}
)
GROUP_ATTRIBUTES = frozenset(
    {
        "classification",
        "description",
        "displayName",
        "groupTypes",
        "mailEnabled",
        "mailNickname",
        "securityEnabled",
        "visibility",
    }
)
# Graph refuses to create an object without these.
REQUIRED: dict[ObjectType, tuple[str, ...]] = {
    "user": ("accountEnabled", "displayName", "mailNickname", "userPrincipalName"),
    "group": ("displayName", "mailEnabled", "mailNickname", "securityEnabled"),
}
# Directory (schema) extension properties as Graph names them: extension_<appId without dashes>_<name>.
EXTENSION = re.compile(r"^extension_[0-9A-Za-z]+_[A-Za-z][A-Za-z0-9_]*$")


def is_known(object_type: ObjectType, name: str) -> bool:
    """True when `name` is a Graph attribute idsync may manage on this object type."""
    known = USER_ATTRIBUTES if object_type == "user" else GROUP_ATTRIBUTES
    return name in known or bool(EXTENSION.match(name))
