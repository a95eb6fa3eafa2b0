"""Operator commands on the cluster (status, switchover, failover, pause, resume).

They work from any host that reaches ZooKeeper, like patronictl: a short-lived session that reads
and writes request znodes, then watches the outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from idsync.ha.records import ClusterView, FailoverRequest, MemberRecord, PauseRecord, SwitchoverRequest
from idsync.ha.zk import CoordinationError, Coordinator


class ControlError(Exception):
    """The request cannot be carried out; the message says why and what to do instead."""


@dataclass(frozen=True)
class HandoverResult:
    old: str
    new: str
    epoch: int
    seconds: float


def _candidate(view: ClusterView, node: str, *, need_healthy: bool) -> MemberRecord:
    member = view.members.get(node)
    if member is None:
        known = ", ".join(sorted(view.members)) or "none"
        raise ControlError(f"unknown node {node!r}: it is not a running member (members: {known})")
    if need_healthy and not healthy(member, time.time()):
        why = "no cycle completed recently (hung?)" if member.healthy else member.reason or "no reason given"
        raise ControlError(f"node {node!r} is not healthy: {why}")
    return member


def healthy(member: MemberRecord, now: float) -> bool:
    """Healthy as the member says, and still cycling (a hung process keeps its znodes)."""
    return member.healthy and not member.stale(now)


def switchover(
    coord: Coordinator, to: str | None, *, by: str, wait: float, sleep: Callable[[float], None] = time.sleep
) -> HandoverResult:
    """Ask the leader to hand over (to `to`, or to any healthy node) and wait for the new leader."""
    view = coord.read()
    if view.leader is None:
        raise ControlError("there is no leader to switch over from: use `idsync failover --to NODE`")
    old = view.leader.node
    if to is not None:
        if to == old:
            raise ControlError(f"{to} is already the leader")
        _candidate(view, to, need_healthy=True)
    elif not any(healthy(m, time.time()) for n, m in view.members.items() if n != old):
        raise ControlError("switchover is not possible: no healthy staging node to take over")
    started = time.monotonic()
    coord.request_switchover(SwitchoverRequest(to=to or "", by=by, at=time.time(), leader=old))
    return _await_new_leader(coord, old, to, started, wait, sleep)


def failover(
    coord: Coordinator, to: str, *, by: str, wait: float, sleep: Callable[[float], None] = time.sleep
) -> HandoverResult:
    """Make `to` leader when there is no healthy leader (it need not pass the health checks)."""
    view = coord.read()
    if view.leader is not None:
        leader = view.members.get(view.leader.node)
        if leader is not None and healthy(leader, time.time()):
            raise ControlError(
                f"leader {view.leader.node} is healthy: "
                f"use `idsync switchover --to {to}` for a planned hand-over"
            )
        if view.leader.node == to:
            raise ControlError(f"{to} is already the leader")
    _candidate(view, to, need_healthy=False)
    old = view.leader.node if view.leader else ""
    started = time.monotonic()
    coord.request_failover(FailoverRequest(to=to, by=by, at=time.time()))
    return _await_new_leader(coord, old, to, started, wait, sleep)


def _await_new_leader(
    coord: Coordinator,
    old: str,
    to: str | None,
    started: float,
    wait: float,
    sleep: Callable[[float], None],
) -> HandoverResult:
    deadline = started + wait
    while time.monotonic() < deadline:
        coord.wake.clear()
        view = coord.read()
        leader = view.leader
        if leader is not None and leader.node != old and (to is None or leader.node == to):
            return HandoverResult(old, leader.node, leader.epoch, time.monotonic() - started)
        coord.wake.wait(timeout=0.05)
    raise ControlError(
        f"no new leader after {wait:.0f}s (the request stays in place; `idsync status` shows progress)"
    )


def pause(coord: Coordinator, *, by: str, reason: str = "") -> None:
    coord.set_pause(PauseRecord(by=by, at=time.time(), reason=reason))


def resume(coord: Coordinator) -> bool:
    return coord.clear_pause()


def status(coord: Coordinator) -> ClusterView:
    try:
        return coord.read()
    except CoordinationError as exc:
        raise ControlError(str(exc)) from exc


def render_status(view: ClusterView, cluster: str, now: float | None = None) -> str:
    """The human table of `idsync status`."""
    now = now if now is not None else time.time()
    lines = [f"cluster {cluster}  epoch {view.epoch.epoch}"]
    if view.leader:
        lines[0] += f"  leader {view.leader.node}"
    else:
        lines[0] += "  NO LEADER"
    if view.pause:
        lines.append(f"PAUSED by {view.pause.by or '?'} {view.pause.reason}".rstrip())
    if view.switchover:
        lines.append(
            f"switchover requested to {view.switchover.to or 'any healthy node'} by {view.switchover.by}"
        )
    if view.failover:
        lines.append(f"failover requested to {view.failover.to} by {view.failover.by}")
    header = f"{'NODE':<16} {'ROLE':<8} {'HEALTH':<8} {'LAST CYCLE':>10} {'PENDING':>8}  NOTE"
    lines.append(header)
    for name, m in sorted(view.members.items()):
        role = "leader" if view.leader and view.leader.node == name else m.role
        age = f"{now - m.last_cycle_ok:.0f}s ago" if m.last_cycle_ok else "never"
        pending = sum(m.pending.values())
        health = "ok" if healthy(m, now) else "UNHEALTHY"
        row = f"{name:<16} {role:<8} {health:<8} {age:>10} {pending:>8}  {m.reason}"
        lines.append(row.rstrip())
    if not view.members:
        lines.append("(no running members)")
    return "\n".join(lines)
