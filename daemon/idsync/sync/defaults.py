"""The rules idsync ships: Entra Connect's standard flows, for Active Directory and OpenLDAP.

A rules file starts from one of these presets (`preset = "ad" | "openldap" | "none"`) and
overrides what it needs; docs/rules.md lists them for operators. In expressions, `source.x` is
the first value of source attribute x (null when absent), `values.x` all its values, `anchor` the
source anchor (objectGUID / entryUUID) and `dn` the object's DN.
"""

from __future__ import annotations

from typing import Any

# Directory extension that carries a group's source anchor (groups have no onPremisesImmutableId).
# With real Entra ID set `directory_extension_app` to the app id (without dashes) that owns it.
DEFAULT_EXTENSION_APP = "idsync"
GROUP_ANCHOR_NAME = "idsyncSourceAnchor"


def group_anchor_attribute(app: str) -> str:
    return f"extension_{app.replace('-', '')}_{GROUP_ANCHOR_NAME}"


_AD_USER_FLOWS = {
    "userPrincipalName": "source.userprincipalname",
    "displayName": "coalesce(source.displayname, join([source.givenname, source.sn], ' '), source.cn)",
    "givenName": "source.givenname",
    "surname": "source.sn",
    "mail": "source.mail",
    # Graph's mailNickname rules (sync/functions.py): ASCII, no blanks or specials, ≤ 64.
    "mailNickname": "mail_nickname(coalesce(source.mailnickname, source.samaccountname), object_type)",
    # userAccountControl bit 2 is ACCOUNTDISABLE.
    "accountEnabled": "!bit_set(source.useraccountcontrol, 2)",
    "onPremisesImmutableId": "immutable_id(anchor)",
    "department": "source.department",
    "jobTitle": "source.title",
    "employeeId": "source.employeeid",
    "employeeType": "source.employeetype",
    "companyName": "source.company",
    "officeLocation": "source.physicaldeliveryofficename",
    "streetAddress": "source.streetaddress",
    "city": "source.l",
    "state": "source.st",
    "postalCode": "source.postalcode",
    "country": "source.co",
    "usageLocation": "source.c",
    "mobilePhone": "source.mobile",
    # Graph keeps one business phone (resources/user.md): the first number, not a 400.
    "businessPhones": "take(values.telephonenumber, 1)",
    "faxNumber": "source.facsimiletelephonenumber",
}
_AD_GROUP_FLOWS = {
    "displayName": "coalesce(source.displayname, source.cn)",
    "description": "source.description",
    "mailNickname": "mail_nickname(coalesce(source.mailnickname, source.samaccountname, source.cn))",
    "mailEnabled": "false",
    "securityEnabled": "true",
}
_LDAP_USER_FLOWS = {
    "userPrincipalName": "coalesce(source.userprincipalname, source.mail)",
    "displayName": "coalesce(source.displayname, source.cn)",
    "givenName": "source.givenname",
    "surname": "source.sn",
    "mail": "source.mail",
    "mailNickname": "mail_nickname(coalesce(source.uid, local_part(source.mail)), object_type)",
    # ppolicy's lock marks a disabled account.
    "accountEnabled": "source.pwdaccountlockedtime == null",
    "onPremisesImmutableId": "uuid_base64(anchor)",
    "department": "coalesce(source.departmentnumber, source.ou)",
    "jobTitle": "source.title",
    "employeeId": "source.employeenumber",
    "employeeType": "source.employeetype",
    "companyName": "source.o",
    "officeLocation": "source.roomnumber",
    "streetAddress": "source.street",
    "city": "source.l",
    "state": "source.st",
    "postalCode": "source.postalcode",
    "mobilePhone": "source.mobile",
    "businessPhones": "take(values.telephonenumber, 1)",
    "preferredLanguage": "source.preferredlanguage",
}
_LDAP_GROUP_FLOWS = {
    "displayName": "source.cn",
    "description": "source.description",
    "mailNickname": "mail_nickname(source.cn)",
    "mailEnabled": "false",
    "securityEnabled": "true",
}

PRESETS: dict[str, dict[str, Any]] = {
    "ad": {
        "user": {
            "anchor_attribute": "onPremisesImmutableId",
            "deprovision": "delete",
            "join": {"soft_match": "userPrincipalName"},
            # A UPN suffix the tenant has not verified: <local>@<initial domain>, as Entra Connect.
            "upn_unverified": "fallback",
            # Like Entra Connect: never built-in accounts (Administrator, krbtgt, Guest).
            "scope": {"filter": "(!(isCriticalSystemObject=TRUE))"},
            # The manager's DN, resolved to the manager's anchor (a reference flow, like members).
            "manager": "source.manager",
            "flows": _AD_USER_FLOWS,
        },
        "group": {
            "deprovision": "delete",
            "join": {"soft_match": "off"},
            # Security groups only (groupType bit 0x80000000), no built-in groups.
            "scope": {
                "filter": "(&(groupType:1.2.840.113556.1.4.803:=2147483648)(!(isCriticalSystemObject=TRUE)))"
            },
            "flows": _AD_GROUP_FLOWS,
        },
    },
    "openldap": {
        "user": {
            "anchor_attribute": "onPremisesImmutableId",
            "deprovision": "delete",
            "join": {"soft_match": "userPrincipalName"},
            # A UPN suffix the tenant has not verified: <local>@<initial domain>, as Entra Connect.
            "upn_unverified": "fallback",
            "scope": {},
            "manager": "source.manager",  # inetOrgPerson's manager (a DN)
            "flows": _LDAP_USER_FLOWS,
        },
        "group": {
            "deprovision": "delete",
            "join": {"soft_match": "off"},
            "scope": {},
            "flows": _LDAP_GROUP_FLOWS,
        },
    },
    "none": {"user": {"flows": {}}, "group": {"flows": {}}},
}
