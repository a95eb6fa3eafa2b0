"""Fixtures on real services, started once per session on first use (see tests/harness).

If `python -m tests.harness up` left a live stack in .stack/, its services are reused; otherwise
this session starts its own in a temp dir and stops them at the end. IDSYNC_HARNESS_PRIVATE=1
forces a private stack.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import pytest
from kazoo.client import KazooClient
from psycopg import sql

from tests.cluster.directory import AdDirectory
from tests.harness import LdapEndpoint, Promtool, Service, Stack
from tests.harness.ldap import create_ou, delete_tree
from tests.harness.locks import file_lock
from tests.harness.stack import SERVICE_TYPES, SHARED_DIR, shared_stack_lock

if TYPE_CHECKING:
    from tests.cluster.cluster import LocalCluster

_summary: list[str] = []  # filled at session teardown, printed by pytest_terminal_summary


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The session's services; each starts on first use (or is reused from .stack/)."""
    shared = None
    if not os.environ.get("IDSYNC_HARNESS_PRIVATE"):
        # Shared lock: wait for a concurrent `harness up` to finish writing before reading.
        with file_lock(shared_stack_lock(), shared=True):
            shared = Stack.load(SHARED_DIR)
    st = Stack(shared=shared)
    yield st
    _summary.extend(_describe(st))
    st.remove()


def _describe(st: Stack) -> list[str]:
    lines, total = [], 0.0
    for name, svc in st.services.items():
        if svc.shared:
            where = svc.workdir.parent
            lines.append(
                f"{name:10} reused from the shared stack {where} (pid {svc.pid or '-'}): {svc.describe()}"
            )
            continue
        secs = svc.startup_seconds or 0.0
        total += secs
        lines.append(f"{name:10} started in {secs:.2f}s: {svc.describe()}")
    lines.append(f"bring-up total for this session: {total:.2f}s")
    return lines


@pytest.fixture(scope="session")
def pg_dsn(stack: Stack) -> str:
    """DSN of a PostgreSQL superuser connection (database `postgres`)."""
    return stack.postgres().dsn


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    """A fresh, uniquely named schema for this test; dropped (cascade) afterwards."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def zk_hosts(stack: Stack) -> str:
    """kazoo `hosts` string of the session's ZooKeeper (tickTime 200 ms: 1-2 s sessions work)."""
    return stack.zookeeper().hosts


@pytest.fixture
def zk_chroot(zk_hosts: str) -> Iterator[str]:
    """A fresh znode path (e.g. "/t-1a2b…") for this test; use `f"{zk_hosts}{zk_chroot}"` as hosts."""
    path = f"/t-{uuid.uuid4().hex[:12]}"
    zk = KazooClient(hosts=zk_hosts)
    zk.start(timeout=10)
    try:
        zk.ensure_path(path)
        yield path
        zk.delete(path, recursive=True)
    finally:
        zk.stop()
        zk.close()


@pytest.fixture(scope="session")
def samba(stack: Stack) -> LdapEndpoint:
    """The Samba AD DC: url, base_dn, bind_dn (domain Administrator) and password."""
    return stack.samba().endpoint


@pytest.fixture
def samba_ou(samba: LdapEndpoint) -> Iterator[str]:
    """DN of a fresh OU under the domain root for this test's objects; deleted with its subtree after."""
    dn = create_ou(samba)
    yield dn
    delete_tree(samba, dn)


@pytest.fixture(scope="session")
def slapd(stack: Stack) -> LdapEndpoint:
    """OpenLDAP slapd: url, base_dn (dc=idsync,dc=test), rootdn and password."""
    return stack.slapd().endpoint


@pytest.fixture
def slapd_ou(slapd: LdapEndpoint) -> Iterator[str]:
    """DN of a fresh OU under dc=idsync,dc=test for this test; deleted with its subtree after."""
    dn = create_ou(slapd)
    yield dn
    delete_tree(slapd, dn)


@pytest.fixture(scope="session")
def promtool(stack: Stack) -> Promtool:
    """promtool's path and version."""
    return stack.promtool()


@pytest.fixture
def spawn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Service]]:
    """Factory of private service instances (not shared with anyone) for tests that stop or pause them.

    `spawn("zookeeper")`, `spawn("slapd")`, `spawn("postgres")` (always a private cluster); each is
    started before it is returned and destroyed after the test. Samba cannot be spawned twice on
    one machine (its LDAP port is fixed).
    """
    spawned: list[Service] = []

    def make(name: str) -> Service:
        workdir = tmp_path_factory.mktemp(f"spawn-{name}")
        workdir.chmod(0o755)
        svc = SERVICE_TYPES[name](workdir)
        spawned.append(svc)
        svc.start()
        return svc

    yield make
    for svc in reversed(spawned):
        svc.destroy()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Report where each service came from and how long its bring-up took."""
    if _summary:
        terminalreporter.section("idsync test harness")
        for line in _summary:
            terminalreporter.write_line(line)


@pytest.fixture
def ad(samba: LdapEndpoint) -> Iterator[AdDirectory]:
    """The Samba AD DC as the cluster tests drive it (users, groups, moves, deletes)."""
    d = AdDirectory(samba)
    yield d
    d.close()


ClusterFactory = Callable[..., AbstractContextManager["LocalCluster"]]


@pytest.fixture
def local_cluster(
    tmp_path: Any, pg_dsn: str, zk_hosts: str, zk_chroot: str, samba: LdapEndpoint, samba_ou: str
) -> ClusterFactory:
    """`running_cluster` on this test's services: PostgreSQL, a fresh ZooKeeper chroot, the Samba
    AD DC with `samba_ou` in scope (unless `include_ous` says otherwise) and an emulator process.
    Keyword arguments are ClusterSpec fields (`cluster` defaults to "t") or `emulator_args`."""
    from tests.cluster.cluster import running_cluster

    def make(**spec: Any) -> AbstractContextManager[LocalCluster]:
        spec.setdefault("cluster", "t")
        spec.setdefault("include_ous", [samba_ou])
        return running_cluster(tmp_path, pg_dsn=pg_dsn, zk_hosts=zk_hosts + zk_chroot, ldap=samba, **spec)

    return make
