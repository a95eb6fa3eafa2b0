"""The openldap preset's manager flow on the harness's OpenLDAP: inetOrgPerson's `manager` (a DN)
imported by syncrepl, resolved to the manager's entryUUID, changed and cleared."""

from __future__ import annotations

from collections.abc import Callable

from idsync.source.importer import SourceImporter
from idsync.store import pending
from idsync.store.db import Store
from idsync.sync.engine import SyncEngine
from idsync.sync.rules import load_rules
from tests.harness import LdapEndpoint
from tests.source.conftest import Directory
from tests.source.test_slapd import ol, person, settings_for

__all__ = ["ol"]  # the fixture this module shares with test_slapd.py


def manager_ops(store: Store) -> set[tuple[str, str, str]]:
    with store.connection() as conn:
        return {
            (o.kind, o.anchor, o.member_anchor)
            for o in pending.listing(conn, kinds=["manager_set", "manager_remove"])
        }


def test_the_openldap_manager_resolves_changes_and_clears(
    ol: Directory,
    slapd: LdapEndpoint,
    slapd_ou: str,
    store: Store,
    importer_for: Callable[..., SourceImporter],
) -> None:
    people = ol.ou("people", slapd_ou)
    bob = person(ol, people, "bob", mail="bob@example.com")
    cy = person(ol, people, "cy", mail="cy@example.com")
    ann = person(ol, people, "ann", mail="ann@example.com", manager=bob)
    ids = {dn: ol.entry_uuid(dn) for dn in (ann, bob, cy)}
    imp = importer_for(settings_for(slapd, slapd_ou), store)
    imp.full_import()
    engine = SyncEngine(store, load_rules(None, source_kind="openldap"))
    engine.run()
    assert manager_ops(store) == {("manager_set", ids[ann], ids[bob])}

    ol.replace(ann, manager=cy)
    imp.delta_import()
    engine.run()
    assert manager_ops(store) == {("manager_set", ids[ann], ids[cy])}

    ol.replace(ann, manager=[])
    imp.delta_import()
    engine.run()
    # Nothing was exported, so the target has no manager to remove: the queue has none.
    assert manager_ops(store) == set()
