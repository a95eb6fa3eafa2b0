"""`idsync failover --to NODE`: make NODE lead when there is no healthy leader."""

from __future__ import annotations

import argparse

from idsync.commands import _cluster


def configure(parser: argparse.ArgumentParser) -> None:
    _cluster.add_arguments(parser)
    parser.add_argument("--to", metavar="NODE", required=True, help="the node to promote")
    parser.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for the new leader (default 60)"
    )


def run(args: argparse.Namespace) -> int:
    from idsync.ha import control

    def act(coord: object, cluster: str) -> int:
        res = control.failover(coord, args.to, by=_cluster.operator(), wait=args.wait)  # type: ignore[arg-type]
        print(f"failover: {res.old or '(no leader)'} -> {res.new} at epoch {res.epoch} in {res.seconds:.2f}s")
        return 0

    return _cluster.with_coordinator(args, act)
