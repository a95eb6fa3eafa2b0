"""What part of the directory is imported: search bases, OU inclusion/exclusion, type filters."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from idsync.model import ObjectType
from idsync.source.normalize import is_under, split_dn
from idsync.source.settings import LdapSourceSettings

GROUP_CLASSES = frozenset({"group", "groupofnames", "groupofuniquenames"})


@dataclass(frozen=True)
class Scope:
    """Bases, exclusions and filters; `in_scope(dn)` is the client-side check deltas need."""

    base_dns: tuple[str, ...]
    include_ous: tuple[str, ...]
    exclude_ous: tuple[str, ...]
    user_filter: str
    group_filter: str
    attributes: tuple[str, ...]

    @classmethod
    def from_settings(cls, s: LdapSourceSettings) -> Scope:
        return cls(s.base_dns, s.include_ous, s.exclude_ous, s.users, s.groups, s.attributes)

    @property
    def search_bases(self) -> tuple[str, ...]:
        """Where full imports search: the included OUs if any, else the base DNs (nested ones dropped)."""
        bases = self.include_ous or self.base_dns
        return tuple(b for b in bases if not any(o != b and is_under(b, o) for o in bases))

    def filter_for(self, object_type: ObjectType) -> str:
        return self.user_filter if object_type == "user" else self.group_filter

    @property
    def either_filter(self) -> str:
        """Users or groups, for searches that see both (DirSync, syncrepl)."""
        return f"(|{self.user_filter}{self.group_filter})"

    @property
    def attribute_names(self) -> frozenset[str]:
        return frozenset(a.lower() for a in self.attributes)

    def in_scope(self, dn: str) -> bool:
        """True when `dn` is under a search base and under no excluded OU."""
        if not any(is_under(dn, b) for b in self.search_bases):
            return False
        return not any(is_under(dn, x) for x in self.exclude_ous)

    def fingerprint(self) -> str:
        """A hash of everything that decides which objects and attributes are imported.

        Stored with delta watermarks: when the scope changes, a delta cannot be trusted to
        bring in what the old scope left out, so the importer runs a full import instead.
        """
        parts = [
            "|".join(",".join(split_dn(b)) for b in self.search_bases),
            "|".join(sorted(",".join(split_dn(x)) for x in self.exclude_ous)),
            self.user_filter,
            self.group_filter,
            "|".join(sorted(self.attribute_names)),
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def classify(object_classes: Iterable[bytes | str]) -> ObjectType:
    """User or group, from an entry's objectClass values."""
    for oc in object_classes:
        name = oc.decode() if isinstance(oc, bytes | bytearray) else oc
        if name.lower() in GROUP_CLASSES:
            return "group"
    return "user"


def naming_context(dn: str, naming_contexts: Iterable[str]) -> str | None:
    """The naming context holding `dn` (the longest one it lies under)."""
    best: str | None = None
    for nc in naming_contexts:
        if nc and is_under(dn, nc) and (best is None or len(split_dn(nc)) > len(split_dn(best))):
            best = nc
    return best
