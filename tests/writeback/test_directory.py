"""The writer against real Samba: a fence that no longer holds stops a write before it is sent;
mS-DS-ConsistencyGuid is added, never overwritten; adds adopt a group a crashed leader made."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from idsync.fencing import Fenced, Unfenced
from idsync.writeback.directory import AdConnection, AdDirectory, guid_bytes
from tests.cluster.directory import AdDirectory as AdFixture
from tests.harness.ldap import LdapEndpoint
from tests.writeback.helpers import ad_groups, consistency_guid


class Expired(Unfenced):
    """A leader whose lease ran out: every write check raises."""

    def write_deadline(self) -> float:
        raise Fenced(7, "lease expired (not confirmed by a ZooKeeper quorum in time)")

    def confirm_now(self) -> None:
        raise Fenced(7, "lease expired")


@pytest.fixture
def writer(samba: LdapEndpoint) -> Iterator[AdDirectory]:
    d = AdDirectory(AdConnection((samba.url,), samba.bind_dn, lambda: samba.password, write_timeout=5))
    yield d
    d.close()


def test_a_fenced_writer_sends_nothing(
    writer: AdDirectory, samba: LdapEndpoint, samba_ou: str, ad: AdFixture
) -> None:
    user = ad.add_user(samba_ou, f"f{uuid.uuid4().hex[:6]}")
    gid = str(uuid.uuid4())
    with pytest.raises(Fenced):
        writer.add_group(Expired(), samba_ou, gid, {"displayName": "G"})
    with pytest.raises(Fenced):
        writer.stamp_consistency_guid(Expired(), user.guid)
    assert ad_groups(samba, samba_ou) == {}
    assert consistency_guid(samba, user.dn) is None
    # A group the fenced leader cannot delete stays.
    assert writer.add_group(Unfenced(), samba_ou, gid, {"displayName": "G"}).outcome == "ok"
    with pytest.raises(Fenced):
        writer.delete(Expired(), f"CN=Group_{gid},{samba_ou}")
    assert f"Group_{gid}" in ad_groups(samba, samba_ou)


def test_consistency_guid_is_added_once_and_never_overwritten(
    writer: AdDirectory, samba: LdapEndpoint, samba_ou: str, ad: AdFixture
) -> None:
    ann = ad.add_user(samba_ou, f"a{uuid.uuid4().hex[:6]}")
    assert writer.stamp_consistency_guid(Unfenced(), ann.guid).outcome == "ok"
    assert consistency_guid(samba, ann.dn) == guid_bytes(ann.guid)
    # Again (a failover's repeat): AD refuses the add, the value stays, the outcome is adopted.
    assert writer.stamp_consistency_guid(Unfenced(), ann.guid).outcome == "adopted"
    assert consistency_guid(samba, ann.dn) == guid_bytes(ann.guid)
    # A user whose value was set by someone else (a forest migration) keeps it.
    other = uuid.uuid4().bytes_le
    bob = ad.add_user(samba_ou, f"b{uuid.uuid4().hex[:6]}", **{"mS-DS-ConsistencyGuid": other})
    assert writer.stamp_consistency_guid(Unfenced(), bob.guid).outcome == "adopted"
    assert consistency_guid(samba, bob.dn) == other


def test_create_adopts_and_collision_is_refused(
    writer: AdDirectory, samba: LdapEndpoint, samba_ou: str
) -> None:
    gid = str(uuid.uuid4())
    assert writer.add_group(Unfenced(), samba_ou, gid, {"displayName": "G"}).outcome == "ok"
    # A second add (the old leader's write landed, the new leader did not see it yet): the anchor
    # lookup finds it, and a blind add would be a collision, never a duplicate.
    assert writer.find_group(samba_ou, gid) == f"CN=Group_{gid},{samba_ou}"
    again = writer.add_group(Unfenced(), samba_ou, gid, {"displayName": "G"})
    assert again.outcome == "error" and again.final and again.error is not None
    assert again.error.startswith("name collision")
    assert len(ad_groups(samba, samba_ou)) == 1
