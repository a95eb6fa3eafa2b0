"""The source connector against the harness's Samba AD DC: full import, DirSync and USN deltas."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from idsync.source import dirsync
from idsync.source.importer import SourceImporter
from idsync.source.settings import LdapSourceSettings
from idsync.store import quarantine, runs, source_space, watermarks
from idsync.store.db import Store
from tests.source.conftest import USER_CLASSES, Directory, snapshot, unique, user_attrs

UNICODE_NAME = "Zoë Ærøskøbing-Müller 東京"


def _obj(st: Store, anchor: str):
    with st.connection() as conn:
        return source_space.get(conn, anchor), source_space.is_deleted(conn, anchor)


@pytest.mark.parametrize("mode", ["dirsync", "usn"])
def test_changes_reach_the_space_by_delta_and_a_full_import_agrees(
    mode: str,
    ad: Directory,
    samba_ou: str,
    store: Store,
    make_store: Callable[[], Store],
    ad_settings: Callable[..., LdapSourceSettings],
    importer_for: Callable[..., SourceImporter],
) -> None:
    people = ad.ou("people", samba_ou)
    excluded = ad.ou("excluded", samba_ou)
    settings = ad_settings(delta_mode=mode, exclude_ous=(excluded,))
    imp = importer_for(settings, store)
    carol_dn = ad.add(f"CN=carol,{excluded}", USER_CLASSES, user_attrs(unique("c")))
    dave_dn = ad.add(f"CN=dave,{people}", USER_CLASSES, user_attrs(unique("d")))
    eve_dn = ad.add(f"CN=eve,{people}", USER_CLASSES, user_attrs(unique("e")))
    first = imp.full_import()
    assert (first.kind, first.added, first.fallback) == ("full", 2, None)

    # create: a unicode-named enabled user, a disabled user, two groups
    alice_dn = ad.add(
        f"CN={UNICODE_NAME},{people}",
        USER_CLASSES,
        user_attrs(unique("a"), displayName=UNICODE_NAME, mail="zoe@example.org", userAccountControl=512),
    )
    bob_dn = ad.add(f"CN=bob,{people}", USER_CLASSES, user_attrs(unique("b"), userAccountControl=514))
    staff_dn = ad.add(
        f"CN=staff,{people}", ["top", "group"], {"sAMAccountName": unique("g"), "member": [alice_dn, bob_dn]}
    )
    temp_dn = ad.add(
        f"CN=temp,{people}", ["top", "group"], {"sAMAccountName": unique("g"), "member": [eve_dn]}
    )
    alice, bob, staff, temp = (ad.guid(dn) for dn in (alice_dn, bob_dn, staff_dn, temp_dn))
    carol, dave, eve = (ad.guid(dn) for dn in (carol_dn, dave_dn, eve_dn))

    created = imp.delta_import()
    assert (created.kind, created.mode, created.fallback) == ("delta", mode, None)
    assert created.added == 4
    a, _ = _obj(store, alice)
    assert a is not None and a.attrs["displayname"] == (UNICODE_NAME,) and a.dn == alice_dn
    assert a.attrs["immutableid"][0] and a.attrs["objectsid"][0].startswith("S-1-5-21-")
    b, _ = _obj(store, bob)
    assert b is not None and b.attrs["useraccountcontrol"] == ("514",)
    s, _ = _obj(store, staff)
    assert s is not None and set(s.members or ()) == {alice, bob}

    # modify, disable, rename, move in, move out, delete, membership, group rename and delete
    ad.replace(alice_dn, displayName="Zoë Ø. Müller", mail="zoe.m@example.org")
    ad.replace(bob_dn, userAccountControl=512)
    ad.replace(dave_dn, userAccountControl=514)
    bob_dn = ad.rename(bob_dn, "CN=robert")
    carol_dn = ad.rename(carol_dn, "CN=carol", people)  # into scope
    ad.rename(dave_dn, "CN=dave", excluded)  # out of scope
    ad.members(staff_dn, add=[carol_dn], remove=[alice_dn])
    staff_dn = ad.rename(staff_dn, "CN=staff-renamed")
    ad.delete(eve_dn)
    ad.delete(temp_dn)

    changed = imp.delta_import()
    assert changed.fallback is None
    a, _ = _obj(store, alice)
    assert (
        a is not None
        and a.attrs["displayname"] == ("Zoë Ø. Müller",)
        and a.attrs["mail"] == ("zoe.m@example.org",)
    )
    b, _ = _obj(store, bob)
    assert (
        b is not None
        and b.dn == bob_dn
        and b.attrs["cn"] == ("robert",)
        and b.attrs["useraccountcontrol"] == ("512",)
    )
    c, _ = _obj(store, carol)
    assert c is not None and c.dn == carol_dn
    s, _ = _obj(store, staff)
    assert s is not None and s.dn == staff_dn and set(s.members or ()) == {bob, carol}
    for gone in (dave, eve, temp):
        assert _obj(store, gone)[1] is True, gone
    assert changed.deleted == 3

    # the delta-built space equals what a full import of the same directory builds
    fresh = make_store()
    full = importer_for(settings, fresh).full_import()
    assert full.added == 4  # alice, robert, carol, staff-renamed
    assert snapshot(fresh) == snapshot(store)
    again = imp.full_import()
    assert (again.added, again.updated, again.deleted, again.unchanged) == (0, 0, 0, 4)


def test_a_group_of_5000_members_arrives_whole_and_then_by_increments(
    ad: Directory,
    samba_ou: str,
    contact_pool: list[str],
    store: Store,
    make_store: Callable[[], Store],
    ad_settings: Callable[..., LdapSourceSettings],
    importer_for: Callable[..., SourceImporter],
) -> None:
    settings = ad_settings(delta_mode="dirsync")
    imp = importer_for(settings, store)
    imp.full_import()
    leaver = ad.add(f"CN=leaver,{samba_ou}", USER_CLASSES, user_attrs(unique("l")))
    dns = [*contact_pool, leaver]
    big_dn = ad.add(f"CN=big,{samba_ou}", ["top", "group"], {"sAMAccountName": unique("g"), "member": dns})
    big = ad.guid(big_dn)

    created = imp.delta_import()
    assert created.added == 2  # the group and the leaver
    g, _ = _obj(store, big)
    assert g is not None and g.members is not None and len(g.members) == 5001
    assert all(not m.startswith("dn:") for m in g.members)  # extended DN: members are anchors
    first, second, leaver_id = ad.guid(dns[0]), ad.guid(dns[1]), ad.guid(leaver)
    assert {first, second, leaver_id} <= set(g.members)

    ad.members(big_dn, remove=[dns[0], dns[1]])
    ad.delete(leaver)  # a deleted member leaves the group too (DirSync reports only the tombstone)
    changed = imp.delta_import()
    assert (changed.updated, changed.deleted) == (1, 1)
    g, _ = _obj(store, big)
    assert g is not None and g.members is not None and len(g.members) == 4998
    assert not {first, second, leaver_id} & set(g.members)

    fresh = make_store()
    importer_for(settings, fresh).full_import()
    assert snapshot(fresh) == snapshot(store)


def test_oversized_values_quarantine_the_object_and_the_import_goes_on(
    ad: Directory,
    samba_ou: str,
    store: Store,
    ad_settings: Callable[..., LdapSourceSettings],
    importer_for: Callable[..., SourceImporter],
) -> None:
    ok_dn = ad.add(f"CN=ok,{samba_ou}", USER_CLASSES, user_attrs(unique("o")))
    big_dn = ad.add(
        f"CN=big,{samba_ou}", USER_CLASSES, user_attrs(unique("b"), thumbnailPhoto=b"\xff" * 3000)
    )
    imp = importer_for(ad_settings(max_value_bytes=1024, extra_attributes=("thumbnailPhoto",)), store)
    res = imp.full_import()
    assert (res.added, res.errors) == (1, 1)
    with store.connection() as conn:
        bad = quarantine.listing(conn, "import")
        assert source_space.get(conn, ad.guid(ok_dn)) is not None
        assert source_space.get(conn, ad.guid(big_dn)) is None
    assert [(q.key, q.dn) for q in bad] == [(ad.guid(big_dn), big_dn)]
    assert "thumbnailphoto" in bad[0].reason and "3000 bytes" in bad[0].reason
    [run] = [r for r in runs.recent(store, "source.full")]
    assert (run.status, run.errors, run.added) == ("ok", 1, 1)

    ad.replace(big_dn, thumbnailPhoto=b"\xff" * 100)
    fixed = imp.delta_import()
    assert fixed.added == 1
    with store.connection() as conn:
        assert quarantine.listing(conn, "import") == []


def test_a_rejected_cookie_or_another_dc_falls_back_to_a_full_import(
    ad: Directory,
    samba_ou: str,
    store: Store,
    ad_settings: Callable[..., LdapSourceSettings],
    importer_for: Callable[..., SourceImporter],
) -> None:
    ad.add(f"CN=u1,{samba_ou}", USER_CLASSES, user_attrs(unique("u")))
    imp = importer_for(ad_settings(), store)
    none_yet = imp.delta_import()
    assert none_yet.kind == "full" and "no stored position" in (none_yet.fallback or "")
    nc = ad.ep.base_dn
    name = dirsync.watermark_name(nc)
    with store.transaction() as conn:
        wm = watermarks.get(conn, name)
        assert wm is not None and wm.server == "dc1.test.idsync.lan"
        watermarks.put(conn, name, wm.value, "dc2.test.idsync.lan")
    other_dc = imp.delta_import()
    assert other_dc.kind == "full" and "dc2.test.idsync.lan" in (other_dc.fallback or "")
    with store.transaction() as conn:
        wm = watermarks.get(conn, name)
        assert wm is not None
        doc = wm.value.replace(b'"cookie":"', b'"cookie":"AAAA', 1)
        watermarks.put(conn, name, doc, wm.server)
    garbage = imp.delta_import()
    assert garbage.kind == "full" and garbage.fallback and "dirsync" in garbage.fallback
    assert (garbage.added, garbage.unchanged) == (0, 1)
    healthy = imp.delta_import()
    assert (healthy.kind, healthy.fallback) == ("delta", None)


def test_a_delta_killed_after_a_committed_page_resumes_without_loss_or_duplicates(
    ad: Directory,
    samba_ou: str,
    store: Store,
    make_store: Callable[[], Store],
    ad_settings: Callable[..., LdapSourceSettings],
    importer_for: Callable[..., SourceImporter],
) -> None:
    class Killed(Exception):
        pass

    def kill_after_first(page: int) -> None:
        if page == 1:
            raise Killed(page)

    settings = ad_settings()
    importer_for(settings, store).full_import()
    g_dn = ad.add(f"CN=g,{samba_ou}", ["top", "group"], {"sAMAccountName": unique("g")})
    users = [ad.add(f"CN=u{i},{samba_ou}", USER_CLASSES, user_attrs(unique("u"))) for i in range(3)]
    ad.members(g_dn, add=users)
    with pytest.raises(Killed):
        importer_for(settings, store, after_commit=kill_after_first).delta_import()
    ad.replace(users[0], displayName="after the crash")
    resumed = importer_for(settings, store).delta_import()
    assert (resumed.kind, resumed.updated, resumed.added) == ("delta", 1, 0)
    fresh = make_store()
    importer_for(settings, fresh).full_import()
    assert snapshot(fresh) == snapshot(store)
    failed = [r for r in runs.recent(store, "source.delta") if r.status == "failed"]
    assert len(failed) == 1 and "Killed" in (failed[0].error or "")


def test_usn_positions_are_refused_after_a_dc_restore_or_on_another_dc(
    ad: Directory,
    samba_ou: str,
    store: Store,
    ad_settings: Callable[..., LdapSourceSettings],
    importer_for: Callable[..., SourceImporter],
) -> None:
    import orjson

    from idsync.source import usn

    ad.add(f"CN=u1,{samba_ou}", USER_CLASSES, user_attrs(unique("u")))
    imp = importer_for(ad_settings(delta_mode="usn"), store)
    imp.full_import()
    assert imp.delta_import().fallback is None

    def tamper(**state: object) -> None:
        with store.transaction() as conn:
            wm = watermarks.get(conn, usn.WATERMARK)
            assert wm is not None
            doc = orjson.loads(wm.value)
            doc["state"].update(state)
            watermarks.put(conn, usn.WATERMARK, orjson.dumps(doc), wm.server)

    tamper(invocation_id="00000000-0000-0000-0000-000000000001")
    restored = imp.delta_import()
    assert restored.kind == "full" and "invocationId changed" in (restored.fallback or "")
    tamper(usn=10**12)
    ahead = imp.delta_import()
    assert ahead.kind == "full" and "below the stored" in (ahead.fallback or "")
    assert imp.delta_import().fallback is None
