"""The source connector against the harness's OpenLDAP: full import and RFC 4533 (syncrepl) deltas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from idsync.source.importer import SourceImporter
from idsync.source.settings import LdapSourceSettings
from idsync.store import source_space
from idsync.store.db import Store
from tests.harness import LdapEndpoint
from tests.source.conftest import Directory, snapshot

PERSON = ["top", "person", "organizationalPerson", "inetOrgPerson"]
GROUP = ["top", "groupOfNames"]


@pytest.fixture
def ol(slapd: LdapEndpoint) -> Directory:
    d = Directory(slapd)
    d.conn.raise_exceptions = True
    return d


def settings_for(ep: LdapEndpoint, ou: str, **over: Any) -> LdapSourceSettings:
    base: dict[str, Any] = dict(
        kind="openldap",
        urls=(ep.url,),
        base_dns=(ep.base_dn,),
        include_ous=(ou,),
        bind_dn=ep.bind_dn,
        password=lambda: ep.password,
        delta_mode="syncrepl",
    )
    base.update(over)
    return LdapSourceSettings(**base)


def person(d: Directory, parent: str, uid: str, **attrs: Any) -> str:
    return d.add(
        f"uid={uid},{parent}", PERSON, {"cn": attrs.pop("cn", uid), "sn": attrs.pop("sn", uid), **attrs}
    )


def test_syncrepl_deltas_carry_every_change_and_a_full_import_agrees(
    ol: Directory,
    slapd: LdapEndpoint,
    slapd_ou: str,
    store: Store,
    make_store: Callable[[], Store],
    importer_for: Callable[..., SourceImporter],
) -> None:
    people = ol.ou("people", slapd_ou)
    excluded = ol.ou("excluded", slapd_ou)
    settings = settings_for(slapd, slapd_ou, exclude_ous=(excluded,))
    imp = importer_for(settings, store)
    carol = person(ol, excluded, "carol")
    dave = person(ol, people, "dave")
    eve = person(ol, people, "eve")
    assert imp.full_import().added == 2

    alice = person(
        ol, people, "alice", cn="Zoë Ærøskøbing 東京", displayName="Zoë 東京", mail="zoe@example.org"
    )
    staff = ol.add(f"cn=staff,{people}", GROUP, {"member": [alice, dave]})
    temp = ol.add(f"cn=temp,{people}", GROUP, {"member": [eve]})
    ids = {dn: ol.entry_uuid(dn) for dn in (alice, staff, temp, carol, dave, eve)}
    created = imp.delta_import()
    assert (created.kind, created.mode, created.added, created.fallback) == ("delta", "syncrepl", 3, None)
    with store.connection() as conn:
        a = source_space.get(conn, ids[alice])
        s = source_space.get(conn, ids[staff])
    assert a is not None and a.attrs["displayname"] == ("Zoë 東京",)
    assert s is not None and set(s.members or ()) == {ids[alice], ids[dave]}  # DN refs resolved to anchors

    ol.replace(alice, mail="zoe.m@example.org")
    dave2 = ol.rename(dave, "uid=david")
    carol2 = ol.rename(carol, "uid=carol", people)  # into scope
    ol.rename(eve, "uid=eve", excluded)  # out of scope
    ol.members(staff, add=[carol2])
    ol.delete(temp)
    changed = imp.delta_import()
    assert changed.fallback is None
    assert changed.deleted == 2  # eve (out of scope), temp (deleted)
    with store.connection() as conn:
        a = source_space.get(conn, ids[alice])
        d = source_space.get(conn, ids[dave])
        c = source_space.get(conn, ids[carol])
        s = source_space.get(conn, ids[staff])
        assert source_space.is_deleted(conn, ids[eve]) and source_space.is_deleted(conn, ids[temp])
    assert a is not None and a.attrs["mail"] == ("zoe.m@example.org",)
    assert d is not None and d.dn.lower() == dave2.lower() and d.attrs["uid"] == ("david",)
    assert c is not None and c.dn.lower() == carol2.lower()
    assert s is not None and set(s.members or ()) == {ids[alice], ids[dave], ids[carol]}

    fresh = make_store()
    importer_for(settings, fresh).full_import()
    assert snapshot(fresh) == snapshot(store)


def test_after_a_provider_restart_the_present_phase_still_finds_deletes(
    spawn: Callable[[str], Any],
    store: Store,
    make_store: Callable[[], Store],
    importer_for: Callable[..., SourceImporter],
) -> None:
    svc = spawn("slapd")  # private: this test restarts it
    ep: LdapEndpoint = svc.endpoint
    d = Directory(ep)
    d.conn.raise_exceptions = True
    ou = d.ou("people", ep.base_dn)
    users = [person(d, ou, f"u{i}") for i in range(5)]
    settings = settings_for(ep, ou)
    imp = importer_for(settings, store)
    assert imp.full_import().added == 5
    gone = d.entry_uuid(users[0])
    d.delete(users[0])
    d.close()
    svc.stop()  # the in-memory session log is lost
    svc.start()
    d = Directory(ep)
    d.conn.raise_exceptions = True
    d.replace(users[1], mail="after@example.org")
    res = imp.delta_import()
    assert (res.kind, res.fallback) == ("delta", None)
    assert res.deleted == 1
    with store.connection() as conn:
        assert source_space.is_deleted(conn, gone)
    fresh = make_store()
    importer_for(settings, fresh).full_import()
    assert snapshot(fresh) == snapshot(store)
    d.close()
