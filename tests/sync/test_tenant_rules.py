"""Identity rules a real tenant accepts: mailNickname, one business phone, UPN suffix fallback,
and user and group diffs that never wait for each other's target import."""

from __future__ import annotations

import pytest

from idsync.store import desired, quarantine, target_space
from idsync.store.db import Store
from idsync.store.target_space import DeltaPosition
from idsync.sync.errors import RulesError
from idsync.sync.functions import mail_nickname, take
from idsync.sync.rules import rules_from_mapping
from idsync.sync.tenant import STORE_KEY, TenantDomains
from tests.sync.conftest import World, ad_group, ad_user, guid, make_world

TENANT = TenantDomains(frozenset({"example.com", "contoso.onmicrosoft.com"}), "contoso.onmicrosoft.com")


def _tenant(store: Store, tenant: TenantDomains) -> None:
    with store.transaction() as conn:
        desired.set_meta(conn, STORE_KEY, tenant.to_json())


def _payload(world: World, anchor: str) -> dict[str, object]:
    [op] = [o for o in world.ops("create", "update") if o.anchor == anchor]
    return dict(op.payload)


@pytest.mark.parametrize(
    ("value", "object_type", "expected"),
    [
        ("Sales Team (EU)", "group", "SalesTeamEU"),
        ('a@b(c)d\\e[f]g"h;i:j.k<l>m,n o', "group", "abcdefghijklmno"),
        ("Jürgen.Müller", "user", "Jurgen.Muller"),  # dots stay in user aliases
        ("Jürgen.Müller", "group", "JurgenMuller"),
        ("x" * 80, "group", "x" * 64),
        ("日本語", "group", None),  # nothing ASCII is left: null, which Graph's required check names
        (None, "group", None),
    ],
)
def test_mail_nickname_applies_graphs_rules(
    value: str | None, object_type: str, expected: str | None
) -> None:
    assert mail_nickname(value, object_type) == expected


def test_take_keeps_the_first_numbers() -> None:
    assert take(["+1 555 0100", "+1 555 0101"], 1) == ["+1 555 0100"]
    assert take(["", None], 1) is None
    assert take(None, 1) is None


def test_the_ad_preset_exports_what_graph_accepts(world: World) -> None:
    user = ad_user(1, samaccountname="ann lee", telephonenumber="+1 555 0100")
    user.attrs["telephonenumber"] = ("+1 555 0100", "+1 555 0199", "+44 20 7946 0000")
    group = ad_group(1, [guid(1)], cn="Sales Team (EU)", samaccountname="Sales Team (EU)")
    world.source(user, group)
    world.sync()
    u = _payload(world, guid(1))
    assert u["businessPhones"] == ["+1 555 0100"]  # Graph keeps one number
    assert u["mailNickname"] == "annlee"
    g = _payload(world, group.anchor)
    assert g["mailNickname"] == "SalesTeamEU" and g["displayName"] == "Sales Team (EU)"


def test_an_unverified_upn_suffix_falls_back_to_the_initial_domain(store: Store, world: World) -> None:
    _tenant(store, TENANT)
    world.source(ad_user(1, userprincipalname="ann@corp.local"), ad_user(2))
    world.sync()
    assert _payload(world, guid(1))["userPrincipalName"] == "ann@contoso.onmicrosoft.com"
    assert _payload(world, guid(2))["userPrincipalName"] == "u2@example.com"
    with store.connection() as conn:
        [note] = quarantine.listing(conn, "notice")
    assert note.key == guid(1)
    assert note.reason == (
        "UPN suffix corp.local of ann@corp.local is not a verified domain of the tenant:"
        " exported as ann@contoso.onmicrosoft.com (upn_unverified = fallback)"
    )
    # The domain gets verified: the rules run again and the user gets its real UPN.
    world.export_all()
    world.sync()
    _tenant(store, TenantDomains(TENANT.verified | {"corp.local"}, TENANT.initial))
    res = world.sync()
    assert res.full and res.reason == "tenant domains changed"
    assert _payload(world, guid(1)) == {"userPrincipalName": "ann@corp.local"}
    with store.connection() as conn:
        assert quarantine.listing(conn, "notice") == []


def test_upn_quarantine_mode_sets_the_user_aside_with_the_reason(store: Store) -> None:
    _tenant(store, TENANT)
    w = make_world(store, {"user": {"upn_unverified": "quarantine"}})
    w.source(ad_user(1, userprincipalname="ann@corp.local"), ad_user(2))
    res = w.sync()
    assert res.quarantined == 1
    assert {o.anchor for o in w.ops("create")} == {guid(2)}  # everyone else goes on
    with store.connection() as conn:
        [q] = quarantine.listing(conn, "sync")
    assert q.key == guid(1)
    assert "UPN suffix corp.local of ann@corp.local is not a verified domain of the tenant" in q.reason


def test_upn_unverified_is_validated() -> None:
    with pytest.raises(RulesError) as e:
        rules_from_mapping(
            {"user": {"upn_unverified": "ignore"}, "group": {"upn_unverified": "fallback"}}, origin="t"
        )
    text = str(e.value)
    assert "user.upn_unverified: must be one of fallback, quarantine, not 'ignore'" in text
    assert "group.upn_unverified: groups have no userPrincipalName" in text


def _position(store: Store, object_type: str, *, complete: bool) -> None:
    with store.transaction() as conn:
        pos = DeltaPosition(link="x", complete=complete, full=not complete, select="", server="emu")
        target_space.save_position(conn, object_type, pos)  # type: ignore[arg-type]


def test_a_group_import_under_way_delays_group_diffs_only(store: Store) -> None:
    w = make_world(store, {}, check_target_rounds=True)
    _position(store, "user", complete=True)
    _position(store, "group", complete=False)
    w.source(ad_user(1), ad_group(1, [guid(1)]))
    res = w.sync()
    assert res.deferred is None
    assert res.deferred_types == (
        "group diffs deferred: target import incomplete (group: full round under way)"
    )
    assert "group diffs deferred" in res.sentence()
    assert {(o.kind, o.object_type) for o in w.ops()} == {("create", "user")}
    w.export_all()
    w.sync()  # users confirmed; groups still wait
    assert w.ops() == []
    _position(store, "group", complete=True)
    res = w.sync()
    assert res.deferred_types is None
    assert {(o.kind, o.member_anchor) for o in w.ops()} == {("create", ""), ("member_add", guid(1))}
    w.export_all()  # the group is created; its member add waits for the confirming import
    w.sync()
    assert w.export_all() == 1
    w.sync()
    assert w.ops() == [] and w.target_members(ad_group(1, []).anchor) == {guid(1)}


def test_a_user_import_under_way_delays_user_diffs_only(store: Store) -> None:
    w = make_world(store, {}, check_target_rounds=True)
    _position(store, "user", complete=False)
    _position(store, "group", complete=True)
    w.source(ad_user(1), ad_group(1, [guid(1)]))
    res = w.sync()
    assert res.deferred_types == (
        "user diffs deferred: target import incomplete (user: full round under way)"
    )
    # The group is created; its member add waits for the user to exist, never dropped.
    assert {(o.kind, o.object_type) for o in w.ops()} == {("create", "group"), ("member_add", "group")}
    _position(store, "user", complete=True)
    w.sync()
    assert ("create", "user") in {(o.kind, o.object_type) for o in w.ops()}


def test_groups_the_daemon_holds_back_wait_with_the_reason_users_go_on(store: Store) -> None:
    w = make_world(store, {}, check_target_rounds=True)
    _position(store, "user", complete=True)
    _position(store, "group", complete=True)
    why = "the group anchor extension x is not registered (run `idsync preflight --fix`)"
    w.engine.blocked = {"group": why}
    w.source(ad_user(1), ad_group(1, [guid(1)]))
    res = w.sync()
    assert res.deferred_types == f"group diffs deferred: {why}"
    assert {(o.kind, o.object_type) for o in w.ops()} == {("create", "user")}
    w.engine.blocked = {}  # registered: the owed diff covers the group and its member
    w.export_all()
    w.sync()
    assert {(o.kind, o.member_anchor) for o in w.ops()} == {("create", ""), ("member_add", guid(1))}
