"""The harness's own tests: every service is used for real, and the chaos helpers do what they say."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import ldap3
import psycopg
import pytest
from kazoo.client import KazooClient, KazooState
from ldap3.core.exceptions import LDAPException
from psycopg import sql

from tests.harness import (
    LdapEndpoint,
    Postgres,
    Promtool,
    Service,
    ServiceStartError,
    SharedServiceError,
    Slapd,
    TcpProxy,
    ZooKeeper,
)
from tests.harness.ldap import connect
from tests.harness.packages import install_hint, missing_files, provider


def test_samba_bind_search_and_user_round_trip(samba: LdapEndpoint, samba_ou: str) -> None:
    conn = connect(samba)
    # The domain object's objectGUID is the kind of anchor idsync keys AD objects by.
    conn.search(samba.base_dn, "(objectClass=domain)", search_scope=ldap3.BASE, attributes=["objectGUID"])
    domain_guid = uuid.UUID(bytes_le=conn.response[0]["raw_attributes"]["objectGUID"][0])
    assert domain_guid.int != 0

    user_dn = f"CN=Test User,{samba_ou}"
    conn.add(
        user_dn,
        ["top", "person", "organizationalPerson", "user"],
        {"sAMAccountName": "tuser" + uuid.uuid4().hex[:6], "givenName": "Test", "sn": "User"},
    )
    conn.search(samba_ou, "(objectClass=user)", attributes=["objectGUID", "givenName", "userAccountControl"])
    [entry] = conn.response
    assert entry["dn"] == user_dn
    assert entry["raw_attributes"]["givenName"] == [b"Test"]
    assert uuid.UUID(bytes_le=entry["raw_attributes"]["objectGUID"][0]) != domain_guid
    conn.unbind()


def test_slapd_entry_uuid_and_memberof(slapd: LdapEndpoint, slapd_ou: str) -> None:
    conn = connect(slapd)
    user = f"uid=alice,{slapd_ou}"
    conn.add(user, ["inetOrgPerson"], {"cn": "Alice", "sn": "A", "mail": "alice@example.test"})
    conn.add(f"cn=staff,{slapd_ou}", ["groupOfNames"], {"cn": "staff", "member": [user]})
    conn.search(user, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["entryUUID", "memberOf"])
    attrs = conn.response[0]["raw_attributes"]
    assert uuid.UUID(attrs["entryUUID"][0].decode())  # RFC 4530 string form
    # The memberof overlay is configured: group membership shows up on the user.
    assert [v.decode().lower() for v in attrs["memberOf"]] == [f"cn=staff,{slapd_ou}".lower()]
    conn.unbind()


def test_zookeeper_ephemeral_node_vanishes_with_its_session(zk_hosts: str, zk_chroot: str) -> None:
    owner = KazooClient(hosts=f"{zk_hosts}{zk_chroot}", timeout=2.0)
    watcher = KazooClient(hosts=f"{zk_hosts}{zk_chroot}", timeout=2.0)
    owner.start(timeout=10)
    watcher.start(timeout=10)
    try:
        owner.create("/member", b"node-a", ephemeral=True)
        assert watcher.get("/member")[0] == b"node-a"
        gone = threading.Event()
        watcher.DataWatch("/member", lambda data, stat: gone.set() if stat is None else None)
        owner.stop()  # closing the session deletes its ephemeral nodes
        assert gone.wait(5), "ephemeral node still there after its session closed"
        assert watcher.exists("/member") is None
    finally:
        owner.close()
        watcher.stop()
        watcher.close()


def test_postgres_round_trip(pg_dsn: str, pg_schema: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        table = sql.Identifier(pg_schema, "t")
        conn.execute(sql.SQL("create table {} (id int primary key, name text)").format(table))
        conn.execute(sql.SQL("insert into {} values (1, 'one'), (2, 'two')").format(table))
        rows = conn.execute(sql.SQL("select id, name from {} order by id").format(table)).fetchall()
    assert rows == [(1, "one"), (2, "two")]


def test_promtool_runs(promtool: Promtool) -> None:
    res = subprocess.run([str(promtool.path), "--version"], capture_output=True, text=True, check=True)
    assert "promtool" in res.stdout + res.stderr
    assert promtool.version.startswith("promtool, version")


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A loopback echo server (port) for proxy tests."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()


def test_proxy_cut_holds_traffic_and_restore_delivers_it(echo_server: int) -> None:
    with TcpProxy("127.0.0.1", echo_server) as proxy:
        c = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        c.sendall(b"ping")
        assert c.recv(4) == b"ping"
        proxy.cut()
        c.sendall(b"held")
        c.settimeout(0.5)
        with pytest.raises(TimeoutError):
            c.recv(4)
        proxy.restore()
        c.settimeout(5)
        assert c.recv(4) == b"held"  # a healed partition delivers what was held back
        c.close()


def test_proxy_cut_with_reset_drops_and_refuses(echo_server: int) -> None:
    with TcpProxy("127.0.0.1", echo_server) as proxy:
        c = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        c.sendall(b"ping")
        assert c.recv(4) == b"ping"
        proxy.cut(reset=True)
        assert _closed(c)
        fresh = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert _closed(fresh)
        proxy.restore()
        again = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        again.sendall(b"back")
        assert again.recv(4) == b"back"
        for s in (c, fresh, again):
            s.close()


def _closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def _wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_proxy_cuts_a_client_off_zookeeper(spawn: Callable[[str], Service]) -> None:
    zk = spawn("zookeeper")
    assert isinstance(zk, ZooKeeper)
    with TcpProxy("127.0.0.1", zk.port) as proxy:
        states: list[str] = []
        client = KazooClient(hosts=proxy.address, timeout=1.0)
        client.add_listener(lambda s: states.append(s))
        observer = KazooClient(hosts=zk.hosts)
        client.start(timeout=10)
        observer.start(timeout=10)
        try:
            client.create("/leader", b"me", ephemeral=True)
            proxy.cut()
            assert _wait_for(lambda: KazooState.SUSPENDED in states, 5), states
            # The server expires the partitioned session (1 s) and drops its ephemeral node.
            assert _wait_for(lambda: observer.exists("/leader") is None, 10)
            proxy.restore()
            assert _wait_for(lambda: KazooState.LOST in states and client.connected, 10), states
        finally:
            client.stop()
            client.close()
            observer.stop()
            observer.close()


def test_pause_resume_restart_of_a_private_slapd(spawn: Callable[[str], Service]) -> None:
    svc = spawn("slapd")
    assert isinstance(svc, Slapd)
    ep = svc.endpoint
    conn = connect(ep, timeout=1)
    conn.add(f"ou=kept,{ep.base_dn}", ["organizationalUnit"], {"ou": "kept"})

    svc.pause()
    with pytest.raises(LDAPException):
        conn.search(ep.base_dn, "(ou=kept)")  # a frozen server answers nothing
    svc.resume()
    assert connect(ep, timeout=2).search(ep.base_dn, "(ou=kept)")

    port = svc.port
    svc.restart()
    assert svc.port == port
    assert connect(ep, timeout=2).search(ep.base_dn, "(ou=kept)")  # same data after restart


def test_private_postgres_cluster_survives_restart(spawn: Callable[[str], Service]) -> None:
    # The path CI takes when the machine's PostgreSQL does not let user postgres in over TCP.
    pg = spawn("postgres")
    assert isinstance(pg, Postgres) and not pg.external
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        conn.execute("create table kept (v int)")
        conn.execute("insert into kept values (42)")
    pg.restart()
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        assert conn.execute("select v from kept").fetchall() == [(42,)]


def test_a_service_that_cannot_start_fails_fast_with_its_log(tmp_path: Path) -> None:
    # slapd exits when its port is taken: the error must say so and show slapd's own words.
    with socket.create_server(("127.0.0.1", 0)) as blocker:
        svc = Slapd(tmp_path, port=blocker.getsockname()[1])
        with pytest.raises(ServiceStartError) as err:
            svc.start()
    message = str(err.value)
    # "exited before it was ready", not "not ready after N s": it noticed the exit, did not wait it out.
    assert "slapd: process exited before it was ready" in message
    assert "last lines of" in message and "slapd.log" in message
    assert "Address already in use" in message
    assert not svc.running()


def test_a_missing_module_names_the_debian_package(tmp_path: Path) -> None:
    # A fresh machine lacks what a listed package only recommends: the error must say what to install.
    class SlapdWithMissingOverlay(Slapd):
        modules = (*Slapd.modules, "nosuchoverlay")

    with pytest.raises(ServiceStartError) as err:
        SlapdWithMissingOverlay(tmp_path).start()
    assert "missing /usr/lib/ldap/nosuchoverlay.la: install the Debian package slapd" in str(err.value)


def test_samba_and_zookeeper_load_errors_name_their_packages() -> None:
    # The exact line samba-tool printed on a bare Debian 12 without samba-vfs-modules.
    samba_log = (
        "Error loading module '/usr/lib/x86_64-linux-gnu/samba/vfs/xattr_tdb.so': "
        "/usr/lib/x86_64-linux-gnu/samba/vfs/xattr_tdb.so: cannot open shared object file: "
        "No such file or directory\nerror probing vfs module 'xattr_tdb': NT_STATUS_UNSUCCESSFUL\n"
    )
    assert missing_files(samba_log) == ["/usr/lib/x86_64-linux-gnu/samba/vfs/xattr_tdb.so"]
    assert "install the Debian package samba-vfs-modules" in install_hint(samba_log)
    assert provider("/usr/lib/x86_64-linux-gnu/samba/ldb/samba_dsdb.so") == "samba-dsdb-modules"
    assert provider("/usr/share/java/slf4j-simple.jar") == "libslf4j-java"
    assert install_hint("all good\n") == ""


def test_shared_services_cannot_be_disrupted(tmp_path: Path) -> None:
    svc = ZooKeeper(tmp_path)
    svc.shared = True
    for action in (svc.stop, svc.pause, svc.resume, svc.start):
        with pytest.raises(SharedServiceError):
            action()
