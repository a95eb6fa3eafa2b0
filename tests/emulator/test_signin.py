"""Sign-in facts the emulator keeps as Graph does: passwordProfile on $select (never the password),
Entra ID's password rules, and each domain's authenticationType."""

from __future__ import annotations

import pytest

from idsync.emulator.config import EmulatorConfig
from tests.emulator.conftest import Graph, make_config


@pytest.fixture
def emulator_config() -> EmulatorConfig:
    return make_config(domains=["example.com", "fed.example.org"], federated_domains=["fed.example.org"])


async def test_password_profile_is_returned_only_on_select_and_never_the_password(graph: Graph) -> None:
    body = {"password": "Initial-Passw0rd", "forceChangePasswordNextSignIn": True}
    u = await graph.create_user("ada", passwordProfile=body)
    plain = await graph.call("GET", f"/users/{u['id']}")
    assert "passwordProfile" not in plain.body
    r = await graph.call("GET", f"/users/{u['id']}?$select=id,passwordProfile")
    assert r.status == 200
    assert r.body["passwordProfile"] == {"password": None, "forceChangePasswordNextSignIn": True}
    assert "Initial-Passw0rd" not in str(graph.em.dump())


@pytest.mark.parametrize(
    "password",
    ["Sh0rt!", "alllowercase-only", "Passwört-123", "x" * 250 + "A1!aaaaaa"],
    ids=["too-short", "two-kinds", "unicode", "too-long"],
)
async def test_passwords_breaking_entra_rules_are_refused(graph: Graph, password: str) -> None:
    body = {
        "accountEnabled": True,
        "displayName": "Bo",
        "mailNickname": "bo",
        "userPrincipalName": "bo@example.com",
        "passwordProfile": {"password": password},
    }
    r = await graph.call("POST", "/users", body)
    assert r.status == 400
    assert "password complexity" in r.body["error"]["message"]


async def test_domains_say_managed_or_federated(graph: Graph) -> None:
    r = await graph.call("GET", "/domains")
    kinds = {d["id"]: d["authenticationType"] for d in r.body["value"]}
    assert kinds == {"example.com": "Managed", "fed.example.org": "Federated"}
    org = await graph.call("GET", "/organization")
    types = {d["name"]: d["type"] for d in org.body["value"][0]["verifiedDomains"]}
    assert types == {"example.com": "Managed", "fed.example.org": "Federated"}


async def test_a_user_of_a_federated_domain_needs_an_immutable_id_on_create(graph: Graph) -> None:
    body = {
        "accountEnabled": True,
        "displayName": "Fed",
        "mailNickname": "fed",
        "userPrincipalName": "fed@fed.example.org",
        "passwordProfile": {"password": "Xy7!long-enough"},
    }
    r = await graph.call("POST", "/users", body)
    assert r.status == 400
    assert "onPremisesImmutableId" in r.body["error"]["message"]
    r = await graph.call("POST", "/users", {**body, "onPremisesImmutableId": "ZmVkLTE="})
    assert r.status == 201, r.body
    await graph.create_user("managed")  # a managed domain's user needs none
