"""DirSync's incremental values of linked attributes other than `member` (manager, seeAlso)."""

from __future__ import annotations

from idsync.source.dirsync import _linked_changes
from idsync.source.normalize import Normalizer

NORM = Normalizer("ad", frozenset({"manager", "seealso", "department"}))
OLD = "CN=Old,OU=Staff,DC=example,DC=com"
NEW = "CN=New,OU=Staff,DC=example,DC=com"


def ext(guid: str, dn: str) -> bytes:
    return f"<GUID={guid}>;<SID=S-1-5-21-1-2-3-1105>;{dn}".encode()


def test_a_changed_manager_replaces_the_old_one() -> None:
    raw = {"manager;range=1-1": [ext("b", NEW)], "manager;range=0-0": [ext("a", OLD)]}
    assert _linked_changes(NORM, "CN=r", raw, {"manager": (OLD,)}) == {"manager": (NEW,)}


def test_a_removed_manager_is_cleared_even_when_the_stored_dn_is_stale() -> None:
    raw = {"manager;range=0-0": [ext("a", OLD)]}
    # The stored value names the manager's DN before a rename AD never reported on this user.
    assert _linked_changes(NORM, "CN=r", raw, {"manager": ("CN=Before Rename,DC=example,DC=com",)}) == {
        "manager": None
    }


def test_multi_valued_links_merge_and_unstored_or_plain_attributes_are_left_alone() -> None:
    raw = {
        "seealso;range=1-1": [ext("c", NEW)],
        "seealso;range=0-0": [ext("a", OLD.upper())],
        "member;range=1-1": [ext("d", NEW)],  # members are MemberDeltas, handled apart
        "secretary;range=1-1": [ext("e", NEW)],  # not imported
        "department": [b"Sales"],
    }
    cur = {"seealso": (OLD, "CN=Keep,DC=example,DC=com")}
    assert _linked_changes(NORM, "CN=r", raw, cur) == {"seealso": ("CN=Keep,DC=example,DC=com", NEW)}
