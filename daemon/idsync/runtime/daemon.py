"""`idsync run`: the asyncio main loop of one instance.

Signals only set flags (Patroni's daemon): SIGTERM finishes the in-flight batch, releases
leadership and closes the ZooKeeper session so a follower takes over at once; SIGHUP reloads
the rules. The systemd watchdog is fed by the main loop only (after each cycle, and by the pages of a
long cycle through `idsync.progress`), so a hung loop gets restarted.
"""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import psycopg
import structlog
from psycopg_pool import PoolTimeout

from idsync.config import Config
from idsync.ha.acl import ZkAccessDenied
from idsync.ha.identity import claim_member
from idsync.ha.loop import HaLoop, Timing
from idsync.ha.requests import PauseGate
from idsync.ha.zk import CoordinationError, Coordinator, ZkSettings
from idsync.runtime.node import CycleOutcome, Node
from idsync.runtime.notify import Notifier
from idsync.runtime.pipeline import Pipeline
from idsync.store import fence as store_fence
from idsync.store import migrate
from idsync.store.db import Store
from idsync.store.errors import StoreUnavailable
from idsync.store.identity import IdentityLock, SchemaInUse

if TYPE_CHECKING:
    from idsync.runtime.cluster_rules import RulesFollower

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass
class DaemonOptions:
    standalone: bool = False
    once: bool = False  # run one cycle and exit (cycle command, tests)
    full: bool = False  # the first cycle is a full sync


def retrying(
    what: str, action: Callable[[], T], errors: tuple[type[Exception], ...], stop: threading.Event
) -> T:
    """Run `action` until it succeeds, backing off (0.5 s doubling to 15 s, jittered) and logging
    each failure: a daemon started while a dependency restarts waits for it instead of exiting."""
    delay = 0.5
    attempt = 0
    while True:
        attempt += 1
        try:
            return action()
        except errors as exc:
            if stop.is_set():
                raise
            log.warning(
                "daemon.waiting", dependency=what, attempt=attempt, error=str(exc), retry_in=round(delay, 1)
            )
            stop.wait(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 15.0)


def open_store(cfg: Config, stop: threading.Event | None = None) -> Store:
    """Open and migrate the instance's store, waiting for PostgreSQL if it is not up yet."""
    s = cfg.store

    def attempt() -> Store:
        store = Store(
            s.dsn(),
            s.schema_name,
            min_size=s.pool_min_size,
            max_size=s.pool_max_size,
            connect_timeout=s.connect_timeout_seconds,
            statement_timeout=s.statement_timeout_seconds,
        ).open()
        try:
            migrate.migrate(store)
        except BaseException:
            store.close()
            raise
        return store

    # A PostgreSQL that restarts under us can fail any of these steps: all of them are worth a retry.
    transient = (StoreUnavailable, psycopg.OperationalError, PoolTimeout)
    return retrying("postgresql", attempt, transient, stop or threading.Event())


def make_ha(cfg: Config) -> HaLoop[Coordinator]:
    zk = cfg.ha.zookeeper
    settings = ZkSettings(
        hosts=zk.hosts,
        session_timeout=zk.session_timeout_seconds,
        retry_timeout=cfg.ha.retry_timeout_seconds,
        auth=zk.auth(),
        tls=zk.tls,
        ca_file=str(zk.ca_file) if zk.ca_file else None,
    )
    ha: HaLoop[Coordinator]
    coord = Coordinator(settings, cfg.node.cluster, cfg.node.name, on_state=lambda s: ha.on_state(s))
    ha = HaLoop(
        coord,
        Timing(
            session_timeout=zk.session_timeout_seconds,
            loop_interval=cfg.ha.loop_interval_seconds,
            request_timeout=cfg.target.graph.request_timeout_seconds,
            lock_delay=cfg.ha.lock_delay_seconds,
            stall_timeout=cfg.ha.stall_timeout_seconds,
        ),
        admin_url=cfg.admin.public_url(),
    )
    return ha


class Daemon:
    """Owns the loop, the signals and the hand-over at shutdown."""

    def __init__(
        self,
        cfg: Config,
        pipeline: Pipeline,
        store: Store,
        ha: HaLoop[Coordinator] | None,
        *,
        notifier: Notifier | None = None,
        on_cycle: Callable[[CycleOutcome], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.node = Node(cfg.node.name, pipeline, store, ha, stop=self.stop)
        self.node.on_progress = self._feed_watchdog
        self._watchdog_fed = 0.0
        self.ha = ha
        self.store = store
        self.pipeline = pipeline
        self.notifier = notifier or Notifier()
        self.on_cycle = on_cycle
        self._reload = False
        self.identity: IdentityLock | None = None
        self.interval = cfg.sync.interval_seconds
        self._store_renewing = threading.Event()
        self.rules: RulesFollower | None = None

    # -- signals ----------------------------------------------------------------------------

    def install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self._on_term)
        loop.add_signal_handler(signal.SIGINT, self._on_term)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)

    def _on_term(self) -> None:
        log.info("daemon.stopping", reason="signal")
        self.stop.set()
        if self.ha:
            self.ha.coord.wake.set()

    def _on_hup(self) -> None:
        self._reload = True
        self.notifier.send(reloading="1", monotonic_usec=str(int(time.monotonic() * 1e6)))

    # -- lease keeper -----------------------------------------------------------------------

    def _keep_lease(self) -> None:
        """While leader, re-confirm with a ZooKeeper quorum between cycles so a long export keeps
        its lease, but only while the main loop progresses: a hung loop loses the lease and
        resigns (`HaLoop.refresh`)."""
        assert self.ha is not None
        period = max(
            0.2, min(self.cfg.ha.loop_interval_seconds, self.cfg.ha.zookeeper.session_timeout_seconds / 6)
        )
        while not self.stop.wait(period):
            ha = self.ha
            lease = ha.lease
            renewal = ha.refresh()
            if not renewal.renewed:
                if renewal.sentence != "not leader":
                    log.info("ha.keeper", decision=renewal.sentence)
                continue
            if lease is not None and not self._store_renewing.is_set():
                # In its own thread: a store that hangs (a lock held elsewhere) must not stop
                # the keeper, whose next turn may have to resign.
                self._store_renewing.set()
                threading.Thread(
                    target=self._renew_store_fence, args=(lease.epoch, lease.remaining()), daemon=True
                ).start()

    def _renew_store_fence(self, epoch: int, seconds: float) -> None:
        try:
            with self.store.transaction() as conn:
                store_fence.renew(conn, epoch, self.cfg.node.name, seconds)
        except Exception:  # the claim transaction refuses on its own when this fails
            log.warning("daemon.fence_renew_failed", exc_info=True)
        finally:
            self._store_renewing.clear()

    # -- main loop --------------------------------------------------------------------------

    def _progress(self) -> None:
        if self.ha is not None:
            self.ha.progress()

    def _feed_watchdog(self) -> None:
        """Progress inside a long cycle (a page imported, a batch exported) feeds systemd's
        watchdog too, at most every 30 s: a full cycle of a large directory can outlast
        `WatchdogSec`, a hung one cannot."""
        now = time.monotonic()
        if now - self._watchdog_fed >= 30.0:
            self._watchdog_fed = now
            self.notifier.send(watchdog="1")

    async def run(self, opts: DaemonOptions) -> int:
        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            self.install_signals(loop)
        # One live process per schema and per node name (store/identity.py, ha/identity.py).
        self.identity = await asyncio.to_thread(self._claim_schema)
        if self.ha is not None:
            coord = self.ha.coord
            await asyncio.to_thread(retrying, "zookeeper", coord.start, (CoordinationError,), self.stop)
            # A ZooKeeper blip while checking is retried; a live holder (NodeInUse) is fatal.
            await asyncio.to_thread(
                retrying,
                "zookeeper",
                lambda: claim_member(coord, coord.session_timeout),
                (CoordinationError,),
                self.stop,
            )
            gate = PauseGate()
            gate.watch(coord)
            self.node.pause_gate = gate
            if hasattr(self.pipeline, "use_rules"):
                # The cluster's versioned rules, seeded from the local file (runtime/cluster_rules.py).
                from idsync.runtime.cluster_rules import RulesFollower

                self.rules = RulesFollower(self.cfg, coord, self.node, self.ha)
                await asyncio.to_thread(
                    retrying, "zookeeper", self.rules.start, (CoordinationError,), self.stop
                )
            threading.Thread(target=self._keep_lease, name="lease-keeper", daemon=True).start()
        if opts.full:
            self.node.request_full()
        self.notifier.ready("starting")
        log.info("daemon.started", standalone=opts.standalone, interval=self.interval)
        try:
            while not self.stop.is_set():
                if self._reload:
                    self._reload = False
                    reload = self.rules.reload_local if self.rules is not None else self.pipeline.reload
                    what = await asyncio.to_thread(reload)
                    log.info("daemon.reloaded", change=what)
                    self.notifier.send(ready="1")
                started = time.monotonic()
                self._progress()
                try:
                    await asyncio.to_thread(self._check_schema)
                    if self.rules is not None:
                        await asyncio.to_thread(self.rules.before_cycle)
                    outcome = await self.node.run_cycle()
                    if self.rules is not None:
                        await asyncio.to_thread(self.rules.after_cycle, outcome)
                except (ZkAccessDenied, SchemaInUse):
                    raise  # fatal: the message names what to fix; retrying cannot help
                except Exception as exc:  # never let one bad cycle end the daemon; say why, back off
                    log.exception("cycle.crashed", error=str(exc))
                    self.notifier.send(status=f"cycle failed: {exc}", watchdog="1")
                    await self._nap(self.interval)
                    continue
                log.info("cycle", decision=outcome.sentence, seconds=round(time.monotonic() - started, 3))
                pending = sum(outcome.report.pending.values())
                self.notifier.send(
                    status=f"{outcome.role} epoch {outcome.epoch}, {pending} pending", watchdog="1"
                )
                if self.on_cycle:
                    self.on_cycle(outcome)
                if opts.once:
                    break
                # A promotion or a release wants the next cycle at once (catch up, hand over).
                if outcome.promoted:
                    continue
                await self._nap(self.interval - (time.monotonic() - started))
        finally:
            await self._shutdown()
        return 0

    def _claim_schema(self) -> IdentityLock:
        # The store the daemon runs on (its DSN and schema), not a second reading of the config.
        st = self.store
        lock = IdentityLock(st.dsn, st.schema, self.cfg.node.name, connect_timeout=st.connect_timeout)
        transient = (StoreUnavailable, psycopg.OperationalError)
        return retrying("postgresql", lock.acquire, transient, self.stop)

    def _check_schema(self) -> None:
        if self.identity is None:
            return
        try:
            self.identity.check()
        except StoreUnavailable as exc:  # PostgreSQL is down: the cycle reports it; re-taken later
            log.warning("store.identity_unchecked", error=str(exc))

    async def _nap(self, seconds: float) -> None:
        """Sleep until the next cycle, a ZooKeeper event (leader gone, switchover, pause) or stop."""
        deadline = time.monotonic() + max(0.0, seconds)
        wake = self.ha.coord.wake if self.ha else None
        while not self.stop.is_set():
            self._progress()  # napping is the loop working as it should
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if wake is not None and wake.is_set():
                wake.clear()
                return
            await asyncio.sleep(min(left, 0.05))

    async def _shutdown(self) -> None:
        self.notifier.stopping()
        self.stop.set()
        if self.ha is not None:
            sentence = await asyncio.to_thread(self.node.release, "shutdown")
            if sentence:
                log.info("daemon.released", decision=sentence)
            await asyncio.to_thread(self.ha.coord.stop)
        await asyncio.to_thread(self.pipeline.close)
        if self.identity is not None:
            self.identity.release()
        log.info("daemon.stopped")
