"""Plain data that travels between the layers: named for the domain, frozen, no SQL or HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

ObjectType = Literal["user", "group"]
OBJECT_TYPES: tuple[ObjectType, ...] = ("user", "group")

ExportKind = Literal[
    "create", "update", "delete", "member_add", "member_remove", "manager_set", "manager_remove"
]


@dataclass(frozen=True, slots=True)
class SourceObject:
    """One directory object as imported, keyed by its immutable anchor, never by DN.

    `attrs` maps lower-case attribute names to normalized string values (binary values already
    turned into canonical text: GUIDs, SIDs, base64). `members` is the complete member list of a
    group as member references (the member's anchor where the directory told us, else
    ``dn:<dn>``); None means "not part of this change" (e.g. a delta that did not touch members).
    """

    anchor: str
    object_type: ObjectType
    dn: str
    attrs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    members: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class MemberDelta:
    """Incremental membership change of one group (DirSync's ranged member values)."""

    group_anchor: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Quarantined:
    """An object that could not be processed, with the reason; everything else goes on."""

    phase: str
    key: str
    reason: str
    object_type: str | None = None
    dn: str | None = None


@dataclass(frozen=True, slots=True)
class InitialPassword:
    """The passwordProfile of one user create, computed at export time and never stored.

    `password` None means a random one nobody knows; `refused` says why the rules' password
    cannot be used (the create is quarantined with it). The password is left out of repr().
    """

    password: str | None = field(default=None, repr=False)
    force_change: bool = False
    refused: str | None = None
