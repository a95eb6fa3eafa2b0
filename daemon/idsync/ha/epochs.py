"""Epochs that only go up, even when ZooKeeper loses its data.

The `epoch` znode is the fencing counter, but it is not the only record of it: every store keeps
the highest epoch it ran under (the fence row), and every member publishes that number. After a
ZooKeeper data loss (a wiped data directory, a restored old snapshot) the znode restarts low;
a node that then promoted at znode + 1 would sit below the stores' epochs, every claim would be
refused and the cluster would never export. So a promotion takes
max(znode epoch, own store's highest epoch, every member's published epoch) + 1, and a missing
epoch znode is re-created at that floor.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

import structlog
from kazoo.exceptions import KazooException, NodeExistsError
from kazoo.handlers.threading import KazooTimeoutError

from idsync.ha.records import ClusterView, EpochRecord, encode

if TYPE_CHECKING:
    from idsync.ha.zk import Coordinator

log = structlog.get_logger(__name__)


def floor(view: ClusterView, seen_epoch: int) -> int:
    """The highest epoch anyone can show: the znode, our store, the members' stores."""
    members = max((max(m.seen_epoch, m.epoch) for m in view.members.values()), default=0)
    return max(view.epoch.epoch, seen_epoch, members)


def with_floor(view: ClusterView, seen_epoch: int) -> ClusterView:
    """The view a candidate elects from: its epoch raised to the floor, its CAS version unchanged,
    so that `try_acquire` takes floor + 1 and still fails if anyone changed the znode meanwhile."""
    top = floor(view, seen_epoch)
    if top <= view.epoch.epoch:
        return view
    log.warning("ha.epoch_floor", znode=view.epoch.epoch, floor=top)
    return replace(view, epoch=replace(view.epoch, epoch=top))


def repair(coord: Coordinator, view: ClusterView, seen_epoch: int) -> str:
    """Re-create the cluster's structure when ZooKeeper lost it (no `epoch` znode); '' if intact.

    Every node may do this; the create is atomic, so the first one wins and the others find it.
    The znodes get the cluster's ACL (the Coordinator's default ACL).
    """
    if view.epoch_version >= 0:
        return ""
    top = floor(view, seen_epoch)
    timeout = coord.settings.retry_timeout
    try:
        for path in (coord.paths.members, coord.paths.approvals):
            coord.client.ensure_path(path)
        coord.client.create_async(
            coord.paths.epoch, encode(EpochRecord(epoch=top, node="", at=time.time()))
        ).get(timeout=timeout)
    except NodeExistsError:
        return ""
    except (KazooException, KazooTimeoutError) as exc:
        log.warning("ha.epoch_restore_failed", error=repr(exc))
        return ""
    log.warning("ha.epoch_restored", epoch=top)
    return f"ZooKeeper had lost the cluster's epoch: restored it at {top} (the highest any store saw)"
