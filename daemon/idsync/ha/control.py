"""Operator commands on the cluster (status, switchover, failover, pause, resume).

They work from any host that reaches ZooKeeper, like patronictl: a short-lived session that reads
and writes request znodes, then watches the outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from idsync.ha import requests
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
    if need_healthy and not healthy_in(view, node, time.time()):
        why = "no cycle completed recently (hung?)" if member.healthy else member.reason or "no reason given"
        raise ControlError(f"node {node!r} is not healthy: {why}")
    return member


def healthy(member: MemberRecord, now: float) -> bool:
    """Healthy as the member says, and still cycling by its own clock (prefer `healthy_in`)."""
    return member.healthy and not member.stale(now)


def healthy_in(view: ClusterView, node: str, now: float) -> bool:
    """Healthy as the member says, and still cycling (a hung process keeps its znodes), judged on
    ZooKeeper's modification times of the member records rather than on another host's clock."""
    member = view.members.get(node)
    return member is not None and member.healthy and not view.member_stale(node, now)


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
    elif not any(healthy_in(view, n, time.time()) for n in view.members if n != old):
        raise ControlError("switchover is not possible: no healthy staging node to take over")
    started = time.monotonic()
    req = SwitchoverRequest(to=to or "", by=by, at=time.time(), leader=old, epoch=view.leader.epoch)
    try:
        requests.submit_switchover(coord, req, view)
    except requests.RequestRejected as exc:
        raise ControlError(f"switchover refused: {exc}") from exc
    return _await_new_leader(coord, old, view.leader.epoch, to, started, wait, sleep, request=req)


def failover(
    coord: Coordinator, to: str, *, by: str, wait: float, sleep: Callable[[float], None] = time.sleep
) -> HandoverResult:
    """Make `to` leader when there is no healthy leader (it need not pass the health checks)."""
    view = coord.read()
    if view.leader is not None:
        leader = view.members.get(view.leader.node)
        if leader is not None and healthy_in(view, view.leader.node, time.time()):
            raise ControlError(
                f"leader {view.leader.node} is healthy: "
                f"use `idsync switchover --to {to}` for a planned hand-over"
            )
        if view.leader.node == to:
            raise ControlError(f"{to} is already the leader")
    _candidate(view, to, need_healthy=False)
    old = view.leader.node if view.leader else ""
    started = time.monotonic()
    coord.request_failover(FailoverRequest(to=to, by=by, at=time.time(), epoch=view.epoch.epoch))
    return _await_new_leader(coord, old, view.epoch.epoch, to, started, wait, sleep)


def _await_new_leader(
    coord: Coordinator,
    old: str,
    old_epoch: int,
    to: str | None,
    started: float,
    wait: float,
    sleep: Callable[[float], None],
    *,
    request: SwitchoverRequest | None = None,
) -> HandoverResult:
    """Wait for a leader at a higher epoch; the wrong one (the fallback took over) is an error."""
    deadline = started + wait
    while time.monotonic() < deadline:
        coord.wake.clear()
        view = coord.read()
        leader = view.leader
        if leader is not None and leader.epoch > old_epoch:
            if to is None or leader.node == to:
                return HandoverResult(old, leader.node, leader.epoch, time.monotonic() - started)
            raise ControlError(
                f"{to} did not take over: {leader.node} leads at epoch {leader.epoch} instead "
                f"({to} did not complete the hand-over in time; see its log)"
            )
        if request is not None and leader is not None and view.switchover != request:
            raise ControlError(
                f"the switchover request was dropped: {leader.node} still leads at epoch {leader.epoch}"
                " (it was replaced, or its target stopped being a member)"
            )
        coord.wake.wait(timeout=0.05)
    raise ControlError(
        f"no new leader after {wait:.0f}s (the request stays in place; `idsync status` shows progress)"
    )


@dataclass(frozen=True)
class PauseResult:
    acknowledged_by: str  # the leader that acknowledged, '' when there was no leader
    epoch: int


def pause(
    coord: Coordinator, *, by: str, reason: str = "", wait: float = 30.0, poll: float = 0.05
) -> PauseResult:
    """Pause exports and return once the leader has acknowledged: no write starts after that.

    The leader acknowledges only in a cycle that decided not to export, after its export slice
    has ended; with no leader there is nobody to acknowledge (a node promoted meanwhile reads the
    pause before its first export).
    """
    try:
        requests.set_pause(coord, PauseRecord(by=by, at=time.time(), reason=reason))
    except requests.RequestRejected as exc:
        raise ControlError(str(exc)) from exc
    deadline = time.monotonic() + wait
    while True:
        view = coord.read()
        rec, leader = view.pause, view.leader
        if rec is None:
            raise ControlError("the pause was removed (`idsync resume`?) before the leader acknowledged it")
        if leader is None:
            return PauseResult("", view.epoch.epoch)
        if (rec.ack_node, rec.ack_epoch) == (leader.node, leader.epoch):
            return PauseResult(leader.node, leader.epoch)
        if time.monotonic() >= deadline:
            raise ControlError(
                f"pause recorded, but leader {leader.node} (epoch {leader.epoch}) has not acknowledged it "
                f"within {wait:.0f}s: it may still be exporting (hung?); `idsync status` shows it"
            )
        coord.wake.wait(timeout=poll)


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
        ack = (
            f" (acknowledged by {view.pause.ack_node} at epoch {view.pause.ack_epoch})"
            if view.pause.ack_node
            else ""
        )
        lines.append(f"PAUSED by {view.pause.by or '?'}{ack} {view.pause.reason}".rstrip())
    if view.switchover:
        sw = view.switchover
        lines.append(
            f"switchover requested to {sw.to or 'any healthy node'} by {sw.by}"
            f" (for leader {sw.leader} at epoch {sw.epoch})"
        )
    if view.failover:
        lines.append(f"failover requested to {view.failover.to} by {view.failover.by}")
    if view.rules_version:
        lines[0] += f"  rules v{view.rules_version}"
    if view.trial_node:
        lines.append(f"rules trial {view.trial_hash[:12]} on {view.trial_node} (`idsync rules impact` there)")
    header = f"{'NODE':<16} {'ROLE':<8} {'HEALTH':<8} {'LAST CYCLE':>10} {'PENDING':>8} {'RULES':>6}  NOTE"
    lines.append(header)
    for name, m in sorted(view.members.items()):
        role = "leader" if view.leader and view.leader.node == name else m.role
        age = f"{now - m.last_cycle_ok:.0f}s ago" if m.last_cycle_ok else "never"
        pending = sum(m.pending.values())
        health = "ok" if healthy_in(view, name, now) else "trial" if m.trial else "UNHEALTHY"
        rules = f"v{m.rules_version}" if m.rules_version else "-"
        row = f"{name:<16} {role:<8} {health:<8} {age:>10} {pending:>8} {rules:>6}  {m.reason}"
        lines.append(row.rstrip())
    if not view.members:
        lines.append("(no running members)")
    for name, m in sorted(view.members.items()):
        if m.privileged:
            lines.append(
                f"PRIVILEGED USERS: {m.privileged} quarantined on {name}: Graph refused to change or delete"
                " a user holding a directory role (`idsync quarantine list --phase export`)"
            )
    return "\n".join(lines)
