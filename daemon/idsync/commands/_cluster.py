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


def operator() -> str:
    """Who is asking, for the request records."""
    try:
        user = getpass.getuser()
    except OSError:
        user = "unknown"
    return f"{user}@{socket.gethostname().split('.', 1)[0]}"


def with_coordinator(args: argparse.Namespace, action: Callable[..., int]) -> int:
    """Connect a short-lived session, run `action(coord, cluster)`, map errors to messages."""
    from idsync.ha.control import ControlError
    from idsync.ha.zk import CoordinationError, Coordinator, ZkSettings

    hosts = args.zookeeper
    cluster = args.cluster
    auth = None
    session_timeout = 10.0
    if not hosts or not cluster:
        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            print(f"idsync: {exc}", file=sys.stderr)
            print("(give --zookeeper and --cluster to work without a config file)", file=sys.stderr)
            return 2
        zk = cfg.ha.zookeeper
        hosts = hosts or zk.hosts
        cluster = cluster or cfg.node.cluster
        auth = zk.auth()
        session_timeout = zk.session_timeout_seconds
    settings = ZkSettings(hosts=hosts, session_timeout=session_timeout, retry_timeout=args.timeout, auth=auth)
    coord = Coordinator(settings, cluster, f"ctl-{operator()}")
    try:
        coord.start(timeout=args.timeout)
    except CoordinationError as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return 1
    try:
        return action(coord, cluster)
    except (ControlError, CoordinationError) as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return 1
    finally:
        coord.stop()
