"""`idsync migrate`: apply this build's database migrations to the instance schema and exit."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true", help="only report the schema version")


def run(args: argparse.Namespace) -> int:
    from idsync.config import ConfigError, load_config
    from idsync.store import migrate
    from idsync.store.db import Store
    from idsync.store.errors import StoreError

    try:
        cfg = load_config(args.config)
        with Store(cfg.store.dsn(), cfg.store.schema_name, max_size=1) as store:
            if args.check:
                version = migrate.check_version(store)
                print(f"schema {store.schema}: version {version} of {migrate.code_version()}")
                return 0 if version == migrate.code_version() else 1
            applied = migrate.migrate(store)
    except ConfigError as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return 1
    done = ", ".join(str(v) for v in applied) if applied else "nothing to do"
    print(f"schema {cfg.store.schema_name}: applied {done}; now at version {migrate.code_version()}")
    return 0
