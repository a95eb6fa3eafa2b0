"""`idsync pause [--reason TEXT]`: hold exports cluster-wide; imports and sync continue."""

from __future__ import annotations

import argparse

from idsync.commands import _cluster


def configure(parser: argparse.ArgumentParser) -> None:
    _cluster.add_arguments(parser)
    parser.add_argument("--reason", default="", help="shown in `idsync status`")
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="seconds to wait for the leader's acknowledgement (default 30)",
    )


def run(args: argparse.Namespace) -> int:
    from idsync.ha import control

    def act(coord: object, cluster: str) -> int:
        res = control.pause(coord, by=_cluster.operator(), reason=args.reason, wait=args.wait)  # type: ignore[arg-type]
        who = (
            f"acknowledged by leader {res.acknowledged_by} at epoch {res.epoch}"
            if res.acknowledged_by
            else "no leader at the moment"
        )
        print(f"cluster {cluster}: exports paused ({who}; imports continue); `idsync resume` releases")
        return 0

    return _cluster.with_coordinator(args, act)
