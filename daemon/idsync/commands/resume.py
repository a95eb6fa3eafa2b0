"""`idsync resume`: release a cluster-wide pause."""

from __future__ import annotations

import argparse

from idsync.commands import _cluster


def configure(parser: argparse.ArgumentParser) -> None:
    _cluster.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from idsync.ha import control

    def act(coord: object, cluster: str) -> int:
        was = control.resume(coord)  # type: ignore[arg-type]
        print(f"cluster {cluster}: {'exports resumed' if was else 'was not paused'}")
        return 0

    return _cluster.with_coordinator(args, act)
