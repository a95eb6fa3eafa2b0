"""`idsync migrate`: apply this build's database migrations to the instance schema and exit.

`--status` lists the applied migrations (with the checksum each was recorded with) and the ones
this build would apply; `--check` prints only the version.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from idsync.store.migrate import MigrationStatus


def configure(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true", help="only report the schema version")
    what.add_argument("--status", action="store_true", help="list applied and pending migrations")


def run(args: argparse.Namespace) -> int:
    from idsync.config import ConfigError, load_config
    from idsync.store import migrate
    from idsync.store.db import Store
    from idsync.store.errors import StoreError

    try:
        cfg = load_config(args.config)
        with Store(cfg.store.dsn(), cfg.store.schema_name, max_size=1) as store:
            if args.status:
                print(render_status(migrate.status(store)))
                return 0
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


def render_status(st: MigrationStatus) -> str:
    """One line per migration: version, file, applied (when) or pending, checksum."""
    from idsync.store.migrate import RETIRED

    lines = [f"schema {st.schema}:"]
    for row in st.applied:
        name = f"{row.version:04d}_{row.name}.sql"
        if (row.version, row.name) in RETIRED:
            name += " (retired; repaired by a later migration)"
        sha = (row.checksum or "not recorded")[:12]
        lines.append(f"  {name:58}  applied {row.applied_at[:19]}  sha256 {sha}")
    for mig in st.pending:
        lines.append(f"  {mig.filename:58}  pending{'':20}  sha256 {mig.checksum[:12]}")
    lines.append(f"{len(st.applied)} applied, {len(st.pending)} pending")
    return "\n".join(lines)
