"""AD test data on the Samba DC: users and groups written the way an administrator would."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import ldap3

from tests.cluster.emulator import DOMAIN
from tests.harness.ldap import LdapEndpoint, connect

UF_NORMAL_ACCOUNT = 0x200
UF_ACCOUNTDISABLE = 0x2


@dataclass(frozen=True)
class User:
    dn: str
    sam: str
    upn: str
    guid: str


class AdDirectory:
    """One ldap3 connection that raises on any failed write."""

    def __init__(self, ep: LdapEndpoint) -> None:
        self.ep = ep
        self.conn = connect(ep)
        self.conn.raise_exceptions = True

    def close(self) -> None:
        self.conn.unbind()

    def guid(self, dn: str) -> str:
        """The objectGUID as the canonical string (idsync's anchor)."""
        self.conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["objectGUID"])
        raw = self.conn.response[0]["raw_attributes"]["objectGUID"][0]
        return str(uuid.UUID(bytes_le=raw))

    def ou(self, name: str, parent: str) -> str:
        dn = f"OU={name},{parent}"
        self.conn.add(dn, ["top", "organizationalUnit"], {"ou": name})
        return dn

    def add_user(
        self,
        parent: str,
        sam: str,
        *,
        given: str = "Test",
        surname: str | None = None,
        department: str | None = None,
        disabled: bool = False,
        domain: str = DOMAIN,
        **extra: Any,
    ) -> User:
        dn = f"CN={sam},{parent}"
        upn = f"{sam}@{domain}"
        attrs: dict[str, Any] = {
            "sAMAccountName": sam[:20],
            "userPrincipalName": upn,
            "givenName": given,
            "sn": surname or sam,
            "displayName": f"{given} {surname or sam}",
            "userAccountControl": str(UF_NORMAL_ACCOUNT | (UF_ACCOUNTDISABLE if disabled else 0)),
            **extra,
        }
        if department:
            attrs["department"] = department
        self.conn.add(dn, ["top", "person", "organizationalPerson", "user"], attrs)
        return User(dn, sam, upn, self.guid(dn))

    def add_group(self, parent: str, name: str, members: Iterable[str] = ()) -> str:
        dn = f"CN={name},{parent}"
        attrs: dict[str, Any] = {"sAMAccountName": name[:20], "groupType": str(-2147483646)}
        self.conn.add(dn, ["top", "group"], attrs)
        members = list(members)
        for i in range(0, len(members), 1000):
            self.conn.modify(dn, {"member": [(ldap3.MODIFY_ADD, members[i : i + 1000])]})
        return dn

    def replace(self, dn: str, **attrs: Any) -> None:
        self.conn.modify(
            dn, {k: [(ldap3.MODIFY_REPLACE, v if isinstance(v, list) else [v])] for k, v in attrs.items()}
        )

    def set_disabled(self, dn: str, disabled: bool) -> None:
        self.replace(dn, userAccountControl=str(UF_NORMAL_ACCOUNT | (UF_ACCOUNTDISABLE if disabled else 0)))

    def members(self, group: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        changes = []
        if add := list(add):
            changes.append((ldap3.MODIFY_ADD, add))
        if remove := list(remove):
            changes.append((ldap3.MODIFY_DELETE, remove))
        if changes:
            self.conn.modify(group, {"member": changes})

    def move(self, dn: str, new_rdn: str, new_parent: str | None = None) -> str:
        self.conn.modify_dn(dn, new_rdn, new_superior=new_parent)
        return f"{new_rdn},{new_parent or dn.split(',', 1)[1]}"

    def delete(self, dn: str) -> None:
        self.conn.delete(dn)

    def users_under(self, base: str) -> dict[str, dict[str, Any]]:
        """Every user below `base`, by anchor, with the attributes the default rules use."""
        self.conn.search(
            base,
            "(&(objectCategory=person)(objectClass=user))",
            ldap3.SUBTREE,
            attributes=["objectGUID", "userPrincipalName", "displayName", "userAccountControl", "department"],
        )
        out = {}
        for e in self.conn.response:
            if e.get("type") != "searchResEntry":
                continue
            raw = e["raw_attributes"]
            guid = str(uuid.UUID(bytes_le=raw["objectGUID"][0]))
            attrs = e["attributes"]
            out[guid] = {
                k: (v[0] if v else None) if isinstance(v := attrs.get(k), list) else v
                for k in ("userPrincipalName", "displayName", "userAccountControl", "department")
            }
        return out

    def groups_under(self, base: str) -> dict[str, set[str]]:
        """Every group below `base` by anchor, with the anchors of its members."""
        self.conn.search(base, "(objectClass=group)", ldap3.SUBTREE, attributes=["objectGUID", "member"])
        groups = [
            (
                str(uuid.UUID(bytes_le=e["raw_attributes"]["objectGUID"][0])),
                e["attributes"].get("member") or [],
            )
            for e in self.conn.response
            if e.get("type") == "searchResEntry"
        ]
        return {g: {self.guid(m) for m in members} for g, members in groups}
