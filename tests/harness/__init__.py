"""Real services for idsync's tests, on loopback: PostgreSQL, ZooKeeper, Samba AD DC, slapd, promtool.

`python -m tests.harness up|down|status|demo` manages a shared stack in `.stack/`; pytest reuses it
when it is up, and otherwise starts its own, one service at a time on first use (tests/conftest.py).
"""

from .ldap import LdapEndpoint
from .postgres import Postgres
from .process import ServiceStartError
from .promtool import Promtool
from .proxy import TcpProxy
from .samba import Samba
from .service import Service, SharedServiceError
from .slapd import Slapd
from .stack import SERVICE_NAMES, Stack
from .zookeeper import ZooKeeper

__all__ = [
    "SERVICE_NAMES",
    "LdapEndpoint",
    "Postgres",
    "Promtool",
    "Samba",
    "Service",
    "ServiceStartError",
    "SharedServiceError",
    "Slapd",
    "Stack",
    "TcpProxy",
    "ZooKeeper",
]
