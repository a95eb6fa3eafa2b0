"""`idsync preview ID`: one object through the pipeline, without exporting anything.

    idsync preview DN-or-anchor [--json | --csv]

Shows the object's source attributes, each rule's result, the desired state (now and as the last
sync stored it), the target object it is linked to, and the operations the next sync would queue
for it, beside those already queued and its quarantine entries — Entra Connect's "Preview". Reads
the node's own store (any node, leader or staging) and evaluates the rules the node runs: the
cluster's current version from ZooKeeper, or the trial placed on this node (`idsync rules trial`).
`--local` evaluates the local rules file as it is on disk instead ("what would this file do to
this user?"). When ZooKeeper cannot be reached, the local file is used and stderr says so.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from idsync.config import Config
    from idsync.sync.rules import Rules


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ident", metavar="ID", help="the object's DN or anchor (objectGUID / entryUUID)")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the explanation as JSON")
    fmt.add_argument("--csv", action="store_true", help="print it as CSV rows (section, item, value, note)")
    parser.add_argument(
        "--local",
        action="store_true",
        help="evaluate the local rules file on disk, not the rules this node runs from the cluster",
    )
    parser.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for ZooKeeper (default 3)"
    )


def node_rules(cfg: Config, timeout: float) -> tuple[Rules, str] | None:
    """The rules this node runs — a trial placed on it, else the cluster's current version — and a
    label; None when the cluster has no version yet. Raises CoordinationError when ZooKeeper
    cannot be reached, RulesError when the version does not load here."""
    from idsync.ha import rules as r
    from idsync.ha import rules_zk
    from idsync.ha.acl import connect_control
    from idsync.ha.zk import Coordinator, ZkSettings
    from idsync.runtime.cluster_rules import parse_rules

    zk = cfg.ha.zookeeper
    settings = ZkSettings(
        hosts=zk.hosts, session_timeout=zk.session_timeout_seconds, retry_timeout=timeout, auth=zk.auth()
    )
    coord = Coordinator(settings, cfg.node.cluster, f"preview-{cfg.node.name}")
    try:
        connect_control(coord, timeout=timeout)
        want = r.wanted(rules_zk.read(coord), cfg.node.name)
    finally:
        coord.stop()
    if want is None:
        return None
    text, _digest, label, is_trial, _version = want
    origin = f"cluster rules {label}" + (f" (the trial placed on {cfg.node.name})" if is_trial else "")
    return parse_rules(text, origin, cfg), origin


def run(args: argparse.Namespace) -> int:
    """0 on success, 1 when the object is unknown or the store is down, 2 on a config or rules problem."""
    from idsync.config import ConfigError, load_config
    from idsync.ha.acl import ClusterNotFound, ZkAccessDenied
    from idsync.ha.coordination import CoordinationError
    from idsync.store import migrate
    from idsync.store.db import Store
    from idsync.store.errors import StoreError
    from idsync.sync import explain
    from idsync.sync.engine import group_anchor_of
    from idsync.sync.errors import RulesError
    from idsync.sync.rules import load_rules

    try:
        cfg = load_config(args.config)
        cluster = None
        if not getattr(args, "local", False):
            try:
                cluster = node_rules(cfg, getattr(args, "timeout", 3.0))
            except (CoordinationError, ClusterNotFound, ZkAccessDenied) as exc:
                print(
                    f"idsync: the cluster's rules could not be read ({exc}); previewing with the local"
                    " rules file, which can differ from the version this node runs",
                    file=sys.stderr,
                )
        if cluster is not None:
            rules, origin = cluster
        else:
            rules = load_rules(
                cfg.sync.rules_file, source_kind=cfg.source.kind, group_anchor=group_anchor_of(cfg)
            )
            origin = rules.origin
    except (ConfigError, RulesError) as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return 2
    print(f"idsync: previewing with {origin}", file=sys.stderr)
    try:
        with Store(cfg.store.dsn(), cfg.store.schema_name, max_size=1) as store:
            migrate.check_version(store)
            got = explain.explain(store, rules, args.ident, soft_match=cfg.sync.soft_match)
    except explain.NotFound as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return 1
    with contextlib.suppress(BrokenPipeError):  # `idsync preview … | head`
        explain.write(got, "json" if args.json else "csv" if args.csv else "table", sys.stdout)
    return 0
