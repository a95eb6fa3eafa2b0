"""What idsync keeps in ZooKeeper, as frozen records with their JSON form."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

import orjson

T = TypeVar("T")


def encode(record: object) -> bytes:
    return orjson.dumps(asdict(record))  # type: ignore[call-overload]


def decode(cls: type[T], raw: bytes | None) -> T | None:
    """Parse a znode's JSON into `cls`, ignoring unknown keys (newer writers) and bad data."""
    if not raw:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError:
        return None


@dataclass(frozen=True)
class LeaderRecord:
    """The ephemeral `leader` znode: who leads, at which epoch, in which ZooKeeper session."""

    node: str
    epoch: int
    session: int
    since: float = field(default_factory=time.time)


@dataclass(frozen=True)
class EpochRecord:
    """The persistent `epoch` znode: the fencing counter and the leader that took it."""

    epoch: int = 0
    node: str = ""
    rules_hash: str = ""
    at: float = 0.0


@dataclass(frozen=True)
class ReleaseRecord:
    """Written by a leader that handed over cleanly: its successor needs no lock-delay."""

    node: str
    epoch: int
    at: float
    reason: str = ""


@dataclass(frozen=True)
class MemberRecord:
    """The ephemeral `members/<node>` znode: what this node says about itself."""

    node: str
    role: str  # leader | staging | starting | stopping
    healthy: bool = False
    reason: str = ""  # why not healthy
    epoch: int = 0
    rules_hash: str = ""
    last_cycle_ok: float = 0.0
    last_cycle: float = 0.0
    target_caught_up: bool = False
    pending: dict[str, int] = field(default_factory=dict)
    # Users quarantined because Graph refused to change or delete them (a directory role):
    # `idsync status` names them on every host, like the deletion guard.
    privileged: int = 0
    admin_url: str = ""
    version: str = ""
    interval: float = 0.0  # seconds between this node's cycles
    updated: float = field(default_factory=time.time)
    # The highest epoch this node's store has seen: a promotion after ZooKeeper lost its data
    # takes an epoch above every member's (ha/epochs.py).
    seen_epoch: int = 0
    host: str = ""  # where the process runs, for "node already running" errors
    pid: int = 0
    rules_version: int = 0  # the cluster rules version this node runs (ha/rules.py)
    trial: bool = False  # running the cluster's rules trial: reports, never leads

    def stale(self, now: float) -> bool:
        """True when the node has not completed a cycle for much longer than its interval (hung)."""
        return bool(self.interval) and now - self.last_cycle > 3 * self.interval + 5


@dataclass(frozen=True)
class SwitchoverRequest:
    """`switchover`: the leader hands over to `to` (or any healthy node when empty)."""

    to: str = ""
    by: str = ""
    at: float = 0.0  # shown to operators only: staleness is never judged by comparing wall clocks
    leader: str = ""  # the leader the request is for; another leader ignores and clears it
    epoch: int = 0  # ... at this epoch


@dataclass(frozen=True)
class FailoverRequest:
    """`failover`: make `to` lead although it may not pass the automatic health checks."""

    to: str
    by: str = ""
    at: float = 0.0
    epoch: int = 0  # the cluster's epoch when asked; a leader of a later epoch ignores it (0: any)


@dataclass(frozen=True)
class PauseRecord:
    """`pause`: exports held cluster-wide; the leader acknowledges in the same znode."""

    by: str = ""
    at: float = 0.0
    reason: str = ""
    # Written by the leader once no write of its epoch can start any more (ha/requests.py).
    ack_node: str = ""
    ack_epoch: int = 0


@dataclass(frozen=True)
class ClusterView:
    """One consistent-enough read of the cluster's znodes."""

    leader: LeaderRecord | None
    epoch: EpochRecord
    epoch_version: int
    members: dict[str, MemberRecord]
    switchover: SwitchoverRequest | None
    failover: FailoverRequest | None
    pause: PauseRecord | None
    release: ReleaseRecord | None
    # When ZooKeeper last saw each member record written (its own clock, seconds); empty when
    # unknown (the in-memory fake), and then the members' own wall-clock stamps are used.
    member_mtime: dict[str, float] = field(default_factory=dict)
    # The cluster's rules (ha/rules.py): the current version and hash, and the trial if any.
    rules_version: int = 0
    rules_hash: str = ""
    trial_node: str = ""
    trial_hash: str = ""

    def member_stale(self, name: str, now: float) -> bool:
        """True when member `name` has not written its record for much longer than its interval
        (a hung process keeps its session and znodes). Judged on ZooKeeper's modification times,
        against the freshest member record, so no two hosts' wall clocks are compared."""
        member = self.members.get(name)
        if member is None:
            return True
        t = self.member_mtime.get(name)
        if t is None or not self.member_mtime:
            return member.stale(now)
        newest = max(self.member_mtime.values())
        return bool(member.interval) and newest - t > 3 * member.interval + 5

    def as_dict(self) -> dict[str, Any]:
        return {
            "leader": asdict(self.leader) if self.leader else None,
            "epoch": self.epoch.epoch,
            "members": {k: asdict(v) for k, v in sorted(self.members.items())},
            "switchover": asdict(self.switchover) if self.switchover else None,
            "failover": asdict(self.failover) if self.failover else None,
            "paused": asdict(self.pause) if self.pause else None,
            "rules": {"version": self.rules_version, "hash": self.rules_hash},
            "trial": {"node": self.trial_node, "hash": self.trial_hash} if self.trial_node else None,
        }
