"""The tenant reads and the extension registration, against the strict emulator."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from idsync.emulator.app import EmulatorServer
from idsync.emulator.config import DEFAULT_CLIENT_ID, ClientSpec, EmulatorConfig, service_principal_id
from idsync.emulator.core import Emulator
from idsync.runtime.tenant_watch import TenantNotReady, TenantWatch
from idsync.store import desired, quarantine
from idsync.store.db import Store
from idsync.sync.tenant import STORE_KEY, TenantDomains
from idsync.target.client import GraphClient
from idsync.target.errors import GraphRequestError
from idsync.target.graph import GraphTarget
from idsync.target.tenant import ExtensionName, TenantReader, missing, token_roles
from tests.target.conftest import TestFence, make_settings, queue

OTHER_APP = "00000000-0000-4000-8000-0000000000b2"


@pytest.fixture
async def strict(tls: tuple[Path, ssl.SSLContext, Path]) -> AsyncIterator[EmulatorServer]:
    """The emulator as a fresh tenant: no extension registered, an initial domain, a second app
    with read permissions only."""
    cfg = EmulatorConfig(
        domains=["example.com", "contoso.onmicrosoft.com"],
        extra_clients=[ClientSpec(OTHER_APP, "other-secret", ["User.Read.All", "Directory.Read.All"])],
    )
    async with EmulatorServer(cfg, ssl_context=tls[1]) as srv:
        yield srv


@pytest.fixture
async def reader(
    strict: EmulatorServer, tls: tuple[Path, ssl.SSLContext, Path]
) -> AsyncIterator[TenantReader]:
    client = GraphClient(make_settings(strict, tls), backoff_base=0.02, read_attempts=2)
    yield TenantReader(client)
    await client.close()


def _anchor(server: EmulatorServer) -> str:
    return server.emulator.cfg.extension_name("idsyncSourceAnchor")


async def test_the_token_carries_the_permissions_idsync_needs(reader: TenantReader) -> None:
    token = await reader.token()
    assert token is not None
    assert "User.ReadWrite.All" in token_roles(token)
    assert missing(token_roles(token)) == []


async def test_a_read_only_app_lacks_the_fatal_permissions(
    strict: EmulatorServer, tls: tuple[Path, ssl.SSLContext, Path]
) -> None:
    secret = tls[2].parent / "other-secret"
    secret.write_text("other-secret")
    settings = make_settings(strict, tls, client_id=OTHER_APP, client_secret_file=secret)
    async with GraphClient(settings) as client:
        token = await TenantReader(client).token()
    assert token is not None
    gaps = missing(token_roles(token))
    assert [r.what for r in gaps if r.fatal] == [
        "create, update and delete users",
        "create and update groups and their members",
    ]


async def test_domains_name_the_verified_and_the_initial_one(reader: TenantReader) -> None:
    tenant = await reader.domains()
    assert tenant.verified == {"example.com", "contoso.onmicrosoft.com"}
    assert tenant.initial == "contoso.onmicrosoft.com"
    assert not tenant.is_verified("corp.local")


async def test_the_group_extension_is_registered_once(strict: EmulatorServer, reader: TenantReader) -> None:
    name = _anchor(strict)
    assert not (await reader.extension(name)).registered
    first = await reader.register_extension(name)
    assert first == f"{name} registered for Group on application {DEFAULT_CLIENT_ID}"
    state = await reader.extension(name)
    assert state.registered and state.serves("Group") and not state.serves("User")
    # Idempotent: a second --fix changes nothing.
    assert await reader.register_extension(name) == f"{name} already registered for Group"


async def test_an_extension_name_graph_could_not_have_given_is_refused(reader: TenantReader) -> None:
    assert ExtensionName.parse("extension_idsync_idsyncSourceAnchor") is None
    with pytest.raises(GraphRequestError, match="is not extension_<application id without dashes>_<name>"):
        await reader.register_extension("extension_idsync_idsyncSourceAnchor")


async def test_directory_roles_of_the_app_and_of_a_user(strict: EmulatorServer, reader: TenantReader) -> None:
    em = strict.emulator
    assert await reader.app_roles(DEFAULT_CLIENT_ID) == ()
    em.grant_role("User Administrator", service_principal_id(DEFAULT_CLIENT_ID))
    assert await reader.app_roles(DEFAULT_CLIENT_ID) == ("User Administrator",)
    boss, staff = em.seed_users(2)
    em.grant_role("Global Administrator", boss)
    assert await reader.user_roles(boss) == ("Global Administrator",)
    assert await reader.user_roles(staff) == ()


async def test_an_administrator_the_app_may_not_touch_is_quarantined_at_once_with_its_roles(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    boss, staff = em.seed_users(2)
    em.grant_role("Global Administrator", boss)
    queue(store, "user", "src-boss", "update", {"accountEnabled": False}, target_id=boss)
    queue(store, "user", "src-staff", "update", {"accountEnabled": False}, target_id=staff)
    report = await target.exporter(store, lease).export()
    outcome = {r.anchor: r for r in report.results}
    assert outcome["src-staff"].outcome == "ok"  # everyone else goes on
    denied = outcome["src-boss"]
    assert denied.outcome == "error" and denied.status == 403 and denied.final
    assert em.store.objects[boss].props["accountEnabled"] is True
    with store.connection() as conn:
        row = conn.execute(
            "SELECT quarantined_at IS NOT NULL, attempts, last_error FROM pending_export"
            " WHERE anchor = 'src-boss'"
        ).fetchone()
        [q] = quarantine.listing(conn, "export")
    assert row is not None and row[0] and row[1] == 1  # not retried: set aside after one attempt
    assert "Authorization_RequestDenied" in row[2]
    assert "holds the directory role(s) Global Administrator" in row[2]
    assert q.key == "src-boss" and "Global Administrator" in q.reason
    # The next export run does not send it again.
    again = await target.exporter(store, lease).export()
    assert again.results == []


# --- the daemon's start-up checks (runtime.tenant_watch) ---------------------------------------


async def test_the_daemon_refuses_to_start_without_the_permissions_it_needs(
    strict: EmulatorServer, tls: tuple[Path, ssl.SSLContext, Path], store: Store
) -> None:
    secret = tls[2].parent / "other-secret"
    secret.write_text("other-secret")
    settings = make_settings(strict, tls, client_id=OTHER_APP, client_secret_file=secret)
    async with GraphClient(settings) as client:
        watch = TenantWatch(TenantReader(client), store, _anchor(strict))
        with pytest.raises(TenantNotReady) as e:
            await watch.startup()
    text = str(e.value)
    assert "to create, update and delete users it needs one of User.ReadWrite.All" in text
    assert "It carries: User.Read.All, Directory.Read.All" in text


async def test_a_missing_group_extension_holds_groups_only_until_it_is_registered(
    strict: EmulatorServer, reader: TenantReader, store: Store
) -> None:
    watch = TenantWatch(reader, store, _anchor(strict))
    assert await watch.startup() == []
    assert watch.import_types == ("user",)
    assert "is not registered for groups" in watch.blocked["group"]
    assert "idsync preflight --fix" in watch.blocked["group"]
    with store.connection() as conn:  # the domains are kept for the UPN rules
        kept = TenantDomains.from_json(desired.get_meta(conn, STORE_KEY) or "{}")
    assert kept.initial == "contoso.onmicrosoft.com"
    await watch.refresh()
    assert watch.import_types == ("user",)
    await reader.register_extension(_anchor(strict))
    await watch.refresh()  # the running daemon notices: groups resume
    assert watch.blocked == {} and watch.import_types == ("user", "group")
