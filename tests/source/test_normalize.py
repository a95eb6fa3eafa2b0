"""Binary values to canonical text, and bad data named with its reason."""

from __future__ import annotations

import pytest

from idsync.source.errors import BadEntry
from idsync.source.normalize import (
    Normalizer,
    first_rdn,
    guid_str,
    immutable_id,
    is_under,
    member_ref,
    parse_extended_dn,
    sid_str,
)

RAW_GUID = bytes.fromhex("5f78b741052b454c8244a8cfe9813fd2")  # measured on Samba (reference §2)


def test_object_guid_gives_the_canonical_string_and_entras_immutable_id() -> None:
    assert guid_str(RAW_GUID) == "41b7785f-2b05-4c45-8244-a8cfe9813fd2"
    assert immutable_id(RAW_GUID) == "X3i3QQUrRUyCRKjP6YE/0g=="


def test_object_sid_gives_the_s_1_5_form() -> None:
    raw = bytes.fromhex("010500000000000515000000a065cf7e784b9b5fe77c8770e8030000")
    assert sid_str(raw) == "S-1-5-21-2127521184-1604012920-1887927527-1000"
    with pytest.raises(ValueError):
        sid_str(b"\x01\x05\x00")


def test_extended_dns_yield_member_anchors_and_plain_dns_fall_back_to_dn_refs() -> None:
    ext = parse_extended_dn("<GUID=41B7785F-2B05-4C45-8244-A8CFE9813FD2>;<SID=S-1-5-21-1-2-3-1000>;CN=a,DC=x")
    assert (ext.guid, ext.sid, ext.dn) == (
        "41b7785f-2b05-4c45-8244-a8cfe9813fd2",
        "S-1-5-21-1-2-3-1000",
        "CN=a,DC=x",
    )
    assert parse_extended_dn("<GUID=5f78b741052b454c8244a8cfe9813fd2>;CN=a").guid == guid_str(RAW_GUID)
    assert member_ref(b"CN=b,DC=x") == "dn:CN=b,DC=x"


def test_dn_scope_checks_ignore_case_and_spacing_but_not_rdn_boundaries() -> None:
    assert is_under("CN=a,OU=People, dc=X,DC=y", "ou=people,DC=x,dc=Y")
    assert not is_under("CN=a,OU=MorePeople,DC=x,DC=y", "OU=People,DC=x,DC=y")
    assert first_rdn(r"CN=Smith\, John\C3\A9,OU=x") == ("cn", "Smith, Johné")


def _norm(**kw: object) -> Normalizer:
    return Normalizer("ad", frozenset({"objectguid", "cn", "description"}), **kw)  # type: ignore[arg-type]


def test_an_entry_without_anchor_or_with_undecodable_or_oversized_values_is_a_bad_entry() -> None:
    with pytest.raises(BadEntry, match="no objectGUID"):
        _norm().to_object("CN=x,DC=y", {"cn": [b"x"]}, "user")
    with pytest.raises(BadEntry, match="description value 0 cannot be decoded") as bad:
        _norm().to_object("CN=x,DC=y", {"objectguid": [RAW_GUID], "description": [b"\xff\xfe"]}, "user")
    assert bad.value.anchor == guid_str(RAW_GUID) and bad.value.dn == "CN=x,DC=y"
    with pytest.raises(BadEntry, match="2000 bytes, over the 1024 limit"):
        _norm(max_value_bytes=1024).to_object(
            "CN=x,DC=y", {"objectguid": [RAW_GUID], "cn": [b"a" * 2000]}, "user"
        )


def test_a_good_entry_keeps_only_the_configured_attributes_plus_the_immutable_id() -> None:
    obj = _norm().to_object(
        "<GUID=41b7785f-2b05-4c45-8244-a8cfe9813fd2>;CN=x,DC=y",
        {"objectguid": [RAW_GUID], "cn": ["Zoë".encode()], "other": [b"ignored"]},
        "group",
        [b"<GUID=00000000-0000-0000-0000-000000000001>;CN=m,DC=y"],
    )
    assert obj.anchor == "41b7785f-2b05-4c45-8244-a8cfe9813fd2" and obj.dn == "CN=x,DC=y"
    assert dict(obj.attrs) == {
        "objectguid": ("41b7785f-2b05-4c45-8244-a8cfe9813fd2",),
        "cn": ("Zoë",),
        "immutableid": ("X3i3QQUrRUyCRKjP6YE/0g==",),
    }
    assert obj.members == ("00000000-0000-0000-0000-000000000001",)
