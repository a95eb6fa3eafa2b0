"""The only module that talks to ZooKeeper: idsync's znodes under /idsync/<cluster>/.

Every call a leader depends on is made with a deadline (`*_async(...).get(timeout)`): kazoo
queues requests while SUSPENDED, and a leader must never block on a queued request
(patroni/patroni#1981).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    KazooException,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import ZnodeStat
from kazoo.retry import KazooRetry
from kazoo.security import make_digest_acl

from idsync.ha import acl, history
from idsync.ha.coordination import CoordinationError
from idsync.ha.records import (
    ClusterView,
    EpochRecord,
    FailoverRequest,
    LeaderRecord,
    MemberRecord,
    PauseRecord,
    ReleaseRecord,
    SwitchoverRequest,
    decode,
    encode,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")

__all__ = ["CoordinationError", "Coordinator", "Paths", "ZkSettings"]


@dataclass(frozen=True)
class ZkSettings:
    """Connection settings, taken from `[ha.zookeeper]`."""

    hosts: str
    session_timeout: float = 30.0
    retry_timeout: float = 10.0
    auth: tuple[str, str] | None = None
    tls: bool = False
    ca_file: str | None = None


class Paths:
    """The znodes of one cluster."""

    def __init__(self, cluster: str) -> None:
        self.base = f"/idsync/{cluster}"
        self.members = f"{self.base}/members"
        self.leader = f"{self.base}/leader"
        self.epoch = f"{self.base}/epoch"
        self.release = f"{self.base}/release"
        self.switchover = f"{self.base}/switchover"
        self.failover = f"{self.base}/failover"
        self.pause = f"{self.base}/pause"
        self.approvals = f"{self.base}/approvals"

    def member(self, node: str) -> str:
        return f"{self.members}/{node}"


class Coordinator:
    """A ZooKeeper session for one node of one cluster.

    Connection-state changes are reported to `on_state` from kazoo's thread; it must not block.
    `wake` is set whenever something the HA loop cares about changes (leader, requests, pause).
    """

    def __init__(
        self,
        settings: ZkSettings,
        cluster: str,
        node: str,
        *,
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.node = node
        self.paths = Paths(cluster)
        self.wake = threading.Event()
        self._on_state = on_state
        self._state = "lost"
        auth_data = None
        default_acl = None
        if settings.auth:
            user, password = settings.auth
            auth_data = [("digest", f"{user}:{password}")]
            default_acl = [make_digest_acl(user, password, all=True)]
        self.client = KazooClient(
            hosts=settings.hosts,
            timeout=settings.session_timeout,
            auth_data=auth_data,
            default_acl=default_acl,
            connection_retry=KazooRetry(max_delay=1, max_tries=-1),
            command_retry=KazooRetry(max_delay=1, max_tries=-1, deadline=settings.retry_timeout),
            use_ssl=settings.tls,
            ca=settings.ca_file,
        )
        self.client.add_listener(self._listener)
        self._watching = False
        self._negotiated: float | None = None
        self._capture_negotiated_timeout()

    # -- connection -------------------------------------------------------------------------

    def _listener(self, state: str) -> None:
        # Runs on kazoo's connection thread: set flags only.
        mapped = {KazooState.CONNECTED: "connected", KazooState.SUSPENDED: "suspended"}.get(state, "lost")
        self._state = mapped
        self.wake.set()
        if self._on_state:
            self._on_state(mapped)

    @property
    def state(self) -> str:
        """connected | suspended | lost, as kazoo last reported it."""
        return self._state

    @property
    def connected(self) -> bool:
        return self._state == "connected" and self.client.connected

    def _capture_negotiated_timeout(self) -> None:
        # The server may grant another timeout than asked (bounded by its min/maxSessionTimeout).
        # kazoo 2.11 computes its read timeout (2/3 of the negotiated one) in `_connect` but keeps
        # neither; wrap that method to learn it. Newer kazoo exposes it as an attribute.
        conn = self.client._connection
        original = conn._connect

        def _connect(*args: Any, **kwargs: Any) -> Any:
            read_timeout_ms, connect_timeout_ms = original(*args, **kwargs)
            self._negotiated = read_timeout_ms * 1.5 / 1000.0
            return read_timeout_ms, connect_timeout_ms

        conn._connect = _connect

    @property
    def session_timeout(self) -> float:
        """The session timeout the server agreed to (the configured one until connected)."""
        exposed = getattr(self.client, "negotiated_session_timeout", None)
        if isinstance(exposed, int | float) and exposed > 0:
            return float(exposed) / 1000.0
        return self._negotiated or self.settings.session_timeout

    @property
    def session_id(self) -> int | None:
        """The current session's id, kept while disconnected (SUSPENDED) and None once it is lost.

        kazoo's `client_id` is None whenever the connection is down, even when the session
        lives on (a ZooKeeper restart within the timeout); a leader must not mistake that for a
        new session.
        """
        sid = self.client._session_id
        return int(sid) if sid else None

    def start(self, timeout: float | None = None) -> None:
        """Connect (waiting at most `timeout`), create the cluster's base znodes and set watches."""
        wait = timeout if timeout is not None else max(2.0, self.settings.retry_timeout)
        try:
            self.client.start(timeout=wait)
        except KazooTimeoutError as exc:
            self.client.stop()
            raise CoordinationError(
                f"cannot reach ZooKeeper at {self.settings.hosts} within {wait:.0f}s"
            ) from exc
        self._state = "connected"
        # Wrong credentials are fatal here, not a NoAuth retried forever (ha/acl.py).
        acl.check_access(self, tighten=True)
        try:
            if self.client.chroot:
                # kazoo does not create the chroot; do it through a chroot-less view of the path.
                self._ensure_chroot()
            for path in (self.paths.members, self.paths.approvals):
                self.client.ensure_path(path)
            with contextlib.suppress(NodeExistsError):
                self.client.create(self.paths.epoch, encode(EpochRecord()))
        except KazooException as exc:
            raise CoordinationError(f"ZooKeeper at {self.settings.hosts} refused set-up: {exc!r}") from exc
        self._set_watches()

    def _ensure_chroot(self) -> None:
        chroot = self.client.chroot
        self.client.chroot = ""
        try:
            self.client.ensure_path(chroot)
        finally:
            self.client.chroot = chroot

    def _set_watches(self) -> None:
        if self._watching:
            return
        self._watching = True
        for path in (self.paths.leader, self.paths.switchover, self.paths.failover, self.paths.pause):
            self.client.DataWatch(path)(self._changed)
        self.client.ChildrenWatch(self.paths.members)(self._children_changed)

    def _changed(self, data: bytes | None, stat: ZnodeStat | None, event: Any = None) -> None:
        self.wake.set()

    def _children_changed(self, children: list[str]) -> None:
        self.wake.set()

    def stop(self) -> None:
        """Close the session: our ephemeral znodes (leader, member) vanish at once."""
        try:
            self.client.stop()
        finally:
            self.client.close()
            self._state = "lost"

    # -- reads ------------------------------------------------------------------------------

    def _get(self, path: str, timeout: float | None = None) -> tuple[bytes | None, ZnodeStat | None]:
        try:
            data, stat = self.client.get_async(path).get(timeout=timeout or self.settings.retry_timeout)
            return data, stat
        except NoNodeError:
            return None, None
        except NoAuthError as exc:
            raise acl.ZkAccessDenied(path, "read", self.settings.auth) from exc
        except (KazooException, KazooTimeoutError) as exc:
            raise CoordinationError(f"ZooKeeper read of {path} failed: {exc!r}") from exc

    def read(self) -> ClusterView:
        """Read every znode the HA loop decides on."""
        leader_raw, _ = self._get(self.paths.leader)
        epoch_raw, epoch_stat = self._get(self.paths.epoch)
        try:
            names = self.client.get_children_async(self.paths.members).get(
                timeout=self.settings.retry_timeout
            )
        except NoNodeError:
            names = []
        except (KazooException, KazooTimeoutError) as exc:
            raise CoordinationError(f"ZooKeeper read of {self.paths.members} failed: {exc!r}") from exc
        members: dict[str, MemberRecord] = {}
        mtimes: dict[str, float] = {}  # ZooKeeper's own clock: staleness without host clocks
        for name in names:
            raw, member_stat = self._get(self.paths.member(name))
            rec = decode(MemberRecord, raw)
            if rec:
                members[name] = rec
                if member_stat is not None:
                    mtimes[name] = member_stat.mtime / 1000.0
        from idsync.ha import rules_zk  # the rules records (ha/rules_zk.py)

        current, trial = rules_zk.read_summary(self)
        return ClusterView(
            leader=decode(LeaderRecord, leader_raw),
            epoch=decode(EpochRecord, epoch_raw) or EpochRecord(),
            epoch_version=epoch_stat.version if epoch_stat else -1,
            members=members,
            switchover=decode(SwitchoverRequest, self._get(self.paths.switchover)[0]),
            failover=decode(FailoverRequest, self._get(self.paths.failover)[0]),
            pause=decode(PauseRecord, self._get(self.paths.pause)[0]),
            release=decode(ReleaseRecord, self._get(self.paths.release)[0]),
            member_mtime=mtimes,
            rules_version=current.version if current else 0,
            rules_hash=current.hash if current else "",
            trial_node=trial.node if trial else "",
            trial_hash=trial.hash if trial else "",
        )

    # -- membership -------------------------------------------------------------------------

    def publish_member(self, record: MemberRecord) -> None:
        """Create or update our ephemeral member znode."""
        path = self.paths.member(self.node)
        data = encode(record)
        timeout = self.settings.retry_timeout
        try:
            try:
                self.client.set_async(path, data).get(timeout=timeout)
            except NoNodeError:
                self.client.create_async(path, data, ephemeral=True).get(timeout=timeout)
        except NodeExistsError:
            self.client.set_async(path, data).get(timeout=timeout)
        except (KazooException, KazooTimeoutError) as exc:
            raise CoordinationError(f"cannot publish member {self.node}: {exc!r}") from exc

    # -- leadership -------------------------------------------------------------------------

    def try_acquire(self, view: ClusterView, rules_hash: str) -> LeaderRecord | None:
        """Take leadership at epoch+1 in one ZooKeeper transaction, or None if another node won.

        The leader znode is created and the epoch bumped by versioned CAS atomically (Kafka's
        controller-epoch pattern): two candidates can never both succeed, and an epoch is never
        taken without a leader znode, nor the reverse.
        """
        session = self.session_id
        if session is None or not self.connected:
            return None
        epoch = view.epoch.epoch + 1
        record = LeaderRecord(node=self.node, epoch=epoch, session=session)
        tx = self.client.transaction()
        tx.create(self.paths.leader, encode(record), ephemeral=True)
        tx.set_data(
            self.paths.epoch,
            encode(EpochRecord(epoch=epoch, node=self.node, rules_hash=rules_hash, at=time.time())),
            version=view.epoch_version,
        )
        if view.switchover is not None:
            tx.delete(self.paths.switchover)
        if view.failover is not None and view.failover.to == self.node:
            tx.delete(self.paths.failover)
        # The leadership history entry commits with the epoch, or not at all (ha/history.py).
        history.stage(tx, self.client, self.paths.base, view, record, self.settings.retry_timeout)
        try:
            results = tx.commit_async().get(timeout=self.settings.retry_timeout)
        except (KazooException, KazooTimeoutError) as exc:
            raise CoordinationError(f"leader election transaction failed: {exc!r}") from exc
        if any(isinstance(r, Exception) for r in results):
            failures = [type(r).__name__ for r in results if isinstance(r, Exception)]
            log.debug("ha.acquire_lost_race", failures=failures)
            return None
        # A session that changed between reading and committing would own the znode with
        # another id; treat that as not having won.
        if self.session_id != session:
            return None
        history.prune(self.client, self.paths.base, self.settings.retry_timeout)
        return record

    def confirm(self, leader: LeaderRecord) -> bool:
        """True if a ZooKeeper quorum still shows us as leader at our epoch, in the session that won.

        False is definitive (the session or the znode is gone); a connection that is merely down
        raises CoordinationError, because the session may survive it.
        """
        if self.session_id != leader.session:
            return False
        if not self.connected:
            raise CoordinationError("ZooKeeper connection is down")
        # A follower cut off from the quorum keeps answering plain reads (up to syncLimit x
        # tickTime) while the quorum expires our session; sync() goes through the quorum leader,
        # so the reads after it are at least as new as the moment the quorum answered.
        try:
            self.client.sync_async(self.paths.leader).get(timeout=self.settings.retry_timeout)
        except (KazooException, KazooTimeoutError) as exc:
            raise CoordinationError(f"ZooKeeper sync of {self.paths.leader} failed: {exc!r}") from exc
        data, stat = self._get(self.paths.leader)
        current = decode(LeaderRecord, data)
        if stat is None or current is None:
            return False
        if stat.ephemeralOwner != leader.session or current.epoch != leader.epoch:
            return False
        epoch = decode(EpochRecord, self._get(self.paths.epoch)[0])
        return epoch is not None and epoch.epoch == leader.epoch

    def remove_own_leader_znode(self, epoch: int) -> bool:
        """Delete a leader znode of ours that this process no longer acts on (our own session)."""
        _, stat = self._get(self.paths.leader)
        if stat is None or stat.ephemeralOwner != self.session_id:
            return False
        try:
            self.client.delete_async(self.paths.leader, version=stat.version).get(
                timeout=self.settings.retry_timeout
            )
        except (KazooException, KazooTimeoutError) as exc:
            raise CoordinationError(f"cannot remove stale leader znode: {exc!r}") from exc
        return True

    def release(self, leader: LeaderRecord, reason: str) -> bool:
        """Give up leadership cleanly: record the release and delete the leader znode atomically."""
        if not self.connected:
            return False
        _, stat = self._get(self.paths.leader)
        if stat is None or stat.ephemeralOwner != leader.session:
            return False
        rel = encode(ReleaseRecord(node=self.node, epoch=leader.epoch, at=time.time(), reason=reason))
        tx = self.client.transaction()
        tx.delete(self.paths.leader, version=stat.version)
        try:
            self.client.get_async(self.paths.release).get(timeout=self.settings.retry_timeout)
            tx.set_data(self.paths.release, rel)
        except NoNodeError:
            tx.create(self.paths.release, rel)
        try:
            results = tx.commit_async().get(timeout=self.settings.retry_timeout)
        except (KazooException, KazooTimeoutError) as exc:
            raise CoordinationError(f"release failed: {exc!r}") from exc
        return not any(isinstance(r, Exception) for r in results)

    # -- requests (control commands) --------------------------------------------------------

    def _put(self, path: str, data: bytes) -> None:
        try:
            try:
                self.client.create_async(path, data).get(timeout=self.settings.retry_timeout)
            except NodeExistsError:
                self.client.set_async(path, data).get(timeout=self.settings.retry_timeout)
        except (KazooException, KazooTimeoutError) as exc:
            raise CoordinationError(f"cannot write {path}: {exc!r}") from exc

    def _remove(self, path: str) -> bool:
        try:
            self.client.delete_async(path).get(timeout=self.settings.retry_timeout)
            return True
        except NoNodeError:
            return False
        except (KazooException, KazooTimeoutError) as exc:
            raise CoordinationError(f"cannot delete {path}: {exc!r}") from exc

    def request_switchover(self, req: SwitchoverRequest) -> None:
        self._put(self.paths.switchover, encode(req))

    def request_failover(self, req: FailoverRequest) -> None:
        self._put(self.paths.failover, encode(req))

    def set_pause(self, rec: PauseRecord) -> None:
        self._put(self.paths.pause, encode(rec))

    def clear_pause(self) -> bool:
        return self._remove(self.paths.pause)

    def approvals(self) -> list[str]:
        """Fingerprints of delete sets an operator approved."""
        try:
            return list(
                self.client.get_children_async(self.paths.approvals).get(timeout=self.settings.retry_timeout)
            )
        except NoNodeError:
            return []
        except (KazooException, KazooTimeoutError) as exc:
            raise CoordinationError(f"cannot read approvals: {exc!r}") from exc

    def approve(self, fingerprint: str, by: str) -> None:
        self._put(f"{self.paths.approvals}/{fingerprint}", encode(PauseRecord(by=by, at=time.time())))
