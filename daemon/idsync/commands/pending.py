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
    ops = ["create", "update", "delete", "member", "manager"]
    parser.add_argument("--op", choices=ops, help="only this operation")
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
            if args.format == "table" and not args.op:
                _notes(store)
    except StoreError as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `idsync pending | head`
        return 0
    if args.format == "table" and decision.held:
        print(f"\ndeletion guard: {decision.sentence()}", file=sys.stderr)
    return 0


# Quarantine phases of objects that never became an operation, or became one the rules adjusted.
NOTE_PHASES = {
    "import": "not imported",
    "sync": "set aside by the rules",
    "notice": "adjusted for the tenant",
    "managed": "left to Entra Connect",
    "writeback": "partly written back to AD",
}


def _notes(store: object) -> None:
    """Objects the import or the rules set aside, and what the rules adjusted (a UPN fallback),
    each with its reason: why an object has no operation, or not the one expected."""
    from idsync.store import quarantine
    from idsync.store.db import Store

    assert isinstance(store, Store)
    with store.connection() as conn:
        rows = [q for q in quarantine.listing(conn) if q.phase in NOTE_PHASES]
    if not rows:
        return
    print(f"\n{len(rows)} object(s) set aside or adjusted:")
    for q in sorted(rows, key=lambda q: (list(NOTE_PHASES).index(q.phase), q.dn or q.key)):
        print(f"  {NOTE_PHASES[q.phase]:<24} {q.object_type or '':<5} {q.dn or q.key}\n      {q.reason}")
