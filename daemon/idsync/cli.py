"""The `idsync` command line: one entry point, one module per sub-command.

Each sub-command lives in `idsync.commands.<name>` and exposes
`configure(parser)` and `run(args) -> int`. Modules import their heavy
dependencies inside `run()` so that `idsync --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from idsync import __version__

DEFAULT_CONFIG = "/etc/idsync/idsync.toml"

# name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("idsync.commands.run", "run the daemon (import, sync and, as leader, export)"),
    "check-config": ("idsync.commands.check_config", "validate a configuration file"),
    "preflight": ("idsync.commands.preflight", "check this node against its tenant, directory and services"),
    "migrate": ("idsync.commands.migrate", "apply database migrations and exit"),
    "graph-emulator": ("idsync.commands.graph_emulator", "serve the offline Microsoft Graph emulator"),
    "status": ("idsync.commands.status", "show the cluster: nodes, roles, epoch, health"),
    "history": ("idsync.commands.history", "show every change of leadership (epoch, old -> new, why)"),
    "switchover": ("idsync.commands.switchover", "hand leadership to another healthy node"),
    "failover": ("idsync.commands.failover", "force a node to lead when there is no healthy leader"),
    "pause": ("idsync.commands.pause", "hold exports cluster-wide (imports continue)"),
    "resume": ("idsync.commands.resume", "release a cluster-wide pause"),
    "pending": ("idsync.commands.pending", "show the pending exports of this node"),
    "preview": ("idsync.commands.preview", "show one object through the rules, desired state and diff"),
    "quarantine": ("idsync.commands.quarantine", "list, retry or clear the objects this node set aside"),
    "approve-deletes": ("idsync.commands.approve_deletes", "release deletes held by the deletion guard"),
    "rules": ("idsync.commands.rules", "the cluster's versioned sync rules: trial, impact, apply, rollback"),
    "cycle": ("idsync.commands.cycle", "run one import/sync cycle now"),
}


def _available() -> dict[str, tuple[str, str]]:
    """The commands whose module exists in this build."""
    out = {}
    for name, (module, text) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            out[name] = (module, text)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idsync",
        description="Highly available AD/LDAP to Microsoft Entra ID synchronization.",
    )
    parser.add_argument("--version", action="version", version=f"idsync {__version__}")
    parser.add_argument("--config", "-c", default=None, help=f"configuration file (default {DEFAULT_CONFIG})")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warning", "error"],
        help="override the configured log level",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, text) in _available().items():
        p = sub.add_parser(name, help=text, description=text)
        mod = importlib.import_module(module)
        mod.configure(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help(sys.stderr)
        return 2
    from idsync.log import configure_logging

    # Commands log to stderr so that their stdout stays clean; `run` reconfigures from the config.
    configure_logging(args.log_level or "warning")
    mod = importlib.import_module(args._module)
    try:
        return int(mod.run(args) or 0)
    except KeyboardInterrupt:
        return 130
