"""Fixtures of the source-connector tests: a migrated store per test and directory writers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import ldap3
import pytest

from idsync.source.importer import SourceImporter
from idsync.source.settings import LdapSourceSettings
from idsync.store import source_space
from idsync.store.db import Store
from idsync.store.migrate import migrate
from tests.harness import LdapEndpoint
from tests.harness.ldap import connect

USER_CLASSES = ["top", "person", "organizationalPerson", "user"]


@pytest.fixture
def store(pg_dsn: str, pg_schema: str) -> Iterator[Store]:
    """A migrated store on this test's schema."""
    st = Store(pg_dsn, pg_schema).open()
    migrate(st)
    yield st
    st.close()


@pytest.fixture
def make_store(pg_dsn: str) -> Iterator[Callable[[], Store]]:
    """More stores on fresh schemas (e.g. to compare a full import with a delta-built space)."""
    import psycopg
    from psycopg import sql

    made: list[Store] = []

    def make() -> Store:
        st = Store(pg_dsn, f"t_{uuid.uuid4().hex[:12]}").open()
        migrate(st)
        made.append(st)
        return st

    yield make
    for st in made:
        st.close()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(st.schema)))


def snapshot(st: Store) -> dict[str, tuple[str, str, dict[str, tuple[str, ...]], tuple[str, ...] | None]]:
    """Every live object of the source space: anchor → (type, dn, attrs, members)."""
    with st.connection() as conn:
        anchors = list(source_space.live_anchors(conn))
        out = {}
        for a in anchors:
            obj = source_space.get(conn, a)
            assert obj is not None
            out[a] = (obj.object_type, obj.dn, dict(obj.attrs), obj.members)
    return out


class Directory:
    """Writes test objects with one ldap3 connection; every call checks its result."""

    def __init__(self, ep: LdapEndpoint) -> None:
        self.ep = ep
        # A 5,000-member group is one write that a long-lived, busy Samba takes over 5 s to apply.
        self.conn = connect(ep, timeout=30.0)

    def close(self) -> None:
        self.conn.unbind()

    def add(self, dn: str, classes: list[str], attrs: dict[str, Any]) -> str:
        self.conn.add(dn, classes, attrs)
        return dn

    def ou(self, name: str, parent: str) -> str:
        attr = "ou"
        return self.add(f"OU={name},{parent}", ["top", "organizationalUnit"], {attr: name})

    def guid(self, dn: str) -> str:
        """An AD object's objectGUID as the canonical string (the anchor)."""
        self.conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["objectGUID"])
        raw = self.conn.response[0]["raw_attributes"]["objectGUID"][0]
        return str(uuid.UUID(bytes_le=raw))

    def entry_uuid(self, dn: str) -> str:
        self.conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["entryUUID"])
        return self.conn.response[0]["raw_attributes"]["entryUUID"][0].decode()

    def replace(self, dn: str, **attrs: Any) -> None:
        self.conn.modify(
            dn, {k: [(ldap3.MODIFY_REPLACE, v if isinstance(v, list) else [v])] for k, v in attrs.items()}
        )

    def members(self, dn: str, add: list[str] = (), remove: list[str] = ()) -> None:  # type: ignore[assignment]
        changes = []
        if add:
            changes.append((ldap3.MODIFY_ADD, list(add)))
        if remove:
            changes.append((ldap3.MODIFY_DELETE, list(remove)))
        self.conn.modify(dn, {"member": changes})

    def rename(self, dn: str, new_rdn: str, new_parent: str | None = None) -> str:
        self.conn.modify_dn(dn, new_rdn, new_superior=new_parent)
        parent = new_parent or dn.split(",", 1)[1]
        return f"{new_rdn},{parent}"

    def delete(self, dn: str) -> None:
        self.conn.delete(dn)


@pytest.fixture
def ad(samba: LdapEndpoint) -> Iterator[Directory]:
    d = Directory(samba)
    d.conn.raise_exceptions = True
    yield d
    d.close()


@pytest.fixture
def ad_settings(samba: LdapEndpoint, samba_ou: str) -> Callable[..., LdapSourceSettings]:
    """Settings reading the test's OU of the Samba DC; keyword arguments override fields."""

    def make(**over: Any) -> LdapSourceSettings:
        base: dict[str, Any] = dict(
            kind="ad",
            urls=(samba.url,),
            base_dns=(samba.base_dn,),
            include_ous=(samba_ou,),
            bind_dn=samba.bind_dn,
            password=lambda: samba.password,
            delta_mode="dirsync",
            connect_timeout=5.0,
            read_timeout=30.0,
        )
        base.update(over)
        return LdapSourceSettings(**base)

    return make


@pytest.fixture
def importer_for() -> Iterator[Callable[..., SourceImporter]]:
    """Build importers that are closed after the test."""
    made: list[SourceImporter] = []

    def make(settings: LdapSourceSettings, st: Store, **kw: Any) -> SourceImporter:
        imp = SourceImporter(settings, st, **kw)
        made.append(imp)
        return imp

    yield make
    for imp in made:
        imp.close()


def user_attrs(sam: str, **extra: Any) -> dict[str, Any]:
    return {"sAMAccountName": sam[:20], **extra}


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


POOL_SIZE = 5000


@pytest.fixture(scope="session")
def contact_pool(samba: LdapEndpoint) -> list[str]:
    """DNs of 5,000 contacts under OU=idsync-source-pool, created once and kept on the DC.

    Samba adds about 250 contacts/s and deletes far slower, so the pool outlives test runs
    (contacts match no user or group filter, so no other test sees them).
    """
    ou = f"OU=idsync-source-pool,{samba.base_dn}"
    dns = [f"CN=m{i:05d},{ou}" for i in range(POOL_SIZE)]
    c = connect(samba)
    try:
        c.search(samba.base_dn, "(ou=idsync-source-pool)", ldap3.LEVEL, attributes=["ou"])
        if not [e for e in c.response or [] if e.get("type") == "searchResEntry"]:
            c.add(ou, ["top", "organizationalUnit"], {"ou": "idsync-source-pool"})
        c.search(ou, "(objectClass=contact)", ldap3.LEVEL, attributes=["cn"], paged_size=1000)
        have: set[str] = set()
        cookie = True
        while cookie:
            have.update(e["dn"].lower() for e in c.response or [] if e.get("type") == "searchResEntry")
            cookie = c.result["controls"]["1.2.840.113556.1.4.319"]["value"]["cookie"]
            if cookie:
                c.search(
                    ou,
                    "(objectClass=contact)",
                    ldap3.LEVEL,
                    attributes=["cn"],
                    paged_size=1000,
                    paged_cookie=cookie,
                )
    finally:
        c.unbind()
    missing = [dn for dn in dns if dn.lower() not in have]
    if missing:
        conn = ldap3.Connection(
            ldap3.Server(samba.url),
            samba.bind_dn,
            samba.password,
            client_strategy=ldap3.ASYNC,
            auto_bind=True,
        )
        ids = [conn.add(dn, ["top", "contact"], {}) for dn in missing]
        for mid in ids:
            _, result = conn.get_response(mid)
            assert result["result"] in (0, 68), result  # 68: created meanwhile by another session
        conn.unbind()
    return dns
