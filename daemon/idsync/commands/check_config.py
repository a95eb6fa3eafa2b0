"""`idsync check-config [PATH]`: validate a configuration file without starting anything.

Every problem is printed on stderr as `<toml.path>: <why>`, one per line, and the exit
status is 2. A valid file prints a short summary on stdout and exits 0. Referenced
secret and CA files are checked readable; secret values are never printed. Secrets
written inline are allowed but draw a warning.
"""

from __future__ import annotations

import argparse
import os
import sys

EXIT_INVALID = 2


def configure(parser: argparse.ArgumentParser) -> None:
    """Add check-config's arguments."""
    parser.add_argument(
        "path",
        nargs="?",
        default=None,
        help="file to check (default: --config, then $IDSYNC_CONFIG, then /etc/idsync/idsync.toml)",
    )


def summary(cfg: object, path: str) -> str:
    """The lines printed for a valid configuration."""
    from idsync.config import Config

    assert isinstance(cfg, Config)
    graph = cfg.target.graph
    tenant = f"tenant {graph.tenant_id}, " if graph.tenant_id else ""
    return "\n".join(
        [
            f"{path}: OK",
            f"  node       {cfg.node.name} (cluster {cfg.node.cluster})",
            f"  source     {cfg.source.kind} {', '.join(cfg.source.ldap.urls)} "
            f"(delta {cfg.source.ldap.delta_mode})",
            f"  target     {graph.graph_endpoint} ({tenant}{graph.auth_method})",
            f"  zookeeper  {cfg.ha.zookeeper.hosts}",
            f"  store      schema {cfg.store.schema_name}",
            f"  admin      {cfg.admin.listen}",
        ]
    )


def run(args: argparse.Namespace) -> int:
    """Check the file; 0 when valid, 2 with every problem listed otherwise."""
    from idsync.config import ConfigError, config_path, load_config
    from idsync.config.rules import inline_secret_warnings

    path = config_path(args.path or getattr(args, "config", None), os.environ)
    try:
        cfg = load_config(path, os.environ, check_files=True)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    from idsync.sync.engine import group_anchor_of
    from idsync.sync.errors import RulesError
    from idsync.sync.rules import load_rules

    try:  # the rules the daemon would load: every problem, named by rule, attribute and expression
        load_rules(cfg.sync.rules_file, source_kind=cfg.source.kind, group_anchor=group_anchor_of(cfg))
    except RulesError as exc:
        for rule_problem in exc.problems:
            print(f"sync.rules_file ({exc.origin}): {rule_problem}", file=sys.stderr)
        return EXIT_INVALID
    print(summary(cfg, str(path)))
    for warning in inline_secret_warnings(cfg):
        print(f"warning: {warning}")
    return 0
