"""The leadership history: one durable entry per change of leader, like `patronictl history`.

Entries are persistent sequential znodes under /idsync/<cluster>/history. The promoting node
writes its entry inside the very transaction that creates the leader znode and bumps the epoch
(`Coordinator.try_acquire`), so the history can neither miss a promotion nor record one that did
not happen. The reason is read from the records the election saw: a failover request for the
winner, a switchover request, the previous leader's release record, or none of them (lost).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError

from idsync.ha.coordination import CoordinationError
from idsync.ha.records import ClusterView, LeaderRecord, decode, encode

if TYPE_CHECKING:
    from kazoo.client import KazooClient, TransactionRequest

PREFIX = "entry-"
KEEP = 1000  # entries kept; the promoting node prunes older ones after it won

# kind: what made leadership change hands
FIRST = "first"  # the cluster's first leader
FAILOVER = "failover"  # `idsync failover --to`
SWITCHOVER = "switchover"  # `idsync switchover`
RELEASED = "released"  # the previous leader handed over by itself (stop, unhealthy)
LOST = "lost"  # no release recorded: crash, session expiry, demotion


@dataclass(frozen=True)
class HistoryEntry:
    """One change of leadership: `old` -> `node` at `epoch`, and why."""

    epoch: int
    node: str
    old: str = ""  # "" for the first leader
    kind: str = LOST
    reason: str = ""  # the sentence shown to operators
    by: str = ""  # who asked (switchover, failover), "" when nobody did
    at: float = 0.0  # Unix time of the promotion (wall clock, for display only)

    def when(self) -> str:
        return datetime.fromtimestamp(self.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "time": self.when()}


def path(base: str) -> str:
    """The history znode of the cluster whose base path is `base` (/idsync/<cluster>)."""
    return f"{base}/history"


def entry_for(view: ClusterView, record: LeaderRecord, now: float | None = None) -> HistoryEntry:
    """The entry a node promoted to `record` writes, judged from the view it was elected on."""
    at = time.time() if now is None else now
    old = view.epoch.node
    rel = view.release
    clean = rel is not None and rel.epoch == view.epoch.epoch and rel.node == old
    fo, sw = view.failover, view.switchover
    if fo is not None and fo.to == record.node:
        by = fo.by
        reason = f"failover to {record.node} by {by or 'an operator'}"
        return HistoryEntry(record.epoch, record.node, old, FAILOVER, reason, by, at)
    if sw is not None and (clean or not old):
        by = sw.by
        reason = f"switchover by {by or 'an operator'}"
        return HistoryEntry(record.epoch, record.node, old, SWITCHOVER, reason, by, at)
    if not old and view.epoch.epoch == 0:
        return HistoryEntry(record.epoch, record.node, "", FIRST, "first leader of the cluster", "", at)
    if clean:
        assert rel is not None
        said = rel.reason or "no reason given"
        reason = "released on stop" if said == "shutdown" else f"released by {old}: {said}"
        return HistoryEntry(record.epoch, record.node, old, RELEASED, reason, "", at)
    reason = f"leader {old} lost (no release recorded)" if old else "leader lost (no release recorded)"
    return HistoryEntry(record.epoch, record.node, old, LOST, reason, "", at)


def ensure(client: KazooClient, base: str, timeout: float) -> None:
    """Create the history znode if missing (after a ZooKeeper data loss, or an older cluster)."""
    where = path(base)
    try:
        if client.exists_async(where).get(timeout=timeout) is None:
            client.create_async(where, b"").get(timeout=timeout)
    except NodeExistsError:
        return  # another node created it meanwhile
    except (KazooException, KazooTimeoutError) as exc:
        raise CoordinationError(f"cannot create {where}: {exc!r}") from exc


def stage(
    tx: TransactionRequest,
    client: KazooClient,
    base: str,
    view: ClusterView,
    record: LeaderRecord,
    timeout: float,
) -> None:
    """Add the promotion's history entry to the election transaction `tx`."""
    ensure(client, base, timeout)
    tx.create(f"{path(base)}/{PREFIX}", encode(entry_for(view, record)), sequence=True)


def prune(client: KazooClient, base: str, timeout: float, keep: int | None = None) -> int:
    """Delete all but the newest `keep` entries; returns how many went. Best effort: a failure
    leaves them for the next promotion (an entry is history, not state anything depends on)."""
    where = path(base)
    try:
        names = sorted(
            n for n in client.get_children_async(where).get(timeout=timeout) if n.startswith(PREFIX)
        )
        old = names[: max(0, len(names) - (KEEP if keep is None else keep))]
        replies = [client.delete_async(f"{where}/{n}") for n in old]
        gone = 0
        for reply in replies:
            try:
                reply.get(timeout=timeout)
                gone += 1
            except NoNodeError:
                continue  # another node pruned it meanwhile
        return gone
    except (KazooException, KazooTimeoutError):
        return 0


def read(client: KazooClient, base: str, timeout: float, limit: int | None = None) -> list[HistoryEntry]:
    """The entries, oldest first (the last `limit` ones when given)."""
    where = path(base)
    try:
        names = sorted(
            n for n in client.get_children_async(where).get(timeout=timeout) if n.startswith(PREFIX)
        )
    except NoNodeError:
        return []
    except (KazooException, KazooTimeoutError) as exc:
        raise CoordinationError(f"ZooKeeper read of {where} failed: {exc!r}") from exc
    if limit is not None:
        names = names[-limit:] if limit > 0 else []
    # One request per entry, sent together: the replies come back in one round trip.
    pending = [(n, client.get_async(f"{where}/{n}")) for n in names]
    out: list[HistoryEntry] = []
    for _, reply in pending:
        try:
            raw, _stat = reply.get(timeout=timeout)
        except NoNodeError:
            continue  # pruned meanwhile
        except (KazooException, KazooTimeoutError) as exc:
            raise CoordinationError(f"ZooKeeper read of {where} failed: {exc!r}") from exc
        entry = decode(HistoryEntry, raw)
        if entry is not None:
            out.append(entry)
    return out


def render(entries: list[HistoryEntry]) -> str:
    """The table of `idsync history`."""
    lines = [f"{'EPOCH':>5}  {'TIME':<23}  {'OLD':<16} {'NEW':<16} REASON"]
    for e in entries:
        lines.append(f"{e.epoch:>5}  {e.when():<23}  {e.old or '-':<16} {e.node:<16} {e.reason}".rstrip())
    if not entries:
        lines.append("(no leadership changes recorded)")
    return "\n".join(lines)
