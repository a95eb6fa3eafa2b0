"""The cluster's rules in ZooKeeper: persistent znodes under /idsync/<cluster>/rules.

    rules/current            {version, hash, by, at}         which version every node runs
    rules/versions/v-N       {version, text, hash, by, at, note}
    rules/trial              {node, text, hash, base, by, at} candidate rules on one standby
    rules/trial-report       what the trial node saw under them (pending counts, guard)
    rules/history/entry-N    one step each (seed, trial, abort, apply, rollback, load-failed)

Every change of `current` is one transaction that checks the version of `current` it was based
on, creates the version znode and its history entry: two concurrent applies cannot both win, and
no version exists without its history. Znodes get the cluster's ACL through the session's
`default_acl` (ha/acl.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError

from idsync.ha import rules as r
from idsync.ha.coordination import CoordinationError
from idsync.ha.records import SwitchoverRequest, decode, encode

if TYPE_CHECKING:
    from idsync.ha.zk import Coordinator

log = structlog.get_logger(__name__)
T = TypeVar("T")


class RulesConflict(Exception):
    """The rules records changed under the request (another apply, a trial started or ended)."""


def base(coord: Coordinator) -> str:
    return f"{coord.paths.base}/rules"


def _paths(coord: Coordinator) -> dict[str, str]:
    b = base(coord)
    return {
        "current": f"{b}/current",
        "versions": f"{b}/versions",
        "trial": f"{b}/trial",
        "report": f"{b}/trial-report",
        "history": f"{b}/history",
    }


def version_path(coord: Coordinator, version: int) -> str:
    return f"{base(coord)}/versions/v-{version:010d}"


def _wait(coord: Coordinator, async_result: Any, path: str) -> Any:
    try:
        return async_result.get(timeout=coord.settings.retry_timeout)
    except NoNodeError:
        raise
    except (KazooException, KazooTimeoutError) as exc:
        raise CoordinationError(f"ZooKeeper request on {path} failed: {exc!r}") from exc


def _get(coord: Coordinator, path: str) -> tuple[bytes | None, Any]:
    try:
        data, stat = _wait(coord, coord.client.get_async(path), path)
        return data, stat
    except NoNodeError:
        return None, None


def _record(coord: Coordinator, cls: type[T], path: str) -> T | None:
    return decode(cls, _get(coord, path)[0])


def ensure(coord: Coordinator) -> None:
    """Create the rules znodes' parents (a daemon does this; the CLI never creates structure)."""
    p = _paths(coord)
    try:
        for path in (p["versions"], p["history"]):
            coord.client.ensure_path(path)
    except (KazooException, KazooTimeoutError) as exc:
        raise CoordinationError(f"cannot create {base(coord)}: {exc!r}") from exc


def read(coord: Coordinator) -> r.ClusterRules:
    """The current version (with its text), the trial and its report."""
    p = _paths(coord)
    cur = _record(coord, r.RulesCurrent, p["current"])
    current = version(coord, cur.version) if cur is not None else None
    return r.ClusterRules(
        current=current,
        trial=_record(coord, r.RulesTrial, p["trial"]),
        report=_record(coord, r.TrialReport, p["report"]),
    )


def read_summary(coord: Coordinator) -> tuple[r.RulesCurrent | None, r.RulesTrial | None]:
    """What the HA loop needs each cycle: the current version's number and hash, and the trial."""
    p = _paths(coord)
    return _record(coord, r.RulesCurrent, p["current"]), _record(coord, r.RulesTrial, p["trial"])


def version(coord: Coordinator, number: int) -> r.RulesVersion | None:
    return _record(coord, r.RulesVersion, version_path(coord, number))


def versions(coord: Coordinator) -> list[int]:
    p = _paths(coord)
    try:
        names = _wait(coord, coord.client.get_children_async(p["versions"]), p["versions"])
    except NoNodeError:
        return []
    return sorted(int(n[2:]) for n in names if n.startswith("v-") and n[2:].isdigit())


def history(coord: Coordinator, limit: int | None = None) -> list[r.RulesEvent]:
    p = _paths(coord)
    try:
        names = sorted(n for n in _wait(coord, coord.client.get_children_async(p["history"]), p["history"]))
    except NoNodeError:
        return []
    if limit is not None:
        names = names[-limit:] if limit > 0 else []
    replies = [coord.client.get_async(f"{p['history']}/{n}") for n in names]
    out = []
    for reply in replies:
        try:
            raw, _ = _wait(coord, reply, p["history"])
        except NoNodeError:
            continue
        ev = decode(r.RulesEvent, raw)
        if ev is not None:
            out.append(ev)
    return out


def record_event(coord: Coordinator, event: r.RulesEvent) -> None:
    """A history entry outside a transaction (trial start, load failures)."""
    p = _paths(coord)
    _wait(
        coord, coord.client.create_async(f"{p['history']}/entry-", encode(event), sequence=True), p["history"]
    )
    log.info(
        "rules.history", step=event.step, version=event.version, node=event.node, by=event.by, note=event.note
    )


def _commit(coord: Coordinator, tx: Any, what: str) -> None:
    try:
        results = tx.commit_async().get(timeout=coord.settings.retry_timeout)
    except (KazooException, KazooTimeoutError) as exc:
        raise CoordinationError(f"{what} failed: {exc!r}") from exc
    errors = [x for x in results if isinstance(x, Exception) and type(x).__name__ != "RolledBackError"]
    if errors:
        if any(isinstance(x, BadVersionError | NodeExistsError | NoNodeError) for x in errors):
            raise RulesConflict(
                f"{what}: the cluster's rules changed meanwhile; look again (`idsync rules show`)"
            )
        raise CoordinationError(f"{what} failed: {errors[0]!r}")


def seed(coord: Coordinator, text: str, *, by: str, note: str, step: str = r.SEED) -> r.RulesVersion | None:
    """Publish `text` as version 1 when the cluster has no version yet; None if one exists."""
    p = _paths(coord)
    ensure(coord)
    if _get(coord, p["current"])[1] is not None:
        return None
    now = time.time()
    v = r.RulesVersion(1, text, r.text_hash(text), by=by, at=now, note=note)
    tx = coord.client.transaction()
    tx.create(version_path(coord, 1), encode(v))
    tx.create(p["current"], encode(r.RulesCurrent(1, v.hash, by, now)))
    tx.create(
        f"{p['history']}/entry-",
        encode(r.RulesEvent(step, 1, v.hash, coord.node, by, now, note)),
        sequence=True,
    )
    try:
        _commit(coord, tx, "seeding the cluster's rules")
    except RulesConflict:
        return None  # another node seeded first
    log.info("rules.seeded", version=1, hash=v.hash[:12], by=by, note=note)
    return v


def publish(
    coord: Coordinator,
    text: str,
    *,
    by: str,
    step: str,
    note: str,
    trial: r.RulesTrial | None = None,
    switchover: SwitchoverRequest | None = None,
    epoch_version: int | None = None,
) -> r.RulesVersion:
    """Make `text` the next version, in one transaction based on the current version read here.

    With `trial`, the trial and its report are removed in the same transaction (the trial node
    then runs the new version, which is the same text). With `switchover` (and the epoch znode's
    version it was judged on), the switchover request is written in it too: the leader hands
    over in its next cycle, before it exports anything under the new rules.
    """
    p = _paths(coord)
    raw, stat = _get(coord, p["current"])
    cur = decode(r.RulesCurrent, raw)
    if stat is None or cur is None:
        raise RulesConflict("the cluster has no rules version yet (start a node first)")
    number = cur.version + 1
    now = time.time()
    v = r.RulesVersion(number, text, r.text_hash(text), by=by, at=now, note=note)
    tx = coord.client.transaction()
    tx.set_data(p["current"], encode(r.RulesCurrent(number, v.hash, by, now)), version=stat.version)
    tx.create(version_path(coord, number), encode(v))
    if trial is not None:
        _, tstat = _get(coord, p["trial"])
        if tstat is None:
            raise RulesConflict("the trial ended meanwhile (`idsync rules history`)")
        tx.delete(p["trial"], version=tstat.version)
        _, rstat = _get(coord, p["report"])
        if rstat is not None:
            tx.delete(p["report"])
    if switchover is not None:
        assert epoch_version is not None
        tx.check(coord.paths.epoch, epoch_version)
        _, sstat = _get(coord, coord.paths.switchover)
        if sstat is None:
            tx.create(coord.paths.switchover, encode(switchover))
        else:
            tx.set_data(coord.paths.switchover, encode(switchover), version=sstat.version)
    event = r.RulesEvent(step, number, v.hash, trial.node if trial else "", by, now, note)
    tx.create(f"{p['history']}/entry-", encode(event), sequence=True)
    _commit(coord, tx, f"publishing rules v{number}")
    log.info("rules.published", step=step, version=number, hash=v.hash[:12], by=by, note=note)
    return v


def start_trial(coord: Coordinator, trial: r.RulesTrial) -> None:
    """Place the trial (fails when one is already running) with its history entry."""
    p = _paths(coord)
    tx = coord.client.transaction()
    tx.create(p["trial"], encode(trial))
    _, rstat = _get(coord, p["report"])
    if rstat is not None:
        tx.delete(p["report"])
    note = f"from {trial.origin}" if trial.origin else ""
    ev = r.RulesEvent(r.TRIAL, trial.base, trial.hash, trial.node, trial.by, trial.at, note)
    tx.create(f"{p['history']}/entry-", encode(ev), sequence=True)
    _commit(coord, tx, f"starting a rules trial on {trial.node}")
    log.info("rules.trial_started", node=trial.node, hash=trial.hash[:12], by=trial.by, base=trial.base)


def abort_trial(coord: Coordinator, *, by: str) -> r.RulesTrial | None:
    """End the trial (its node returns to the current version); None when there was none."""
    p = _paths(coord)
    raw, stat = _get(coord, p["trial"])
    trial = decode(r.RulesTrial, raw)
    if stat is None or trial is None:
        return None
    tx = coord.client.transaction()
    tx.delete(p["trial"], version=stat.version)
    if _get(coord, p["report"])[1] is not None:
        tx.delete(p["report"])
    ev = r.RulesEvent(r.ABORT, trial.base, trial.hash, trial.node, by, time.time(), "")
    tx.create(f"{p['history']}/entry-", encode(ev), sequence=True)
    _commit(coord, tx, "aborting the rules trial")
    log.info("rules.trial_aborted", node=trial.node, hash=trial.hash[:12], by=by)
    return trial


def report_trial(coord: Coordinator, report: r.TrialReport) -> None:
    """The trial node's report; written only while the trial it is about is still in place."""
    p = _paths(coord)
    trial = _record(coord, r.RulesTrial, p["trial"])
    if trial is None or trial.node != report.node or trial.hash != report.hash:
        return
    data = encode(report)
    try:
        try:
            _wait(coord, coord.client.set_async(p["report"], data), p["report"])
        except NoNodeError:
            _wait(coord, coord.client.create_async(p["report"], data), p["report"])
    except NodeExistsError:
        _wait(coord, coord.client.set_async(p["report"], data), p["report"])
    except NoNodeError:
        pass
