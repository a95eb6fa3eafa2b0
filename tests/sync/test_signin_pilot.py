"""Sign-in and pilot scoping in the rules: validation, Entra ID's password rules, redaction in
previews, the preflight warning, and pilot groups scoping users through delta syncs."""

from __future__ import annotations

from typing import Any

import pytest

from idsync.commands.preflight import SourceScan, _signin_check
from idsync.store import desired, quarantine
from idsync.store.db import Store
from idsync.sync.errors import EvaluationError, RulesError
from idsync.sync.evaluate import Evaluator, Step
from idsync.sync.password_policy import REDACTED, password_problem
from idsync.sync.rules import rules_from_mapping
from idsync.sync.tenant import TenantDomains
from tests.sync.conftest import ad_group, ad_user, guid, make_world

PILOT = "CN=Group 1,OU=Groups,DC=example,DC=com"


def _problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(RulesError) as err:
        rules_from_mapping(data, origin="rules.toml")
    return [str(p) for p in err.value.problems]


# --- the rules -----------------------------------------------------------------------------------


def test_password_and_member_of_mistakes_name_the_setting_and_the_reason() -> None:
    problems = _problems(
        {
            "user": {
                "password": {"initial": "'Welcome-' + sorce.employeeid", "force_change": "yes", "expiry": 1},
                "scope": {"member_of": ["Pilot users"]},
            },
            "group": {"password": {"initial": "random"}},
        }
    )
    assert problems == [
        "user.scope.member_of: must be a group DN or a list of them, e.g."
        ' "CN=Pilot,OU=Groups,DC=example,DC=com" in expression "[\'Pilot users\']"',
        "user.password.expiry: unknown setting (known: force_change, initial)",
        "user.password.force_change: must be true or false, not 'yes'",
        "user.password.initial: unknown variable(s) sorce (use anchor, dn, object_type, source, values)"
        " in expression \"'Welcome-' + sorce.employeeid\"",
        "group.password: a group has no password: only users sign in",
    ]
    empty = _problems({"user": {"password": {"initial": ""}}})
    assert empty == ["user.password.initial: an expression must be a non-empty string in expression \"''\""]


def test_the_password_policy_is_part_of_the_rules_hash() -> None:
    plain = rules_from_mapping({}, origin="t")
    forced = rules_from_mapping({"user": {"password": {"force_change": True}}}, origin="t")
    assert plain.user.password.configured is False and plain.user.password.initial is None
    assert forced.user.password.configured and forced.user.password.force_change
    assert plain.hash != forced.hash


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("Sh0rt!", "it has 6 characters (8 to 256 needed)"),
        ("A1!" + "a" * 254, "it has 257 characters (8 to 256 needed)"),
        (
            "lowercase-only",
            "it mixes only 2 of the 4 kinds of characters (lowercase, symbols); Entra ID needs 3",
        ),
        ("Passwört-123", "it has 1 non-ASCII character(s) Entra ID does not allow"),
        ("Tab\tInside-1", "it has 1 control or unlisted character(s) Entra ID does not allow"),
        ("Welcome-2024", None),
        ("welcome 2024 x", None),  # blank space is allowed and counts with the symbols
        ("ALLUPPER123", "it mixes only 2 of the 4 kinds of characters (uppercase, digits)"),
        ("ALLUPPER123!", None),
    ],
)
def test_entra_password_rules(password: str, problem: str | None) -> None:
    got = password_problem(password)
    if problem is None:
        assert got is None
    else:
        assert got is not None and got.startswith(problem)
        assert password not in got  # a refusal never quotes the password


def _user_attrs(**extra: str) -> dict[str, list[str]]:
    u = ad_user(1, **extra)
    return {k: list(v) for k, v in u.attrs.items()}


def test_the_initial_password_is_computed_from_the_source_and_redacted_in_previews() -> None:
    rules = rules_from_mapping(
        {"user": {"password": {"initial": "'Welcome-' + source.employeeid + '!'", "force_change": True}}},
        origin="t",
    )
    ev = Evaluator(rules)
    attrs = _user_attrs(employeeid="4711")
    assert ev.initial_password(guid(1), "CN=User 1,OU=Staff,DC=example,DC=com", attrs) == "Welcome-4711!"
    trace: list[Step] = []
    out = ev.evaluate(guid(1), "user", "CN=User 1,OU=Staff,DC=example,DC=com", attrs, trace=trace)
    assert out.attrs is not None and "passwordProfile" not in out.attrs  # never in the desired state
    [step] = [s for s in trace if s.rule == "user.password.initial"]
    assert step.result == REDACTED
    assert (
        step.note
        == "13 characters, meets Entra ID's rules; forceChangePasswordNextSignIn true; on create only"
    )
    assert "Welcome-4711!" not in repr(trace)
    # no employeeID: no password, and the preview says the create would be quarantined
    bare = _user_attrs()
    with pytest.raises(EvaluationError) as err:
        ev.initial_password(guid(1), "CN=User 1", bare)
    assert str(err.value).startswith("user.password.initial: gave no password (null or empty")
    trace = []
    ev.evaluate(guid(1), "user", "CN=User 1,OU=Staff,DC=example,DC=com", bare, trace=trace)
    [step] = [s for s in trace if s.rule == "user.password.initial"]
    assert step.result is None and step.note.startswith("the create would be quarantined: gave no password")
    weak = Evaluator(
        rules_from_mapping(
            {"user": {"password": {"initial": "lower(source.givenname) + 'pass'"}}}, origin="t"
        )
    )
    trace = []
    weak.evaluate(guid(1), "user", "CN=User 1,OU=Staff,DC=example,DC=com", attrs, trace=trace)
    [step] = [s for s in trace if s.rule == "user.password.initial"]
    assert step.note.startswith("10 characters, refused: it mixes only 2 of the 4 kinds")


# --- preflight -------------------------------------------------------------------------------------


def _scan(**suffixes: int) -> SourceScan:
    scan = SourceScan()
    for s, n in suffixes.items():
        scan.suffixes[s.replace("_", ".")] = n
    return scan


TENANT = TenantDomains(
    frozenset({"example_com".replace("_", "."), "fed.example.org", "contoso.onmicrosoft.com"}),
    "contoso.onmicrosoft.com",
    frozenset({"fed.example.org"}),
)


def test_preflight_warns_for_a_managed_domain_without_an_initial_password_policy() -> None:
    none = rules_from_mapping({}, origin="t")
    check = _signin_check(_scan(example_com=3, corp_local=1, **{"fed_example_org": 5}), TENANT, none)
    assert check.status == "WARN"
    assert check.detail.startswith(
        "managed domain(s) contoso.onmicrosoft.com (1 users), example.com (3 users): users get a random"
        " password nobody knows and no forced change"
    )
    assert "fed.example.org" not in check.detail  # federated: sign-in at its identity provider
    assert check.fix.startswith('set [user.password] initial = "<CEL expression>" or force_change = true')
    federated_only = _signin_check(_scan(fed_example_org=5), TENANT, none)
    assert federated_only.status == "OK" and "federated" in federated_only.detail
    expression = rules_from_mapping(
        {"user": {"password": {"initial": "'Welcome-' + source.employeeid"}}}, origin="t"
    )
    assert _signin_check(_scan(example_com=3), TENANT, expression).status == "OK"
    forced = rules_from_mapping({"user": {"password": {"force_change": True}}}, origin="t")
    check = _signin_check(_scan(example_com=3), TENANT, forced)
    assert (check.status, check.detail) == (
        "OK",
        "random initial password, forceChangePasswordNextSignIn true",
    )
    assert _signin_check(_scan(example_com=3), None, none).status == "WARN"


def test_domains_read_from_graph_know_which_are_federated() -> None:
    t = TenantDomains.from_graph(
        [
            {"id": "example.com", "isVerified": True, "authenticationType": "Managed"},
            {"id": "Fed.Example.org", "isVerified": True, "authenticationType": "Federated"},
        ]
    )
    assert t.is_federated("fed.example.org") and not t.is_federated("example.com")
    assert TenantDomains.from_json(t.to_json()).fingerprint() == t.fingerprint()


# --- pilot scoping ---------------------------------------------------------------------------------


def _in_desired(store: Store) -> set[str]:
    with store.connection() as conn:
        return {r[0] for r in conn.execute("SELECT anchor FROM desired_object WHERE object_type = 'user'")}


def test_pilot_group_scopes_users_and_membership_changes_move_them_in_delta_syncs(store: Store) -> None:
    w = make_world(store, {"user": {"scope": {"member_of": PILOT}}})
    users = [ad_user(i) for i in (1, 2, 3)]
    w.source(*users, ad_group(1, [guid(1), guid(2)]), ad_group(2, [guid(3)]))
    first = w.sync()
    assert first.full
    assert _in_desired(store) == {guid(1), guid(2)}
    assert {o.anchor for o in w.ops("create") if o.object_type == "user"} == {guid(1), guid(2)}
    w.export_all()
    w.sync()

    # user 3 joins the pilot group, user 2 leaves it: only the group changed in the source.
    w.source(ad_group(1, [guid(1), guid(3)]))
    res = w.sync()
    assert not res.full
    assert res.evaluated == 3  # the group, and the two users whose pilot membership changed
    assert _in_desired(store) == {guid(1), guid(3)}
    assert {(o.kind, o.anchor) for o in w.ops("create", "delete")} == {
        ("create", guid(3)),
        ("delete", guid(2)),
    }

    # nothing changed: nothing is evaluated again
    w.export_all()
    assert w.sync().evaluated == 0


def test_nested_groups_are_not_expanded_and_a_missing_pilot_group_deprovisions_nobody(store: Store) -> None:
    w = make_world(store, {"user": {"scope": {"member_of": [PILOT]}}})
    nested = ad_group(2, [guid(2)])
    w.source(ad_user(1), ad_user(2), nested, ad_group(1, [guid(1), nested.anchor]))
    w.sync()
    assert _in_desired(store) == {guid(1)}  # user 2 is only a member of a member group
    w.export_all()
    w.sync()

    # the pilot group is deleted in AD: an error, not an empty pilot — user 1 keeps its state
    w.delete_source(guid(100_001))
    res = w.sync()
    assert res.full and res.reason == "pilot group found or lost"
    assert _in_desired(store) == {guid(1)}
    assert [o.object_type for o in w.ops("delete")] == ["group"]  # the deleted group itself, no user
    with store.connection() as conn:
        reasons = [e.reason for e in quarantine.entries(conn) if e.key == guid(1)]
    assert (
        reasons
        and "user.scope.member_of: pilot group cn=group 1,ou=groups,dc=example,dc=com is not in the source"
        in reasons[0]
    )

    # it comes back: user 1 is released, user 2 still out
    w.source(ad_group(1, [guid(1)]))
    w.sync()
    assert _in_desired(store) == {guid(1)}
    with store.connection() as conn:
        assert [e for e in quarantine.entries(conn) if e.key == guid(1)] == []
        assert desired.get(conn, guid(2)) is None


def test_member_of_on_groups_syncs_only_the_groups_in_the_pilot_group(store: Store) -> None:
    """Entra Connect's pilot filtering takes every object type that is a direct member: with
    member_of on [group.scope] too, only the member groups are synced (not the pilot group)."""
    w = make_world(store, {"user": {"scope": {"member_of": PILOT}}, "group": {"scope": {"member_of": PILOT}}})
    inner, other = ad_group(2, [guid(1), guid(2)]), ad_group(3, [guid(1)])
    w.source(ad_user(1), ad_user(2), inner, other, ad_group(1, [guid(1), inner.anchor]))
    w.sync()
    with store.connection() as conn:
        groups = {r[0] for r in conn.execute("SELECT anchor FROM desired_object WHERE object_type = 'group'")}
        assert groups == {inner.anchor}
        assert desired.members(conn, inner.anchor) == [guid(1)]  # user 2 is not in the pilot
