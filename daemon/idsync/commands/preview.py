"""`idsync preview ID`: one object through the pipeline, without exporting anything.

    idsync preview DN-or-anchor [--json | --csv]

Shows the object's source attributes, each rule's result, the desired state (now and as the last
sync stored it), the target object it is linked to, and the operations the next sync would queue
for it, beside those already queued and its quarantine entries — Entra Connect's "Preview". Reads
the node's own store (any node, leader or staging) and the node's rules file as it is on disk, so
it also answers "what would this rules change do to this user?" before a SIGHUP.
"""

from __future__ import annotations

import argparse
import contextlib
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ident", metavar="ID", help="the object's DN or anchor (objectGUID / entryUUID)")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the explanation as JSON")
    fmt.add_argument("--csv", action="store_true", help="print it as CSV rows (section, item, value, note)")


def run(args: argparse.Namespace) -> int:
    """0 on success, 1 when the object is unknown or the store is down, 2 on a config or rules problem."""
    from idsync.config import ConfigError, load_config
    from idsync.store import migrate
    from idsync.store.db import Store
    from idsync.store.errors import StoreError
    from idsync.sync import explain
    from idsync.sync.engine import group_anchor_of
    from idsync.sync.errors import RulesError
    from idsync.sync.rules import load_rules

    try:
        cfg = load_config(args.config)
        rules = load_rules(
            cfg.sync.rules_file, source_kind=cfg.source.kind, group_anchor=group_anchor_of(cfg)
        )
    except (ConfigError, RulesError) as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return 2
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
