"""Rules: presets, validation messages an operator can act on, scoping, flows and the rules hash."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest

from idsync.sync.errors import EvaluationError, RulesError
from idsync.sync.evaluate import Evaluator
from idsync.sync.ldapfilter import FilterSyntaxError, parse
from idsync.sync.rules import load_rules, rules_from_mapping
from tests.sync.conftest import ad_group, ad_user


def _problems(data: dict[str, object]) -> list[str]:
    with pytest.raises(RulesError) as err:
        rules_from_mapping(data, origin="rules.toml")
    return [str(p) for p in err.value.problems]


def test_a_cel_syntax_error_names_rule_attribute_and_expression() -> None:
    problems = _problems({"user": {"flows": {"jobTitle": "upper(source.title"}}})
    assert len(problems) == 1
    assert problems[0] == (
        "user.flows.jobTitle: CEL compile error at column 19: Syntax error: missing ')' at '<EOF>'"
        " in expression 'upper(source.title'"
    )


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems(
        {
            "user": {
                "flows": {
                    "favouriteColour": "source.colour",  # not a Graph attribute
                    "department": "sorce.department",  # typo in the variable
                    "jobTitle": "titlecase(source.title)",  # no such function
                    "displayName": False,  # removes a required flow
                },
                "deprovision": "purge",
            },
            "group": {"deprovision": "disable", "scope": {"filter": "(cn=a"}},
        }
    )
    text = "\n".join(problems)
    assert "user.flows.favouriteColour: unknown target attribute 'favouriteColour' for a user" in text
    assert "user.flows.department: unknown variable(s) sorce" in text
    assert (
        "user.flows.jobTitle: unknown function(s) titlecase in expression 'titlecase(source.title)'" in text
    )
    assert "user.flows: no flow for displayName, which Graph requires to create a user" in text
    assert "user.deprovision: must be one of delete, disable, leave, not 'purge'" in text
    assert "group.deprovision: groups cannot be disabled" in text
    assert "group.scope.filter: LDAP filter error" in text
    assert len(problems) == 7


def test_unknown_settings_are_errors_not_silently_ignored() -> None:
    problems = _problems({"user": {"scope": {"inclde": ["OU=x,DC=y"]}}})
    assert problems == [
        "user.scope.inclde: unknown setting (known: condition, exclude, filter, include, member_of)",
    ]


def test_rules_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text('[user.flows]\nmail = "lower(source.mail"\n')
    with pytest.raises(RulesError) as err:
        load_rules(bad)
    assert str(bad) in str(err.value)
    assert "user.flows.mail: CEL compile error" in str(err.value)
    bad.write_text("[user\n")
    with pytest.raises(RulesError, match="TOML syntax error"):
        load_rules(bad)
    with pytest.raises(RulesError, match="cannot be read"):
        load_rules(tmp_path / "missing.toml")


def test_rules_hash_is_stable_and_tracks_meaning(tmp_path: Path) -> None:
    a = rules_from_mapping(
        {"user": {"flows": {"jobTitle": "upper(source.title)", "city": "source.l"}}}, origin="a"
    )
    b = rules_from_mapping(
        {"user": {"flows": {"city": "source.l", "jobTitle": "upper(source.title)"}}}, origin="b"
    )
    c = rules_from_mapping(
        {"user": {"flows": {"jobTitle": "lower(source.title)", "city": "source.l"}}}, origin="c"
    )
    assert a.hash == b.hash
    assert a.hash != c.hash
    assert load_rules(None, source_kind="ad").hash != load_rules(None, source_kind="openldap").hash
    f = tmp_path / "r.toml"
    f.write_text('[user.flows]\ncity = "source.l"\njobTitle = "upper(source.title)"\n')
    assert load_rules(f).hash == a.hash


def test_default_ad_user_flows_match_entra_connect() -> None:
    ev = Evaluator(load_rules(None, source_kind="ad"))
    u = ad_user(7, title="Engineer", employeeid="E7", useraccountcontrol="514", telephonenumber="+1 555")
    out = ev.evaluate(u.anchor, "user", u.dn, u.attrs)
    assert out.in_scope and out.attrs is not None
    assert out.attrs["userPrincipalName"] == "u7@example.com"
    assert out.attrs["displayName"] == "Given7 Sur7"
    assert out.attrs["mailNickname"] == "u7"
    assert out.attrs["accountEnabled"] is False  # 514 = 512 | ACCOUNTDISABLE
    assert out.attrs["jobTitle"] == "Engineer" and out.attrs["employeeId"] == "E7"
    assert out.attrs["businessPhones"] == ["+1 555"]
    assert out.attrs["city"] is None  # absent in the source: null, not an error
    raw = base64.b64decode(out.attrs["onPremisesImmutableId"])
    assert raw == uuid.UUID(u.anchor).bytes_le  # Entra Connect's ImmutableId of an objectGUID
    assert out.target_anchor == out.attrs["onPremisesImmutableId"]


def test_default_ad_group_flows_and_scope() -> None:
    rules = load_rules(None, source_kind="ad")
    ev = Evaluator(rules)
    g = ad_group(1, [])
    out = ev.evaluate(g.anchor, "group", g.dn, g.attrs)
    assert out.attrs == {
        "displayName": "Group 1",
        "description": None,
        "mailNickname": "g1",
        "mailEnabled": False,
        "securityEnabled": True,
        "extension_idsync_idsyncSourceAnchor": g.anchor,
    }
    assert rules.anchor_attribute("group") == "extension_idsync_idsyncSourceAnchor"
    distribution = ad_group(2, [], grouptype="2")
    assert not ev.evaluate(distribution.anchor, "group", distribution.dn, distribution.attrs).in_scope
    builtin = ad_group(3, [], iscriticalsystemobject="TRUE")
    assert not ev.evaluate(builtin.anchor, "group", builtin.dn, builtin.attrs).in_scope


def test_openldap_preset() -> None:
    ev = Evaluator(load_rules(None, source_kind="openldap"))
    anchor = str(uuid.uuid4())
    attrs = {"cn": ["Ann Lee"], "sn": ["Lee"], "uid": ["ann"], "mail": ["ann@example.com"]}
    out = ev.evaluate(anchor, "user", "uid=ann,ou=people,dc=example,dc=com", attrs)
    assert out.attrs is not None
    assert out.attrs["userPrincipalName"] == "ann@example.com"
    assert out.attrs["mailNickname"] == "ann"
    assert out.attrs["accountEnabled"] is True
    assert base64.b64decode(out.attrs["onPremisesImmutableId"]) == uuid.UUID(anchor).bytes
    locked = {**attrs, "pwdaccountlockedtime": ["000001010000Z"]}
    assert ev.evaluate(anchor, "user", "uid=ann,dc=x", locked).attrs["accountEnabled"] is False  # type: ignore[index]


def test_scoping_by_ou_include_exclude_filter_and_cel() -> None:
    rules = rules_from_mapping(
        {
            "user": {
                "scope": {
                    "include": ["OU=Staff, DC=example, DC=com"],
                    "exclude": ["OU=Service,OU=Staff,DC=example,DC=com"],
                    "filter": "(&(department=*)(!(title=intern*)))",
                    "condition": "!source.userprincipalname.endsWith('@test.example.com')",
                }
            }
        },
        origin="t",
    )
    ev = Evaluator(rules)

    def in_scope(u: object) -> bool:
        return ev.evaluate(u.anchor, "user", u.dn, u.attrs).in_scope  # type: ignore[attr-defined]

    assert in_scope(ad_user(1))
    assert in_scope(ad_user(2, ou="OU=Berlin,OU=Staff"))  # sub-OU of an included OU
    assert not in_scope(ad_user(3, ou="OU=Service,OU=Staff"))  # excluded OU
    assert not in_scope(ad_user(4, ou="OU=Contractors"))  # not under an included OU
    assert not in_scope(ad_user(5, department=""))  # LDAP presence condition
    assert not in_scope(ad_user(6, title="Intern (summer)"))  # substring match, case-insensitive
    assert not in_scope(ad_user(7, userprincipalname="u7@test.example.com"))  # CEL predicate


def test_evaluation_error_names_object_rule_and_expression() -> None:
    rules = rules_from_mapping(
        {"user": {"flows": {"employeeId": "string(int(source.employeeid))"}}}, origin="t"
    )
    ev = Evaluator(rules)
    ok = ad_user(1, employeeid="0042")
    assert ev.evaluate(ok.anchor, "user", ok.dn, ok.attrs).attrs["employeeId"] == "42"  # type: ignore[index]
    bad = ad_user(2, employeeid="E-42")
    with pytest.raises(EvaluationError) as err:
        ev.evaluate(bad.anchor, "user", bad.dn, bad.attrs)
    assert err.value.anchor == bad.anchor
    assert err.value.rule == "user.flows.employeeId"
    assert "string(int(source.employeeid))" in str(err.value)
    # A required attribute that comes out empty is an error too, not a failed create later.
    nameless = ad_user(3, userprincipalname="")
    with pytest.raises(
        EvaluationError, match=r"user\.flows\.userPrincipalName: is empty, but Graph requires it"
    ):
        ev.evaluate(nameless.anchor, "user", nameless.dn, nameless.attrs)


@pytest.mark.parametrize(
    ("text", "attrs", "expected"),
    [
        ("(userAccountControl:1.2.840.113556.1.4.803:=2)", {"useraccountcontrol": ["514"]}, True),
        ("(userAccountControl:1.2.840.113556.1.4.803:=2)", {"useraccountcontrol": ["512"]}, False),
        ("(groupType:1.2.840.113556.1.4.804:=2147483650)", {"grouptype": ["-2147483646"]}, True),
        ("(|(cn=a)(cn=b))", {"cn": ["B"]}, True),
        ("(employeeNumber>=100)", {"employeenumber": ["99"]}, False),
        ("(employeeNumber<=100)", {"employeenumber": ["99"]}, True),
        ("(cn=a\\2ab)", {"cn": ["a*b"]}, True),
        ("(!(mail=*))", {}, True),
    ],
)
def test_ldap_filter_semantics(text: str, attrs: dict[str, list[str]], expected: bool) -> None:
    assert parse(text).matches(attrs) is expected


@pytest.mark.parametrize("text", ["cn=a", "(cn=a", "(&)", "(!(a=1)(b=2))", "(cn=a)(cn=b)", "(a:1.2.3:=1)"])
def test_ldap_filter_syntax_errors(text: str) -> None:
    with pytest.raises(FilterSyntaxError):
        parse(text)


def test_flows_that_copy_an_attribute_give_what_cel_gives() -> None:
    # `source.<name>` flows are read without a CEL call (Expression.direct); the same rules with
    # every flow run through CEL must give the same verdicts, whatever the attribute holds.
    import dataclasses

    rules = load_rules(None, source_kind="ad")
    direct = [f.attribute for f in rules.user.flows if f.expression.direct]
    assert {"department", "givenName", "mail", "jobTitle"} <= set(direct)
    through_cel = dataclasses.replace(
        rules,
        user=dataclasses.replace(
            rules.user,
            flows=tuple(
                dataclasses.replace(f, expression=dataclasses.replace(f.expression, direct=None))
                for f in rules.user.flows
            ),
        ),
    )
    users = [
        ad_user(1),
        ad_user(2, department="", title="Boss", givenname=""),  # empty values: absent attributes
        ad_user(3, department='Ünïcödé \\ "quoted"', sn="", l="Zürich"),
        ad_user(4, mail="", physicaldeliveryofficename="B 4"),
    ]
    fast, slow = Evaluator(rules), Evaluator(through_cel)
    for u in users:
        attrs = {k: list(v) for k, v in u.attrs.items()}
        a = fast.evaluate(u.anchor, "user", u.dn, attrs)
        b = slow.evaluate(u.anchor, "user", u.dn, attrs)
        assert a == b, u.anchor
    assert (
        fast.evaluate(users[1].anchor, "user", users[1].dn, dict(users[1].attrs)).attrs["department"] is None
    )
