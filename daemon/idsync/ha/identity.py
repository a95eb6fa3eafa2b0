"""One live process per node name: the member znode is the proof, ZooKeeper's session liveness
the judge.

A second `idsync run` with the same node name would overwrite the first's member record and
compete as the same node. At start-up a node therefore looks at `members/<node>`: if it exists
and belongs to another session, it waits for ZooKeeper to expire that session (a crashed
predecessor: at most its session timeout) and refuses to start if the session stays alive.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import structlog
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError

from idsync.ha.records import MemberRecord, decode

if TYPE_CHECKING:
    from idsync.ha.zk import Coordinator

log = structlog.get_logger(__name__)


class NodeInUse(Exception):
    """Another live process runs as this node; the message names node, where and how to stop it."""

    def __init__(self, node: str, cluster_path: str, holder: str) -> None:
        self.node = node
        self.holder = holder
        super().__init__(
            f"node {node!r} is already running in cluster {cluster_path} ({holder}); "
            "stop that process, or give this one another [node] name"
        )


def describe(rec: MemberRecord | None, session: int) -> str:
    """Who holds a member znode, for the error message."""
    parts = []
    if rec is not None:
        if rec.host or rec.pid:
            parts.append(f"pid {rec.pid or '?'} on {rec.host or '?'}")
        if rec.admin_url:
            parts.append(f"admin {rec.admin_url}")
        parts.append(f"role {rec.role}")
    parts.append(f"ZooKeeper session 0x{session:x}")
    return ", ".join(parts)


def claim_member(coord: Coordinator, wait: float) -> None:
    """Return once no other live session holds our member znode; raise NodeInUse otherwise.

    `wait` should be the session timeout: a predecessor that crashed is expired within it.
    """
    path = coord.paths.member(coord.node)
    deadline = time.monotonic() + wait
    gone = threading.Event()

    def changed(event: Any) -> None:
        gone.set()

    logged = False
    while True:
        gone.clear()
        try:
            raw, stat = coord.client.get_async(path, watch=changed).get(timeout=coord.settings.retry_timeout)
        except NoNodeError:
            return
        except (KazooException, KazooTimeoutError) as exc:
            from idsync.ha.zk import CoordinationError

            raise CoordinationError(f"ZooKeeper read of {path} failed: {exc!r}") from exc
        owner = int(stat.ephemeralOwner)
        if owner == 0 or owner == coord.session_id:
            return
        left = deadline - time.monotonic()
        holder = describe(decode(MemberRecord, raw), owner)
        if left <= 0:
            raise NodeInUse(coord.node, coord.paths.base, holder)
        if not logged:
            log.warning("ha.member_taken", node=coord.node, holder=holder, wait=round(left, 1))
            logged = True
        gone.wait(min(left, 1.0))
