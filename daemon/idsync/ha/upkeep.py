"""What a node does with ZooKeeper after its HA decision, beyond the loop's own protocol:
restore the cluster's structure after a data loss, acknowledge a pause, clear a switchover
request aimed at an old leader. Only against real ZooKeeper (the fake has no such znodes).
"""

from __future__ import annotations

from typing import Any

import structlog

from idsync.ha import epochs, requests
from idsync.ha.coordination import CoordinationError
from idsync.ha.zk import Coordinator

log = structlog.get_logger(__name__)


def after_cycle(ha: Any, *, export: bool, seen_epoch: int) -> str:
    """Run after `HaLoop.run_cycle()` in the same thread, before any export of this cycle.

    `export` is the cycle's decision: a leader that decided not to export has no write running
    (the export slice follows the decision), so it may acknowledge a pause. Returns what it did.
    """
    coord = ha.coord
    view = ha.last_view
    if not isinstance(coord, Coordinator) or view is None or not coord.connected:
        return ""
    done = []
    try:
        restored = epochs.repair(coord, view, seen_epoch)
        if restored:
            done.append(restored)
        tidied = requests.tidy(coord, view, ha.leader, holding=not export)
        if tidied:
            done.append(tidied)
    except CoordinationError as exc:
        log.warning("ha.upkeep_failed", error=str(exc))
    return "; ".join(done)
