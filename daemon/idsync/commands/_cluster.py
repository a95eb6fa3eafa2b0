"""What the cluster commands share: how to reach ZooKeeper, from a config file or from flags."""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from collections.abc import Callable

from idsync.config import ConfigError, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--zookeeper", metavar="HOSTS", help="ZooKeeper connection string (overrides the config)"
    )
    parser.add_argument("--cluster", help="cluster name (overrides the config)")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for ZooKeeper (default 5)"
    )
    parser.add_argument(
        "--zookeeper-auth-file",
        metavar="FILE",
        help="file holding the cluster's ZooKeeper digest credentials user:password "
        "(default: [ha.zookeeper] auth of the config)",
    )


def operator() -> str:
    """Who is asking, for the request records."""
    try:
        user = getpass.getuser()
    except OSError:
        user = "unknown"
    return f"{user}@{socket.gethostname().split('.', 1)[0]}"


def _read_auth(path: str) -> tuple[str, str]:
    try:
        text = open(path, encoding="utf-8").read().strip()  # noqa: SIM115 - read and closed at once
    except OSError as exc:
        raise ConfigError.single("--zookeeper-auth-file", f"cannot read {path}: {exc.strerror}") from exc
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ConfigError.single("--zookeeper-auth-file", f"{path} must hold user:password")
    return user, password


def with_coordinator(args: argparse.Namespace, action: Callable[..., int]) -> int:
    """Connect a short-lived session, run `action(coord, cluster)`, map errors to messages.

    The session uses the cluster's credentials (the config's, or --zookeeper-auth-file), so what
    it creates carries the same ACL as the daemons' znodes, and it never creates the cluster's
    structure itself.
    """
    from idsync.ha.acl import ClusterNotFound, ZkAccessDenied, connect_control
    from idsync.ha.control import ControlError
    from idsync.ha.zk import CoordinationError, Coordinator, ZkSettings

    hosts = args.zookeeper
    cluster = args.cluster
    auth = None
    session_timeout = 10.0
    auth_file = getattr(args, "zookeeper_auth_file", None)
    try:
        if auth_file:
            auth = _read_auth(auth_file)
        if not hosts or not cluster or not auth_file:
            try:
                cfg = load_config(args.config)
            except ConfigError:
                if not hosts or not cluster:
                    raise
                cfg = None  # flags say where; without a config there are no credentials to use
            if cfg is not None:
                zk = cfg.ha.zookeeper
                hosts = hosts or zk.hosts
                cluster = cluster or cfg.node.cluster
                auth = auth or zk.auth()
                session_timeout = zk.session_timeout_seconds
    except ConfigError as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        print("(give --zookeeper and --cluster to work without a config file)", file=sys.stderr)
        return 2
    settings = ZkSettings(hosts=hosts, session_timeout=session_timeout, retry_timeout=args.timeout, auth=auth)
    coord = Coordinator(settings, cluster, f"ctl-{operator()}")
    try:
        connect_control(coord, timeout=args.timeout)
        return action(coord, cluster)
    except (ControlError, CoordinationError, ClusterNotFound, ZkAccessDenied) as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return 1
    finally:
        coord.stop()
