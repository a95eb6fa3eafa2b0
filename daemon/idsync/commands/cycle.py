"""`idsync cycle [--full]`: run one import and sync on this node now, without exporting.

Useful after a rules change or to refresh the preview (`idsync pending`) on any node; with
`--full` the source is imported in full and every object is synced again. The daemon, if it
runs, exports what the cycle queued when it is the leader.
"""

from __future__ import annotations

import argparse
import asyncio
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--full", action="store_true", help="full import and full sync")


def run(args: argparse.Namespace) -> int:
    from idsync.commands import _node
    from idsync.store.errors import StoreError
    from idsync.sync.errors import RulesError

    cfg = _node.load(args, default_level="warning")
    if cfg is None:
        return 2
    try:
        return asyncio.run(_cycle(cfg, args.full))
    except (StoreError, RulesError) as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return 1


async def _cycle(cfg: object, full: bool) -> int:
    from idsync.runtime.daemon import open_store
    from idsync.runtime.datapath import DataPath

    store = await asyncio.to_thread(open_store, cfg)  # type: ignore[arg-type]
    path = DataPath(cfg, store)  # type: ignore[arg-type]
    try:
        report = await path.import_and_sync(full=full)
        sync = path.last_sync
        print(report.summary)
        if sync is not None:
            print(sync.sentence())
        return 0
    finally:
        await path.aclose()
        path.close()
        store.close()
