"""`idsync history [--json] [--limit N]`: every change of leadership, like `patronictl history`.

Each line: the epoch, when, the old and the new leader, and why (switchover by whom, failover,
released on stop, leader lost). Read from ZooKeeper, so it works from any host that reaches it.
"""

from __future__ import annotations

import argparse

import orjson

from idsync.commands import _cluster


def configure(parser: argparse.ArgumentParser) -> None:
    _cluster.add_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the entries as JSON")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the last N entries")


def run(args: argparse.Namespace) -> int:
    from idsync.ha import history

    def show(coord: object, cluster: str) -> int:
        client, base = coord.client, coord.paths.base  # type: ignore[attr-defined]
        timeout = coord.settings.retry_timeout  # type: ignore[attr-defined]
        entries = history.read(client, base, timeout, limit=args.limit)
        if args.json:
            doc = {"cluster": cluster, "history": [e.as_dict() for e in entries]}
            print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        else:
            print(f"cluster {cluster}")
            print(history.render(entries))
        return 0

    return _cluster.with_coordinator(args, show)
