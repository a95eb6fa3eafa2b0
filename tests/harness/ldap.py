"""Small ldap3 helpers shared by the Samba and slapd services and their fixtures."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import ldap3
from ldap3.core.exceptions import LDAPNoSuchObjectResult


@dataclass(frozen=True)
class LdapEndpoint:
    """How a test reaches a directory: URL, naming context, and an account that may write anywhere."""

    url: str
    base_dn: str
    bind_dn: str
    password: str


def connect(ep: LdapEndpoint, *, timeout: float = 5.0) -> ldap3.Connection:
    """A bound ldap3 connection (raises LDAPBindError / LDAPSocketOpenError when it cannot bind)."""
    server = ldap3.Server(ep.url, connect_timeout=timeout, get_info=ldap3.NONE)
    return ldap3.Connection(
        server,
        user=ep.bind_dn,
        password=ep.password,
        auto_bind=True,
        receive_timeout=max(1, round(timeout)),  # ldap3 packs it into SO_RCVTIMEO: must be an int
        raise_exceptions=True,
    )


def bind_ok(ep: LdapEndpoint, timeout: float = 2.0) -> bool:
    """Probe: True if a simple bind and a base search of the naming context's root DSE succeed."""
    conn = connect(ep, timeout=timeout)
    try:
        return bool(
            conn.search("", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["namingContexts"])
        )
    finally:
        conn.unbind()


def create_ou(ep: LdapEndpoint, prefix: str = "t") -> str:
    """Create a uniquely named organizationalUnit directly under the base DN; return its DN."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    dn = f"OU={name},{ep.base_dn}"
    conn = connect(ep)
    try:
        conn.add(dn, ["top", "organizationalUnit"], {"ou": name})
    finally:
        conn.unbind()
    return dn


def delete_tree(ep: LdapEndpoint, dn: str) -> int:
    """Delete `dn` and everything below it, deepest first (no server-side tree-delete needed)."""
    conn = connect(ep)
    try:
        try:
            entries = conn.extend.standard.paged_search(
                dn,
                "(objectClass=*)",
                search_scope=ldap3.SUBTREE,
                attributes=[],
                paged_size=1000,
                generator=False,
            )
        except LDAPNoSuchObjectResult:
            return 0
        dns = [e["dn"] for e in entries if e.get("type") == "searchResEntry"]
        # Children have more RDN components than their parents: delete the longest DNs first.
        for child in sorted(dns, key=lambda d: len(ldap3.utils.dn.parse_dn(d)), reverse=True):
            conn.delete(child)
        return len(dns)
    finally:
        conn.unbind()
