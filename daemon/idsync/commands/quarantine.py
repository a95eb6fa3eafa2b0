"""`idsync quarantine`: the objects this node set aside, and what an operator does about them.

    idsync quarantine list [--phase import|sync|export|notice|managed|writeback] [--json | --csv]
    idsync quarantine retry ID... | --all
    idsync quarantine clear ID...

ID is an object's anchor (objectGUID / entryUUID) or its DN. `retry` re-arms a quarantined export
with zero attempts (or has the next sync evaluate the object again); `clear` forgets the entry and
drops its quarantined operations until the object changes again. Reads and writes the node's own
store, so it works on any node; exports are retried by whichever node leads.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, TextIO

import orjson

if TYPE_CHECKING:
    from idsync.store.quarantine import Done, Entry

PHASES = ("import", "sync", "export", "notice", "managed", "writeback")
CSV_COLUMNS = (
    "phase",
    "key",
    "type",
    "name",
    "dn",
    "attempts",
    "operations",
    "first_seen",
    "last_seen",
    "reason",
)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="every quarantined object with its reason and attempts")
    ls.add_argument("--phase", choices=PHASES, help="only this phase")
    fmt = ls.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the entries as JSON")
    fmt.add_argument("--csv", action="store_true", help="print the entries as CSV")
    retry = sub.add_parser("retry", help="export or evaluate the named objects again")
    retry.add_argument("ids", nargs="*", metavar="ID", help="anchor or DN of a quarantined object")
    retry.add_argument("--all", action="store_true", help="every retryable entry (export and sync)")
    retry.add_argument("--json", action="store_true", help="print what was done as JSON")
    clear = sub.add_parser("clear", help="forget the named entries and drop their quarantined operations")
    clear.add_argument("ids", nargs="+", metavar="ID", help="anchor or DN of a quarantined object")
    clear.add_argument("--json", action="store_true", help="print what was done as JSON")


def run(args: argparse.Namespace) -> int:
    """0 on success, 1 when the store is down or an ID matched nothing, 2 on bad usage or config."""
    from idsync.config import ConfigError, load_config
    from idsync.store import migrate, quarantine
    from idsync.store.db import Store
    from idsync.store.errors import StoreError

    if args.action == "retry" and bool(args.ids) == bool(args.all):
        print("idsync: quarantine retry needs IDs or --all (not both)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return 2
    try:
        with Store(cfg.store.dsn(), cfg.store.schema_name, max_size=1) as store:
            migrate.check_version(store)
            if args.action == "list":
                with store.connection() as conn:
                    rows = quarantine.entries(conn, args.phase)
                write(rows, "json" if args.json else "csv" if args.csv else "table", sys.stdout)
                return 0
            with store.transaction() as conn:
                if args.action == "retry":
                    done = quarantine.retry(conn, None if args.all else args.ids)
                else:
                    done = quarantine.clear(conn, args.ids)
    except StoreError as exc:
        print(f"idsync: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    return _report(args, done)


def _report(args: argparse.Namespace, done: Sequence[Done]) -> int:
    if args.json:
        print(orjson.dumps([asdict(d) for d in done], option=orjson.OPT_INDENT_2).decode())
    else:
        for d in done:
            print(f"{d.phase:<7} {d.key}: {d.sentence}")
        if not done and args.action == "retry" and args.all:
            print("nothing to retry")
    ids = getattr(args, "ids", None) or []
    missing = [i for i in ids if not any(i == d.key or _dn_match(i, d) for d in done)]
    for i in missing:
        hint = " (import and notice entries cannot be retried)" if args.action == "retry" else ""
        print(f"idsync: {i}: no such quarantine entry{hint}", file=sys.stderr)
    return 1 if missing else 0


def _dn_match(ident: str, d: Done) -> bool:
    return d.dn is not None and ident.lower() == d.dn.lower()


def write(rows: Sequence[Entry], fmt: str, out: TextIO) -> None:
    """The entries as a table, JSON (one object per entry) or CSV."""
    if fmt == "json":
        doc = [
            {**asdict(e), "first_seen": e.first_seen.isoformat(), "last_seen": e.last_seen.isoformat()}
            for e in rows
        ]
        out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if fmt == "csv":
        w = csv.writer(out)
        w.writerow(CSV_COLUMNS)
        for e in rows:
            w.writerow(
                [
                    e.phase,
                    e.key,
                    e.object_type or "",
                    e.name,
                    e.dn or "",
                    e.attempts,
                    "; ".join(e.operations),
                    e.first_seen.isoformat(),
                    e.last_seen.isoformat(),
                    e.reason,
                ]
            )
        return
    if not rows:
        out.write("nothing quarantined\n")
        return
    for e in rows:
        tried = f", {e.attempts} attempt(s)" if e.phase == "export" else ""
        ops = f" [{', '.join(e.operations)}]" if e.operations else ""
        out.write(f"{e.phase:<7} {e.object_type or '':<5} {e.name}  ({e.key}{tried}){ops}\n")
        out.write(f"        since {e.first_seen:%Y-%m-%d %H:%M:%S %Z}: {e.reason}\n")
    out.write(f"{len(rows)} quarantined; retry with `idsync quarantine retry ID` once the cause is fixed\n")
