"""What the commands that act on this node share: its configuration, loaded or explained."""

from __future__ import annotations

import argparse
import sys

from idsync.config import Config, ConfigError, load_config
from idsync.log import configure_from_config


def load(args: argparse.Namespace, *, default_level: str | None = None) -> Config | None:
    """The node's config with logging set up, or None after printing every problem (exit 2)."""
    try:
        cfg = load_config(args.config, check_files=True)
    except ConfigError as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return None
    configure_from_config(cfg, args.log_level or default_level)
    return cfg
