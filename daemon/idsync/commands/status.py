"""`idsync status [--json]`: nodes, roles, epoch, health, last cycle, pending exports."""

from __future__ import annotations

import argparse

import orjson

from idsync.commands import _cluster


def configure(parser: argparse.ArgumentParser) -> None:
    _cluster.add_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the cluster state as JSON")


def run(args: argparse.Namespace) -> int:
    from idsync.ha import control

    def show(coord: object, cluster: str) -> int:
        view = control.status(coord)  # type: ignore[arg-type]
        if args.json:
            print(orjson.dumps({"cluster": cluster, **view.as_dict()}, option=orjson.OPT_INDENT_2).decode())
        else:
            print(control.render_status(view, cluster))
        return 0

    return _cluster.with_coordinator(args, show)
