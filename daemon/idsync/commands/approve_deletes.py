"""`idsync approve-deletes [FINGERPRINT]`: release a delete set held by the deletion guard.

Without a fingerprint it shows what this node's guard holds (how many deletes, which objects,
the fingerprint to approve). With one, it records the approval cluster-wide; every node's guard
then releases exactly that set (and what is left of it as deletes complete), never another.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING

from idsync.commands import _cluster

if TYPE_CHECKING:
    from idsync.sync.guard import GuardDecision


SHOW = 20


def configure(parser: argparse.ArgumentParser) -> None:
    """Add approve-deletes' arguments."""
    _cluster.add_arguments(parser)
    parser.add_argument("fingerprint", nargs="?", help="the held delete set to approve (see without it)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="approve a fingerprint this node has not held (e.g. computed on another node)",
    )


@dataclass(frozen=True)
class _Local:
    """What this node's store says: the guard's decision, the deletes, the sets it has held."""

    decision: GuardDecision
    names: list[str]
    held: set[str]


def _local(args: argparse.Namespace) -> _Local | None:
    """Read this node's queue; None (after printing why) when config or store is unusable."""
    from idsync.config import ConfigError, load_config
    from idsync.store import pending
    from idsync.store.db import Store
    from idsync.store.errors import StoreError
    from idsync.sync import guard, preview

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return None
    thresholds = guard.Thresholds(
        cfg.sync.deletion_threshold_count,
        cfg.sync.deletion_threshold_percent,
        cfg.sync.deletion_window_seconds,
    )
    try:
        with Store(cfg.store.dsn(), cfg.store.schema_name, max_size=1) as store:
            names = [
                f"{i.object_type} {i.name}" for i in islice(preview.iter_items(store, op="delete"), SHOW)
            ]
            with store.connection() as conn:
                decision = guard.evaluate(conn, thresholds)
                held = {fp for fp, _, _ in pending.holds(conn)}
    except StoreError as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return None
    return _Local(decision, names, held)


def run(args: argparse.Namespace) -> int:
    """Show the held set, or approve one; 0 on success."""
    local = _local(args)
    if not args.fingerprint:
        if local is None:
            return 2
        print(f"deletion guard: {local.decision.sentence()}")
        for name in local.names:
            print(f"  delete {name}")
        if local.decision.deletes > len(local.names):
            print(f"  … and {local.decision.deletes - len(local.names)} more (idsync pending --op delete)")
        return 0
    if (local is None or args.fingerprint not in local.held) and not args.force:
        print(
            f"idsync: {args.fingerprint} is not a delete set this node has held; check"
            " `idsync approve-deletes` on the node that reported it, or use --force",
            file=sys.stderr,
        )
        return 1

    def act(coord: object, cluster: str) -> int:
        coord.approve(args.fingerprint, by=_cluster.operator())  # type: ignore[attr-defined]
        print(f"cluster {cluster}: delete set {args.fingerprint} approved; the next export runs it")
        return 0

    return _cluster.with_coordinator(args, act)
