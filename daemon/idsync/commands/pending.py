"""`idsync pending`: show this node's pending exports, with per-attribute old → new values.

    idsync pending [--op create|update|delete|member] [--format table|json|csv] [--summary] [--errors]

Reads the node's own state (its PostgreSQL schema), so it works the same on the leader and on a
staging node: on a staging node it shows what the node would export if promoted now.
"""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the pending command's arguments."""
    parser.add_argument("--op", choices=["create", "update", "delete", "member"], help="only this operation")
    parser.add_argument("--format", choices=["table", "json", "csv"], default="table", help="output format")
    parser.add_argument("--summary", action="store_true", help="counts per operation and state only")
    parser.add_argument("--errors", action="store_true", help="only operations with export errors")


def run(args: argparse.Namespace) -> int:
    """Print the listing; 0 on success, 2 on a configuration problem, 1 when the store is down."""
    from idsync.config import ConfigError, load_config
    from idsync.store import migrate
    from idsync.store.db import Store
    from idsync.store.errors import StoreError
    from idsync.sync import guard, preview

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return 2
    thresholds = guard.Thresholds(
        cfg.sync.deletion_threshold_count,
        cfg.sync.deletion_threshold_percent,
        cfg.sync.deletion_window_seconds,
    )
    try:
        with Store(cfg.store.dsn(), cfg.store.schema_name, max_size=1) as store:
            migrate.check_version(store)
            with store.connection() as conn:
                decision = guard.evaluate(conn, thresholds)
            if args.summary:
                print(preview.summary(preview.status_counts(store)))
                print(f"deletion guard: {decision.sentence()}")
                return 0
            # Streamed page by page: a first sync's queue holds hundreds of thousands of rows.
            preview.write(
                preview.iter_items(store, op=args.op, errors_only=args.errors), args.format, sys.stdout
            )
    except StoreError as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `idsync pending | head`
        return 0
    if args.format == "table" and decision.held:
        print(f"\ndeletion guard: {decision.sentence()}", file=sys.stderr)
    return 0
