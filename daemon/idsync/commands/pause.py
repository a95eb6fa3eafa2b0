"""`idsync pause [--reason TEXT]`: hold exports cluster-wide; imports and sync continue."""

from __future__ import annotations

import argparse

from idsync.commands import _cluster


def configure(parser: argparse.ArgumentParser) -> None:
    _cluster.add_arguments(parser)
    parser.add_argument("--reason", default="", help="shown in `idsync status`")


def run(args: argparse.Namespace) -> int:
    from idsync.ha import control

    def act(coord: object, cluster: str) -> int:
        control.pause(coord, by=_cluster.operator(), reason=args.reason)  # type: ignore[arg-type]
        print(f"cluster {cluster}: exports paused (imports continue); `idsync resume` releases")
        return 0

    return _cluster.with_coordinator(args, act)
