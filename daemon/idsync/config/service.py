"""The node's own settings: identity, state store, sync policy, admin API, logging."""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr, field_validator

from idsync.config.base import (
    ConfigPath,
    CredentialName,
    PositiveSeconds,
    Section,
    inline_secret,
)
from idsync.config.secrets import SecretSource

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_PG_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            "must be 1-63 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


Name = Annotated[str, AfterValidator(_name)]


def default_node_name() -> str:
    """This host's short name, made safe for znode names and User-Agent strings."""
    host = socket.gethostname().split(".", 1)[0]
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", host).strip("-._")[:63]
    return safe or "idsync"


def default_schema(node: str) -> str:
    """`idsync_<node>` made into a valid unquoted PostgreSQL identifier."""
    return re.sub(r"[^a-z0-9_]", "_", f"idsync_{node.lower()}")[:63]


def _pg_identifier(value: str) -> str:
    if not _PG_IDENTIFIER.fullmatch(value):
        raise ValueError(
            "must be a PostgreSQL identifier: lowercase letters, digits and '_', "
            "starting with a letter or '_', at most 63 characters"
        )
    return value


class NodeSettings(Section):
    """`[node]`: who this instance is."""

    name: Name = Field(default_factory=default_node_name)
    cluster: Name = "default"


class StoreSettings(Section):
    """`[store]`: this node's PostgreSQL state (its own schema; nodes share nothing)."""

    dsn_value: SecretStr | None = inline_secret("dsn")
    dsn_file: ConfigPath | None = None
    dsn_credential: CredentialName | None = None
    # Filled from the node name by the loader when absent.
    schema_name: Annotated[str, AfterValidator(_pg_identifier)] = Field(alias="schema")
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=8, ge=1)
    connect_timeout_seconds: PositiveSeconds = 10.0
    statement_timeout_seconds: PositiveSeconds = 300.0

    def dsn_source(self) -> SecretSource:
        """Where the DSN comes from."""
        return SecretSource("store.dsn", self.dsn_value, self.dsn_file, self.dsn_credential)

    def dsn(self) -> str:
        """The libpq connection string or URL (may hold a password: never log it)."""
        return self._read_secret(self.dsn_source())

    def secret_sources(self) -> list[SecretSource]:
        return [self.dsn_source()]


class SyncSettings(Section):
    """`[sync]`: what is synchronized and the guards around deletes."""

    rules_file: ConfigPath | None = None
    # The cluster's rules live in ZooKeeper; the file seeds them. Pinned, the node publishes its
    # file as the cluster's next version at start and on SIGHUP (configuration management).
    rules_pinned: bool = False
    # Above this many pending operations on a trial node, `idsync rules apply` wants the
    # fingerprint `idsync rules impact` prints.
    rules_change_threshold: int = Field(default=100, ge=0)
    interval_seconds: PositiveSeconds = 2.0
    deletion_threshold_count: int = Field(default=500, ge=0)
    deletion_threshold_percent: float | None = Field(default=None, gt=0, le=100)
    deletion_window_seconds: PositiveSeconds = 1800.0
    soft_match: bool = False
    # An exported operation no target import has confirmed for this long is exported again; one
    # the target still shows differing after this many exports (a value Graph normalises or
    # ignores) is quarantined instead of being re-exported forever.
    confirm_timeout_seconds: PositiveSeconds = 1800.0
    export_unequal_limit: int = Field(default=5, ge=1)
    # An exported operation the target import does not show yet is left waiting this long before
    # it counts as not taken and is exported again: Graph's replication lag can keep a write out
    # of several delta rounds (learn.microsoft.com/graph/delta-query-overview, "processing delay").
    export_settle_seconds: PositiveSeconds = 120.0
    # Worker processes evaluating the rules of a big sync (from 20,000 objects: a first or full
    # sync); unset = one per CPU, 0 or 1 = evaluate in the sync's thread (idsync.sync.pages).
    evaluate_processes: int | None = Field(default=None, ge=0, le=64)


def split_listen(value: str) -> tuple[str, int]:
    """Parse `host:port` or `[v6]:port`; raise ValueError with the reason."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError("must be host:port, e.g. 127.0.0.1:9470 or [::1]:9470")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 address must be in brackets, e.g. [::1]:9470")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port must be a number from 1 to 65535 (got {port!r})")
    return host, int(port)


def _valid_listen(value: str) -> str:
    split_listen(value)
    return value


Listen = Annotated[str, AfterValidator(_valid_listen)]


class AdminSettings(Section):
    """`[admin]`: the per-node HTTP API (metrics, health, leader, pending)."""

    listen: Listen = "127.0.0.1:9470"
    # The URL other nodes' consoles and `idsync status` use to reach this node's API. Default: the
    # listen address, or this host's name when it listens on every address (0.0.0.0, [::]).
    advertise_url: str | None = None
    token_value: SecretStr | None = inline_secret("token")
    token_file: ConfigPath | None = None
    token_credential: CredentialName | None = None

    def host_port(self) -> tuple[str, int]:
        """`listen` split into host and port (`[::1]:9470` → `("::1", 9470)`)."""
        return split_listen(self.listen)

    def public_url(self) -> str:
        """`advertise_url`, or a URL built from `listen` that other hosts can use."""
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host, port = self.host_port()
        if host in ("0.0.0.0", "::", ""):
            host = socket.getfqdn()
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @field_validator("advertise_url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("must be an http(s) URL with a host, e.g. http://idsync-a.example.com:9470")
        if parsed.hostname in ("0.0.0.0", "::"):
            raise ValueError("must name an address other hosts can reach, not a wildcard")
        return value

    @property
    def loopback(self) -> bool:
        """True when the API is reachable only from this host."""
        host = self.host_port()[0]
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def token_source(self) -> SecretSource:
        """Where the bearer token comes from."""
        return SecretSource("admin.token", self.token_value, self.token_file, self.token_credential)

    def token(self) -> str | None:
        """The bearer token clients must send, or None when no token is configured."""
        src = self.token_source()
        return self._read_secret(src) if src.configured else None

    def secret_sources(self) -> list[SecretSource]:
        return [self.token_source()]


LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]


class LogSettings(Section):
    """`[log]`: level of idsync's own events, output format, and third-party loggers' level."""

    level: LogLevel = "info"
    format: LogFormat = "auto"
    library_level: LogLevel = "warning"
