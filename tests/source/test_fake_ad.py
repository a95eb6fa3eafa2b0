"""What Samba cannot show, against a scripted LDAP server: AD's page cap, value ranges, DirSync
batches, and the DirSync control's bytes on the wire."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from idsync.source import ber
from idsync.source.controls import DIRSYNC_OID, EXTENDED_DN_OID, PAGED_OID
from idsync.source.importer import SourceImporter
from idsync.source.settings import LdapSourceSettings
from idsync.store import source_space
from idsync.store.db import Store
from tests.source.fakeldap import (
    ROOT_DSE,
    Entry,
    FakeLdapServer,
    Reply,
    SearchRequest,
    dirsync_value,
    paged_value,
)

NC = "DC=fake,DC=example"
OU = f"OU=people,{NC}"
MAX_PAGE = 1000  # AD's MaxPageSize
MAX_VALUES = 1500  # AD's MaxValRange


def gid(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


class FakeAd:
    """A tiny AD: users and groups, paged searches capped at 1,000, member ranges of 1,500."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.dirsync_batches: list[tuple[list[Entry], bool]] = []
        self.dirsync_cookies: list[bytes] = []
        self.page_sizes: list[int] = []

    def user(self, i: int, **attrs: str) -> str:
        g = gid(i)
        self.objects[g] = {
            "dn": f"CN=u{i},{OU}",
            "type": "user",
            "attrs": {"sAMAccountName": f"u{i}", **attrs},
        }
        return g

    def group(self, i: int, members: list[str]) -> str:
        g = gid(i)
        self.objects[g] = {
            "dn": f"CN=g{i},{OU}",
            "type": "group",
            "attrs": {"sAMAccountName": f"g{i}"},
            "members": members,
        }
        return g

    def entry(self, g: str, attrs: dict[str, list[bytes]] | None = None) -> Entry:
        obj = self.objects[g]
        raw: dict[str, list[bytes]] = {"objectGUID": [uuid.UUID(g).bytes_le]}
        if attrs is None:
            raw["objectClass"] = [b"top", obj["type"].encode()]
            raw.update({k: [v.encode()] for k, v in obj["attrs"].items()})
            members = obj.get("members")
            if members is not None:
                vals = [f"<GUID={m}>;CN=x,{NC}".encode() for m in members]
                if len(vals) > MAX_VALUES:
                    raw[f"member;range=0-{MAX_VALUES - 1}"] = vals[:MAX_VALUES]
                else:
                    raw["member"] = vals
        else:
            raw.update(attrs)
        return Entry(f"<GUID={g}>;{obj['dn']}", raw)

    def on_search(self, req: SearchRequest) -> Reply:
        if req.base == "":
            return Reply([ROOT_DSE])
        cookie_ctl = req.control(DIRSYNC_OID)
        if cookie_ctl is not None:
            return self._dirsync(cookie_ctl)
        if req.base.startswith("<GUID="):
            return self._base(req)
        return self._paged(req)

    def _type_of(self, req: SearchRequest) -> str:
        return "user" if b"person" in req.filter_ber else "group"

    def _base(self, req: SearchRequest) -> Reply:
        g = req.base[6:-1]
        obj = self.objects.get(g)
        if obj is None:
            return Reply(code=32, message="no such object")
        ranged = [a for a in req.attributes if a.lower().startswith("member;range=")]
        if ranged:
            start = int(re.match(r"member;range=(\d+)-\*", ranged[0]).group(1))  # type: ignore[union-attr]
            vals = [f"<GUID={m}>;CN=x,{NC}".encode() for m in obj["members"]]
            end = start + MAX_VALUES - 1
            key = f"member;range={start}-*" if end >= len(vals) - 1 else f"member;range={start}-{end}"
            return Reply([Entry(f"<GUID={g}>;{obj['dn']}", {key: vals[start : end + 1]})])
        if obj["type"] != self._type_of(req):
            return Reply()
        return Reply([self.entry(g)])

    def _paged(self, req: SearchRequest) -> Reply:
        raw = req.control(PAGED_OID)
        assert raw is not None, "every multi-entry search must be paged"
        size_tlv, cookie_tlv = ber.read_one(raw)[0].children()
        self.page_sizes.append(size_tlv.as_int())
        start = int(cookie_tlv.value or b"0")
        kind = self._type_of(req)
        matching = [g for g, o in self.objects.items() if o["type"] == kind]
        page = matching[start : start + min(MAX_PAGE, size_tlv.as_int())]
        nxt = start + len(page)
        cookie = str(nxt).encode() if nxt < len(matching) else b""
        return Reply([self.entry(g) for g in page], {PAGED_OID: paged_value(cookie)})

    def _dirsync(self, raw: bytes) -> Reply:
        cookie = ber.read_one(raw)[0].children()[2].value
        self.dirsync_cookies.append(cookie)
        n = int(cookie.decode()[1:]) if cookie else 0  # cookies are b"c0", b"c1", …
        if not cookie:  # baseline: no entries, the position after everything scripted so far
            return Reply(controls={DIRSYNC_OID: dirsync_value(False, b"c0")})
        if n >= len(self.dirsync_batches):
            return Reply(controls={DIRSYNC_OID: dirsync_value(False, cookie)})
        entries, more = self.dirsync_batches[n]
        return Reply(entries, {DIRSYNC_OID: dirsync_value(more, f"c{n + 1}".encode())})


@pytest.fixture
def fake() -> Iterator[tuple[FakeAd, FakeLdapServer]]:
    ad = FakeAd()
    srv = FakeLdapServer(ad.on_search)
    yield ad, srv
    srv.close()


def settings(url: str, **over: Any) -> LdapSourceSettings:
    base: dict[str, Any] = dict(
        kind="ad",
        urls=(url,),
        base_dns=(NC,),
        bind_dn="CN=sync,DC=fake",
        password=lambda: "pw",
        delta_mode="dirsync",
    )
    base.update(over)
    return LdapSourceSettings(**base)


def test_the_dirsync_control_goes_out_with_flags_as_a_signed_32_bit_integer(
    fake: tuple[FakeAd, FakeLdapServer], store: Store, importer_for: Callable[..., SourceImporter]
) -> None:
    ad, srv = fake
    ad.user(1)
    importer_for(settings(srv.url), store).full_import()
    [ds] = [r for r in srv.requests if DIRSYNC_OID in r.controls]
    critical, value = ds.controls[DIRSYNC_OID]
    assert critical is True
    # SEQUENCE { Flags 0x80000800 in 4 bytes, MaxBytes 0x7fffffff, Cookie "" }; ldap3 sends 02 05 00 80 …
    assert value == bytes.fromhex("300e02048000080002047fffffff0400")
    assert ds.controls[EXTENDED_DN_OID] == (False, bytes.fromhex("3003020101"))
    # and it is really on the wire like that, inside the LDAP message
    assert any(bytes.fromhex("020480000800") in raw for raw in srv.raw_requests)


def test_pages_capped_at_1000_entries_are_all_followed(
    fake: tuple[FakeAd, FakeLdapServer], store: Store, importer_for: Callable[..., SourceImporter]
) -> None:
    ad, srv = fake
    for i in range(2500):
        ad.user(i)
    res = importer_for(settings(srv.url, page_size=5000, delta_mode="none"), store).full_import()
    assert (res.added, res.errors) == (2500, 0)
    assert ad.page_sizes[:3] == [
        5000,
        5000,
        5000,
    ]  # asked for 5,000, got 1,000 three times (and the last 500)
    with store.connection() as conn:
        assert source_space.live_count(conn) == {"user": 2500}


def test_member_values_past_ads_1500_range_are_fetched_range_by_range(
    fake: tuple[FakeAd, FakeLdapServer], store: Store, importer_for: Callable[..., SourceImporter]
) -> None:
    ad, srv = fake
    members = [gid(10_000 + i) for i in range(3700)]
    big = ad.group(1, members)
    small = ad.group(2, members[:3])
    res = importer_for(settings(srv.url, delta_mode="none"), store).full_import()
    assert res.added == 2
    with store.connection() as conn:
        g = source_space.get(conn, big)
        s = source_space.get(conn, small)
    assert g is not None and sorted(g.members or ()) == sorted(members)
    assert s is not None and len(s.members or ()) == 3
    ranged = [r.attributes for r in srv.requests if r.base == f"<GUID={big}>"]
    assert ranged == [["member;range=1500-*"], ["member;range=3000-*"]]


def test_dirsync_batches_commit_one_by_one_and_a_killed_delta_resumes_from_the_last(
    fake: tuple[FakeAd, FakeLdapServer], store: Store, importer_for: Callable[..., SourceImporter]
) -> None:
    ad, srv = fake
    u = [ad.user(i, displayName=f"user {i}") for i in range(4)]
    importer_for(settings(srv.url), store).full_import()

    def changed(i: int, name: str) -> Entry:
        ad.objects[u[i]]["attrs"]["displayName"] = name
        return ad.entry(u[i], {"displayName": [name.encode()]})

    ad.dirsync_batches = [
        ([changed(0, "renamed 0")], True),
        ([ad.entry(u[1], {"isDeleted": [b"TRUE"]})], True),
        ([], True),  # AD may send an empty batch while more are pending
        ([changed(2, "renamed 2"), changed(0, "renamed 0 again")], False),
    ]
    del ad.objects[u[1]]

    class Killed(Exception):
        pass

    def kill(page: int) -> None:
        if page == 2:
            raise Killed

    with pytest.raises(Killed):
        importer_for(settings(srv.url), store, after_commit=kill).delta_import()
    with store.connection() as conn:
        assert source_space.get(conn, u[0]).attrs["displayname"] == ("renamed 0",)  # type: ignore[union-attr]
        assert source_space.is_deleted(conn, u[1])
        assert source_space.get(conn, u[2]).attrs["displayname"] == ("user 2",)  # type: ignore[union-attr]
    assert ad.dirsync_cookies == [b"", b"c0", b"c1"]

    res = importer_for(settings(srv.url), store).delta_import()
    assert ad.dirsync_cookies[3:] == [
        b"c2",
        b"c3",
    ]  # resumed after the last committed batch, nothing replayed
    assert (res.kind, res.updated, res.deleted) == ("delta", 2, 0)
    with store.connection() as conn:
        assert source_space.get(conn, u[0]).attrs["displayname"] == ("renamed 0 again",)  # type: ignore[union-attr]
        assert source_space.get(conn, u[2]).attrs["displayname"] == ("renamed 2",)  # type: ignore[union-attr]
        assert source_space.live_count(conn) == {"user": 3}


def test_only_a_completed_full_import_sweeps_what_it_did_not_see(
    fake: tuple[FakeAd, FakeLdapServer], store: Store, importer_for: Callable[..., SourceImporter]
) -> None:
    ad, srv = fake
    users = [ad.user(i) for i in range(2500)]
    s = settings(srv.url, delta_mode="none")
    importer_for(s, store).full_import()
    for g in users[:1000]:
        del ad.objects[g]  # deleted in the directory

    class Killed(Exception):
        pass

    def kill(page: int) -> None:
        raise Killed(page)

    with pytest.raises(Killed):
        importer_for(s, store, after_commit=kill).full_import()
    with store.connection() as conn:
        assert source_space.live_count(conn) == {"user": 2500}  # an interrupted run deletes nothing
    done = importer_for(s, store).full_import()
    assert (done.deleted, done.unchanged) == (1000, 1500)
    with store.connection() as conn:
        assert source_space.live_count(conn) == {"user": 1500}


def test_a_changed_scope_makes_the_next_delta_a_full_import(
    fake: tuple[FakeAd, FakeLdapServer], store: Store, importer_for: Callable[..., SourceImporter]
) -> None:
    ad, srv = fake
    ad.user(1)
    importer_for(settings(srv.url), store).full_import()
    assert importer_for(settings(srv.url), store).delta_import().kind == "delta"
    wider = importer_for(settings(srv.url, extra_attributes=("extensionAttribute1",)), store).delta_import()
    assert wider.kind == "full" and wider.fallback == "the import scope changed since the position was taken"
