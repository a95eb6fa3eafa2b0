"""`idsync run`: the daemon — import, sync and, as the fenced leader, export, every cycle."""

from __future__ import annotations

import argparse
import asyncio
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="no ZooKeeper, always export (a single node: trials, demos, tests)",
    )
    parser.add_argument("--once", action="store_true", help="run one cycle and exit")
    parser.add_argument("--full", action="store_true", help="make the first cycle a full import and sync")


def run(args: argparse.Namespace) -> int:
    from idsync.commands import _node
    from idsync.config import ConfigError
    from idsync.ha.acl import ZkAccessDenied
    from idsync.ha.identity import NodeInUse
    from idsync.log import get_logger
    from idsync.store.errors import StoreError
    from idsync.sync.errors import RulesError

    cfg = _node.load(args)
    if cfg is None:
        return 2
    log = get_logger("idsync.run")
    try:
        return asyncio.run(_main(cfg, args))
    except (StoreError, RulesError, ConfigError, OSError, ZkAccessDenied, NodeInUse) as exc:
        log.error("daemon.cannot_start", error=str(exc))
        print(f"idsync: {exc}", file=sys.stderr)
        return 1


async def _main(cfg: object, args: argparse.Namespace) -> int:
    from idsync.config import Config
    from idsync.runtime.admin import AdminServer, LiveState, store_pending_reader
    from idsync.runtime.console import ConsoleSources
    from idsync.runtime.daemon import Daemon, DaemonOptions, make_ha, open_store
    from idsync.runtime.datapath import DataPath

    assert isinstance(cfg, Config)
    store = await asyncio.to_thread(open_store, cfg)
    ha = None if args.standalone else make_ha(cfg)

    def approvals() -> tuple[str, ...]:
        if ha is None or not ha.coord.connected:
            return ()
        try:
            return tuple(ha.coord.approvals())
        except Exception:
            return ()

    pipeline = DataPath(cfg, store, approvals=approvals)
    if not await _tenant_ready(pipeline):
        await pipeline.aclose()
        store.close()
        return 1
    daemon = Daemon(cfg, pipeline, store, ha)
    state = LiveState(daemon.node, ha, max(cfg.sync.interval_seconds, cfg.ha.loop_interval_seconds))
    daemon.on_cycle = state.observe
    console = ConsoleSources(cfg.node.cluster, ha, store)  # the web console at / (read-only)
    admin = AdminServer(state, cfg.admin, pending=store_pending_reader(store), console=console)
    try:
        await admin.start()  # ConfigError: token unreadable; OSError: address in use
        return await daemon.run(DaemonOptions(standalone=args.standalone, once=args.once, full=args.full))
    finally:
        await admin.stop()
        await pipeline.aclose()
        store.close()


async def _tenant_ready(pipeline: object) -> bool:
    """The fatal tenant checks before the first cycle: False (said on stderr and in the log) when
    the app cannot get a token or lacks the permissions idsync needs. Graph being unreachable is
    not fatal: the cycles retry it."""
    from idsync.log import get_logger
    from idsync.runtime.datapath import DataPath
    from idsync.runtime.tenant_watch import TenantNotReady
    from idsync.target.errors import GraphAuthError, GraphUnavailable

    assert isinstance(pipeline, DataPath)
    log = get_logger("idsync.run")
    try:
        await pipeline.startup_checks()
    except (TenantNotReady, GraphAuthError) as exc:
        log.error("daemon.cannot_start", error=str(exc))
        print(f"idsync: {exc}", file=sys.stderr)
        return False
    except GraphUnavailable as exc:
        log.warning("daemon.tenant_unchecked", error=str(exc))
    return True
