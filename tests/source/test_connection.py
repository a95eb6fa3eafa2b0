"""Servers tried in order, jittered backoff between rounds, a refused bind never retried."""

from __future__ import annotations

import socket

import pytest

from idsync.source.connection import LdapConnector
from idsync.source.errors import SourceBindFailed, SourceUnavailable
from idsync.source.settings import LdapSourceSettings
from tests.harness import LdapEndpoint, Stack
from tests.source.fakeldap import ROOT_DSE, FakeLdapServer, Reply, SearchRequest


def dead_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    return f"ldap://127.0.0.1:{port}"


def root_only(req: SearchRequest) -> Reply:
    return Reply([ROOT_DSE] if req.base == "" else [])


def test_the_next_server_is_used_when_the_first_is_down() -> None:
    srv = FakeLdapServer(root_only)
    try:
        s = LdapSourceSettings(
            kind="ad", urls=(dead_url(), srv.url), base_dns=("DC=fake",), connect_timeout=1
        )
        conn = LdapConnector(s, sleep=lambda _: pytest.fail("no backoff needed"))
        session = conn.session()
        assert session.url == srv.url and session.info.name == "fake-dc.example.org"
        assert conn.session() is session  # one session per thread, reused
        conn.close()
    finally:
        srv.close()


def test_all_servers_down_backs_off_with_jitter_then_names_every_server() -> None:
    urls = (dead_url(), dead_url())
    s = LdapSourceSettings(
        kind="ad",
        urls=urls,
        base_dns=("DC=fake",),
        connect_timeout=1,
        connect_attempts=3,
        backoff_initial=2.0,
    )
    pauses: list[float] = []
    conn = LdapConnector(s, sleep=pauses.append, rand=lambda: 1.0)
    with pytest.raises(SourceUnavailable) as exc:
        conn.session()
    assert pauses == [2.0, 4.0]
    assert set(exc.value.reasons) == set(urls)


def test_wrong_password_fails_at_once_naming_the_account(samba: LdapEndpoint) -> None:
    s = LdapSourceSettings(
        kind="ad",
        urls=(samba.url,),
        base_dns=(samba.base_dn,),
        bind_dn=samba.bind_dn,
        password=lambda: "wrong",
    )
    conn = LdapConnector(s, sleep=lambda _: pytest.fail("a refused bind must not be retried"))
    with pytest.raises(SourceBindFailed, match=r"Administrator.*invalidCredentials"):
        conn.session()


@pytest.mark.parametrize(
    ("url", "start_tls"), [("ldaps://127.0.0.1:636", False), ("ldap://127.0.0.1:389", True)]
)
def test_tls_certificates_are_always_verified(
    stack: Stack, samba: LdapEndpoint, url: str, start_tls: bool
) -> None:
    ca = stack.samba().workdir / "private" / "tls" / "ca.pem"  # Samba writes it at its first start
    for ca_file, why in ((None, "certificate verify failed"), (ca, "doesn't match any name")):
        s = LdapSourceSettings(
            kind="ad",
            urls=(url,),
            start_tls=start_tls,
            ca_file=ca_file,
            base_dns=(samba.base_dn,),
            bind_dn=samba.bind_dn,
            password=lambda: samba.password,
            connect_attempts=1,
        )
        # the DC's self-signed certificate names DC1.test.idsync.lan, not 127.0.0.1: with its CA
        # the chain verifies and only the name is refused; without it, the chain is refused
        with pytest.raises(SourceUnavailable, match=why):
            LdapConnector(s).session()
