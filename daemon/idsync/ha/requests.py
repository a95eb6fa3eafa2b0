"""Switchover, failover and pause requests: who they are for, when they lapse, and the pause ack.

Nothing here compares two hosts' wall clocks. A switchover request names the leader and epoch
it is for, so a request aimed at an old leader is recognised by identity, not age. A hand-over
promise lapses when ZooKeeper says the target's session is gone (its member znode vanished) or
when the target has not taken over within `takeover_timeout` as measured on the *observer's*
monotonic clock from the moment it first saw the cluster leaderless under that request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError

from idsync.fencing import Fence, Fenced, GuardedFence
from idsync.ha.records import (
    ClusterView,
    FailoverRequest,
    LeaderRecord,
    PauseRecord,
    SwitchoverRequest,
    decode,
    encode,
)

if TYPE_CHECKING:
    from idsync.ha.zk import Coordinator

log = structlog.get_logger(__name__)


class RequestRejected(Exception):
    """A request could not be placed; the message says why (another request, a changed leader)."""


def _key(req: SwitchoverRequest | FailoverRequest) -> tuple[Any, ...]:
    # The record's content identifies one request; `at` serves as identity here, never as a time.
    return (type(req).__name__, *req.__dict__.values())


class RequestTracker:
    """Judges pending hand-over requests for one node, on that node's monotonic clock only."""

    def __init__(self, takeover_timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.takeover_timeout = takeover_timeout
        self._clock = clock
        self._first_leaderless: dict[tuple[Any, ...], float] = {}

    # -- leader side ------------------------------------------------------------------------

    def for_leader(self, view: ClusterView, leader: LeaderRecord) -> SwitchoverRequest | None:
        """The switchover request this leader must act on, or None.

        A request naming another leader or another epoch is not ours (it was aimed at an old
        leader); `tidy()` clears it. A request for a target that is no longer a member is void.
        """
        sw = view.switchover
        if sw is None or sw.to == leader.node:
            return None
        if sw.leader != leader.node or sw.epoch != leader.epoch:
            return None
        if sw.to and sw.to not in view.members:
            return None
        return sw

    def failover_for_leader(self, view: ClusterView, leader: LeaderRecord) -> FailoverRequest | None:
        """A failover request naming another live member: an unhealthy leader steps aside."""
        fo = view.failover
        if fo is None or fo.to == leader.node or fo.to not in view.members:
            return None
        if fo.epoch and fo.epoch != leader.epoch:
            return None  # asked of an earlier leader (the fallback elected us instead): `tidy()` clears it
        return fo

    # -- follower side ----------------------------------------------------------------------

    def _promise_holds(self, view: ClusterView, req: SwitchoverRequest | FailoverRequest) -> bool:
        if req.to and req.to not in view.members:
            return False  # ZooKeeper expired the target's session: it will not take over
        if view.leader is not None:
            return True  # the leader is still handing over (or the request is for it)
        key = _key(req)
        now = self._clock()
        first = self._first_leaderless.setdefault(key, now)
        return now - first < self.takeover_timeout

    def live_switchover(self, view: ClusterView) -> SwitchoverRequest | None:
        """The switchover request still holding followers back, or None once its promise lapsed."""
        self._forget(view)
        sw = view.switchover
        if sw is None or not self._promise_holds(view, sw):
            return None
        return sw

    def live_failover(self, view: ClusterView) -> FailoverRequest | None:
        """The failover request still reserving the election for its target, or None."""
        self._forget(view)
        fo = view.failover
        if fo is None or not self._promise_holds(view, fo):
            return None
        return fo

    def _forget(self, view: ClusterView) -> None:
        keep = {_key(r) for r in (view.switchover, view.failover) if r is not None}
        for k in list(self._first_leaderless):
            if k not in keep:
                del self._first_leaderless[k]


# -- ZooKeeper side: placing requests (CLI) and tidying them (leader) --------------------------


def _results_error(results: list[Any]) -> Exception | None:
    for r in results:
        if isinstance(r, Exception) and type(r).__name__ != "RolledBackError":
            return r
    return None


def submit_switchover(coord: Coordinator, req: SwitchoverRequest, view: ClusterView) -> None:
    """Place a switchover request only if the epoch is still the one the request names.

    One ZooKeeper transaction checks the epoch znode's version and creates the request: a
    concurrent second request fails on the create (NodeExists) instead of overwriting the first.
    A leftover request for an old leader is replaced with a version check.
    """
    client, paths = coord.client, coord.paths
    timeout = coord.settings.retry_timeout
    try:
        raw, stat = client.get_async(paths.switchover).get(timeout=timeout)
    except NoNodeError:
        raw, stat = None, None
    except (KazooException, KazooTimeoutError) as exc:
        raise RequestRejected(f"cannot read {paths.switchover}: {exc!r}") from exc
    existing = decode(SwitchoverRequest, raw) if stat is not None else None
    leader = view.leader
    if (
        existing is not None
        and leader is not None
        and (existing.leader, existing.epoch) == (leader.node, leader.epoch)
    ) and (not existing.to or existing.to in view.members):
        raise RequestRejected(_in_progress(existing))
    tx = client.transaction()
    tx.check(paths.epoch, view.epoch_version)
    if stat is None:
        tx.create(paths.switchover, encode(req))
    else:
        tx.set_data(paths.switchover, encode(req), version=stat.version)
    try:
        results = tx.commit_async().get(timeout=timeout)
    except (KazooException, KazooTimeoutError) as exc:
        raise RequestRejected(f"cannot write {paths.switchover}: {exc!r}") from exc
    err = _results_error(results)
    if err is None:
        return
    if isinstance(results[0], BadVersionError):
        raise RequestRejected(
            "the leader changed while the request was being made; run `idsync status` and ask again"
        )
    if isinstance(err, NodeExistsError | BadVersionError):
        other = decode(SwitchoverRequest, _get_quiet(coord, paths.switchover))
        raise RequestRejected(_in_progress(other) if other else "another switchover request came first")
    raise RequestRejected(f"cannot write {paths.switchover}: {err!r}")


def _in_progress(req: SwitchoverRequest) -> str:
    to = req.to or "any healthy node"
    return (
        f"another switchover is in progress: to {to}, requested by {req.by or '?'} for leader "
        f"{req.leader} at epoch {req.epoch}; wait for it (`idsync status`) and ask again"
    )


def _get_quiet(coord: Coordinator, path: str) -> bytes | None:
    try:
        data, _ = coord.client.get_async(path).get(timeout=coord.settings.retry_timeout)
        return bytes(data) if data else None
    except (KazooException, KazooTimeoutError):
        return None


def set_pause(coord: Coordinator, rec: PauseRecord) -> None:
    """Write a fresh pause record (its ack fields empty) so that the leader must acknowledge anew."""
    client, path = coord.client, coord.paths.pause
    timeout = coord.settings.retry_timeout
    try:
        try:
            client.create_async(path, encode(rec)).get(timeout=timeout)
        except NodeExistsError:
            client.set_async(path, encode(rec)).get(timeout=timeout)
    except (KazooException, KazooTimeoutError) as exc:
        raise RequestRejected(f"cannot write {path}: {exc!r}") from exc


def tidy(coord: Coordinator, view: ClusterView, leader: LeaderRecord | None, *, holding: bool) -> str:
    """After a leader's HA cycle: acknowledge a pause, clear a switchover aimed at an old leader.

    `holding` is true when this cycle decided not to export (so no write of ours is running:
    the export slice runs after the decision, in the same thread of control). Returns what was
    done, for the log ('' when nothing).
    """
    if leader is None:
        return ""
    done = []
    client, paths = coord.client, coord.paths
    timeout = coord.settings.retry_timeout

    def void(req: SwitchoverRequest, *, recheck: bool = False) -> str:
        if (req.leader, req.epoch) != (leader.node, leader.epoch):
            return f"meant for {req.leader} at epoch {req.epoch}"
        if req.to and req.to not in view.members:
            # The view is read znode by znode, not as one snapshot: a target that registered
            # while it was read (a member list read before it, the request after) is missing
            # from it. The CLI places a request only for a member, so look again before voiding.
            if recheck and client.exists_async(paths.member(req.to)).get(timeout=timeout) is not None:
                return ""
            return f"to {req.to}, which is no longer a member"
        return ""

    sw = view.switchover
    if sw is not None and void(sw):
        try:
            raw, stat = client.get_async(paths.switchover).get(timeout=timeout)
            cur = decode(SwitchoverRequest, raw)
            why = void(cur, recheck=True) if cur is not None else ""
            if cur is not None and why:
                client.delete_async(paths.switchover, version=stat.version).get(timeout=timeout)
                log.info("ha.request_cleared", to=cur.to, by=cur.by, for_leader=cur.leader, epoch=cur.epoch)
                done.append(f"cleared a switchover request {why}")
        except (NoNodeError, BadVersionError):
            pass
        except (KazooException, KazooTimeoutError) as exc:
            log.warning("ha.request_clear_failed", error=repr(exc))
    fo = view.failover
    if fo is not None and fo.epoch and fo.epoch != leader.epoch and fo.to != leader.node:
        try:
            raw, stat = client.get_async(paths.failover).get(timeout=timeout)
            cur_fo = decode(FailoverRequest, raw)
            if cur_fo is not None and cur_fo.epoch and cur_fo.epoch != leader.epoch:
                client.delete_async(paths.failover, version=stat.version).get(timeout=timeout)
                log.info("ha.request_cleared", to=cur_fo.to, by=cur_fo.by, epoch=cur_fo.epoch)
                done.append(f"cleared a failover request to {cur_fo.to} made at epoch {cur_fo.epoch}")
        except (NoNodeError, BadVersionError):
            pass
        except (KazooException, KazooTimeoutError) as exc:
            log.warning("ha.request_clear_failed", error=repr(exc))
    if holding and view.pause is not None:
        try:
            raw, stat = client.get_async(paths.pause).get(timeout=timeout)
            cur_pause = decode(PauseRecord, raw)
            if cur_pause is not None and (cur_pause.ack_node, cur_pause.ack_epoch) != (
                leader.node,
                leader.epoch,
            ):
                acked = PauseRecord(
                    by=cur_pause.by,
                    at=cur_pause.at,
                    reason=cur_pause.reason,
                    ack_node=leader.node,
                    ack_epoch=leader.epoch,
                )
                client.set_async(paths.pause, encode(acked), version=stat.version).get(timeout=timeout)
                log.info("ha.pause_acknowledged", epoch=leader.epoch, by=cur_pause.by)
                done.append(f"acknowledged the pause at epoch {leader.epoch}")
        except (NoNodeError, BadVersionError):
            pass  # resumed or re-paused meanwhile: the next cycle looks again
        except (KazooException, KazooTimeoutError) as exc:
            log.warning("ha.pause_ack_failed", error=repr(exc))
    return "; ".join(done)


class PauseGate:
    """The cluster's pause as this process sees it, from a ZooKeeper watch.

    The leader's fence is wrapped with it, so an export slice already running stops before its
    next request once `idsync pause` is written, without waiting for the next HA cycle.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._paused = threading.Event()
        self._clock = clock
        self._event_at = float("-inf")
        self._lock = threading.Lock()
        self.by = ""

    def watch(self, coord: Coordinator) -> None:
        coord.client.DataWatch(coord.paths.pause)(self._changed)

    def _changed(self, data: bytes | None, stat: Any, event: Any = None) -> None:
        rec = decode(PauseRecord, data) if stat is not None else None
        with self._lock:
            self._event_at = self._clock()
            self._apply(rec)

    def _apply(self, rec: PauseRecord | None) -> None:
        if rec is None:
            self._paused.clear()
        else:
            self.by = rec.by
            self._paused.set()

    def sync(self, rec: PauseRecord | None, read_at: float) -> None:
        """Each cycle, from the view read at `read_at`: a watch kazoo dropped (its re-read failed
        after a session expiry) must not leave the gate wrong; a newer watch event wins."""
        with self._lock:
            if self._event_at <= read_at:
                self._apply(rec)

    def set(self, paused: bool, by: str = "") -> None:
        self.by = by
        if paused:
            self._paused.set()
        else:
            self._paused.clear()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def wrap(self, fence: Fence) -> Fence:
        return _PausableFence(fence, self)


class _PausableFence(GuardedFence):
    """A fence that also fails while the cluster is paused (everything else is the leader's)."""

    def __init__(self, fence: Fence, gate: PauseGate) -> None:
        super().__init__(fence)
        self._gate = gate

    def guard(self) -> None:
        if self._gate.paused:
            raise Fenced(self._fence.epoch, f"paused by {self._gate.by or 'an operator'}")
