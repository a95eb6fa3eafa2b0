"""`idsync rules`: the cluster's versioned sync rules, and changing them the staging-mode way.

    idsync rules show [VERSION|current|trial] [--json]
    idsync rules history [--json]
    idsync rules diff A [B]                     versions, `current` or `trial` (B: the trial, else current)
    idsync rules trial FILE --on NODE [--wait S] that standby runs FILE (a full sync), reports, never leads
    idsync rules impact [--format table|json|csv] on the trial node: rule diff, what would change, guard
    idsync rules apply [--switchover] [--fingerprint FP] [--wait S]
    idsync rules abort
    idsync rules rollback [VERSION] [--wait S]

Every step is recorded in the cluster's rules history with who did it (docs/operations.md,
"Changing the sync rules safely").
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from idsync.commands import _cluster

if TYPE_CHECKING:
    from idsync.config import Config
    from idsync.ha.rules import ClusterRules, RulesTrial, TrialReport
    from idsync.ha.zk import Coordinator

SAMPLES = 3


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rules_command", metavar="STEP", required=True)

    def add(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        _cluster.add_arguments(p)
        return p

    p = add("show", "print a version's rules text (default: the current version)")
    p.add_argument("version", nargs="?", default="current", help="a version number, current or trial")
    p.add_argument("--json", action="store_true", help="the record as JSON")
    p = add("history", "every rules step: seed, trial, abort, apply, rollback, load failures")
    p.add_argument("--json", action="store_true", help="as JSON")
    p = add("diff", "the difference between two versions (numbers, current or trial)")
    p.add_argument("a")
    p.add_argument("b", nargs="?", help="default: the trial if one runs, else the current version")
    p = add("trial", "run candidate rules on one standby: it reports what they would change, never leads")
    p.add_argument("file", type=Path)
    p.add_argument("--on", required=True, metavar="NODE", help="the standby that runs the trial")
    p.add_argument("--wait", type=float, default=0.0, help="seconds to wait for its first full sync")
    p = add("impact", "on the trial node: the rule diff, what the trial would change, the deletion guard")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--samples", type=int, default=SAMPLES, help=f"examples per attribute (default {SAMPLES})")
    p = add("apply", "make the trial the next version for every node")
    p.add_argument("--switchover", action="store_true", help="the trial node takes over and exports")
    p.add_argument("--fingerprint", help="what `rules impact` printed, for an impact above the threshold")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the nodes (default 60)")
    add("abort", "end the trial: its node returns to the current version")
    p = add("rollback", "make an earlier version the next version for every node")
    p.add_argument("version", nargs="?", type=int, help="default: the one before the current version")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the nodes (default 60)")


class RulesCommandError(Exception):
    """The step cannot be carried out; the message says why and what to do."""


def _config(args: argparse.Namespace) -> Config | None:
    from idsync.config import ConfigError, load_config

    try:
        return load_config(args.config)
    except ConfigError:
        return None


def run(args: argparse.Namespace) -> int:
    step = args.rules_command
    if step == "trial" and not args.file.is_file():
        print(f"idsync: {args.file} is not a readable file", file=sys.stderr)
        return 2

    def act(coord: Coordinator, cluster: str) -> int:
        from idsync.ha import rules_zk

        try:
            return int(STEPS[step](args, coord, cluster))
        except (RulesCommandError, rules_zk.RulesConflict) as exc:
            print(f"idsync: {exc}", file=sys.stderr)
            return 1

    return _cluster.with_coordinator(args, act)


# -- reading ---------------------------------------------------------------------------------


def _resolve(coord: Coordinator, state: ClusterRules, which: str) -> tuple[str, str]:
    """(text, label) of `which`: a version number, `current` or `trial`."""
    from idsync.ha import rules_zk

    if which == "trial":
        if state.trial is None:
            raise RulesCommandError("no rules trial is running")
        return state.trial.text, f"trial on {state.trial.node}"
    if which == "current":
        if state.current is None:
            raise RulesCommandError("the cluster has no rules version yet (start a node first)")
        return state.current.text, f"v{state.current.version}"
    number = int(which.lstrip("v")) if which.lstrip("v").isdigit() else None
    v = rules_zk.version(coord, number) if number is not None else None
    if v is None:
        raise RulesCommandError(f"no rules version {which!r} (see `idsync rules history`)")
    return v.text, f"v{v.version}"


def _show(args: argparse.Namespace, coord: Coordinator, cluster: str) -> int:
    from idsync.ha import rules as r
    from idsync.ha import rules_zk

    state = rules_zk.read(coord)
    if args.version == "trial":
        if state.trial is None:
            raise RulesCommandError("no rules trial is running")
        rec: Any = state.trial
        head = f"# trial on {rec.node} (against v{rec.base}) by {rec.by}, hash {rec.hash[:12]}"
    else:
        _text, label = _resolve(coord, state, args.version)
        rec = rules_zk.version(coord, int(label[1:]))
        assert rec is not None
        head = (
            f"# rules {label} of cluster {cluster} by {rec.by or '?'} at {rec.when()}, hash {rec.hash[:12]}"
        )
        if rec.note:
            head += f"\n# {rec.note}"
    if args.json:
        print(orjson.dumps(r.as_dict(rec), option=orjson.OPT_INDENT_2).decode())
        return 0
    print(head)
    print(
        rec.text if rec.text else "# (empty: the source kind's preset)",
        end="" if rec.text.endswith("\n") else "\n",
    )
    return 0


def _history(args: argparse.Namespace, coord: Coordinator, cluster: str) -> int:
    from idsync.ha import rules as r
    from idsync.ha import rules_zk

    events = rules_zk.history(coord)
    if args.json:
        print(orjson.dumps([r.as_dict(e) for e in events], option=orjson.OPT_INDENT_2).decode())
    else:
        print(r.render_history(events))
    return 0


def _diff(args: argparse.Namespace, coord: Coordinator, cluster: str) -> int:
    from idsync.ha import rules as r
    from idsync.ha import rules_zk

    state = rules_zk.read(coord)
    b = args.b or ("trial" if state.trial is not None else "current")
    old, old_label = _resolve(coord, state, args.a)
    new, new_label = _resolve(coord, state, b)
    out = r.unified_diff(old, new, old_label, new_label)
    print(out, end="") if out else print(f"{old_label} and {new_label} are the same rules")
    return 0


# -- trial, abort ----------------------------------------------------------------------------


def _trial(args: argparse.Namespace, coord: Coordinator, cluster: str) -> int:
    from idsync.ha import rules as r
    from idsync.ha import rules_zk
    from idsync.sync.errors import RulesError

    text = args.file.read_text(encoding="utf-8")
    cfg = _config(args)
    if cfg is not None:  # reject what this host's configuration cannot load, before any node tries
        from idsync.runtime.cluster_rules import parse_rules

        try:
            parse_rules(text, str(args.file), cfg)
        except RulesError as exc:
            raise RulesCommandError(str(exc)) from exc
    view = coord.read()
    state = rules_zk.read(coord)
    node = args.on
    if state.current is None:
        raise RulesCommandError("the cluster has no rules version yet (start a node first)")
    if state.trial is not None:
        t = state.trial
        raise RulesCommandError(
            f"a trial already runs on {t.node} (by {t.by}):"
            " `idsync rules apply` or `idsync rules abort` it first"
        )
    if node not in view.members:
        raise RulesCommandError(
            f"unknown node {node!r}: not a running member ({', '.join(sorted(view.members))})"
        )
    if view.leader is not None and view.leader.node == node:
        raise RulesCommandError(
            f"{node} is the leader: a trial runs on a standby (`idsync switchover` first)"
        )
    digest = r.text_hash(text)
    if digest == state.current.hash:
        raise RulesCommandError(
            f"{args.file} holds the current rules (v{state.current.version}): nothing to try"
        )
    trial = r.RulesTrial(
        node,
        text,
        digest,
        state.current.version,
        by=_cluster.operator(),
        at=time.time(),
        origin=str(args.file),
    )
    rules_zk.start_trial(coord, trial)
    print(
        f"rules trial {digest[:12]} ({args.file}) placed on {node} against v{state.current.version}:"
        f" it runs them from its next cycle (a full sync), never leads, and `idsync rules impact` on it"
        f" shows what they would change"
    )
    if args.wait > 0:
        rep = _await_report(coord, trial, args.wait)
        if not rep.loaded:
            print(f"idsync: {node} cannot load the trial rules: {rep.error}", file=sys.stderr)
            return 1
        print(f"{node} synced under the trial rules: {r.counts_line(rep.pending)} pending")
    return 0


def _await_report(coord: Coordinator, trial: RulesTrial, wait: float) -> TrialReport:
    from idsync.ha import rules_zk

    deadline = time.monotonic() + wait
    while True:
        state = rules_zk.read(coord)
        rep = state.report
        if state.trial is None or state.trial.hash != trial.hash:
            raise RulesCommandError("the trial ended meanwhile (`idsync rules history`)")
        if rep is not None and rep.hash == trial.hash and (not rep.loaded or rep.cycles >= 1):
            return rep
        if time.monotonic() >= deadline:
            raise RulesCommandError(
                f"{trial.node} has not completed a sync under the trial rules within {wait:.0f}s"
            )
        time.sleep(0.2)


def _abort(args: argparse.Namespace, coord: Coordinator, cluster: str) -> int:
    from idsync.ha import rules_zk

    trial = rules_zk.abort_trial(coord, by=_cluster.operator())
    if trial is None:
        raise RulesCommandError("no rules trial is running")
    print(
        f"rules trial {trial.hash[:12]} on {trial.node} aborted:"
        f" it returns to v{trial.base} in its next cycle"
    )
    return 0


# -- impact ----------------------------------------------------------------------------------


@dataclass
class AttributeImpact:
    operation: str
    attribute: str
    count: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Impact:
    """What the trial node's queue holds, counted by operation and attribute, with samples."""

    operations: Counter[str] = field(default_factory=Counter)
    attributes: dict[tuple[str, str], AttributeImpact] = field(default_factory=dict)

    def add(self, op: str, attribute: str, sample: dict[str, Any], limit: int) -> None:
        a = self.attributes.setdefault((op, attribute), AttributeImpact(op, attribute))
        a.count += 1
        if len(a.samples) < limit:
            a.samples.append(sample)


def collect_impact(store: Any, samples: int) -> Impact:
    """Walk the node's pending exports (any size, page by page) into counts and samples."""
    from idsync.sync import preview

    imp = Impact()
    for item in preview.iter_items(store):
        imp.operations[item.kind] += 1
        if item.changes:
            for c in item.changes:
                imp.add(item.kind, c.attribute, {"name": item.name, "old": c.old, "new": c.new}, samples)
        elif item.member_anchor:
            imp.add(item.kind, "members", {"name": item.name, "old": None, "new": item.member_name}, samples)
        else:
            imp.add(item.kind, "-", {"name": item.name, "old": None, "new": None}, samples)
    return imp


def _impact(args: argparse.Namespace, coord: Coordinator, cluster: str) -> int:
    from idsync.ha import rules as r
    from idsync.ha import rules_zk
    from idsync.store.db import Store
    from idsync.sync import guard

    cfg = _config(args)
    if cfg is None:
        raise RulesCommandError(
            "`rules impact` reads the trial node's store: run it with that node's --config"
        )
    state = rules_zk.read(coord)
    trial, report = state.trial, state.report
    if trial is None:
        raise RulesCommandError("no rules trial is running (`idsync rules trial FILE --on NODE`)")
    if trial.node != cfg.node.name:
        raise RulesCommandError(f"the trial runs on {trial.node}: run `idsync rules impact` with its config")
    if report is None or report.hash != trial.hash or (report.loaded and report.cycles < 1):
        raise RulesCommandError(
            f"{trial.node} has not completed a sync under the trial rules yet; try again shortly"
        )
    if not report.loaded:
        raise RulesCommandError(f"{trial.node} cannot load the trial rules: {report.error}")
    base = state.current.text if state.current else ""
    diff = r.unified_diff(base, trial.text, f"v{trial.base}", f"trial {trial.hash[:12]}")
    thresholds = guard.Thresholds(
        cfg.sync.deletion_threshold_count,
        cfg.sync.deletion_threshold_percent,
        cfg.sync.deletion_window_seconds,
    )
    with Store(cfg.store.dsn(), cfg.store.schema_name, max_size=1) as store:
        imp = collect_impact(store, max(0, args.samples))
        with store.connection() as conn:
            verdict = guard.evaluate(conn, thresholds)
    fp = r.impact_fingerprint(trial, report)
    threshold = report.threshold
    needs = report.changes > threshold
    doc = {
        "trial": {
            "node": trial.node,
            "hash": trial.hash,
            "base": trial.base,
            "by": trial.by,
            "origin": trial.origin,
        },
        "diff": diff,
        "operations": dict(sorted(imp.operations.items())),
        "attributes": [
            {"operation": a.operation, "attribute": a.attribute, "count": a.count, "samples": a.samples}
            for a in sorted(imp.attributes.values(), key=lambda a: (a.operation, -a.count, a.attribute))
        ],
        "guard": {
            "held": verdict.held,
            "deletes": verdict.deletes,
            "fingerprint": verdict.fingerprint,
            "sentence": verdict.sentence(),
        },
        "fingerprint": fp,
        "threshold": threshold,
        "needs_fingerprint": needs,
    }
    if args.format == "json":
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    elif args.format == "csv":
        _impact_csv(doc)
    else:
        _impact_table(doc)
    return 0


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return v if isinstance(v, str) else orjson.dumps(v).decode()


def _impact_table(doc: dict[str, Any]) -> None:
    t = doc["trial"]
    print(f"rules trial {t['hash'][:12]} on {t['node']} against v{t['base']} (by {t['by']}, {t['origin']})")
    print("\nrule diff:")
    print(doc["diff"].rstrip("\n") or "(no difference in the text)")
    ops = doc["operations"]
    total = sum(ops.values())
    print(
        f"\nwould change: {total} operation(s)"
        + (": " + ", ".join(f"{n} {k}" for k, n in ops.items()) if ops else "")
    )
    print(f"{'OPERATION':<14} {'ATTRIBUTE':<28} {'COUNT':>7}  EXAMPLES")
    for a in doc["attributes"]:
        ex = "; ".join(
            f"{s['name']}: {_fmt(s['old'])} → {_fmt(s['new'])}"
            if s["old"] is not None or s["new"] is not None
            else s["name"]
            for s in a["samples"]
        )
        print(f"{a['operation']:<14} {a['attribute']:<28} {a['count']:>7}  {ex}".rstrip())
    print(f"\ndeletion guard: {doc['guard']['sentence']}")
    if doc["needs_fingerprint"]:
        print(
            f"\n{total} changes exceed the rules change threshold ({doc['threshold']}):"
            f" apply with `idsync rules apply --fingerprint {doc['fingerprint']}`"
        )
    else:
        print(
            f"\nfingerprint {doc['fingerprint']} (within the threshold of {doc['threshold']}: not required)"
        )


def _impact_csv(doc: dict[str, Any]) -> None:
    w = csv.writer(sys.stdout)
    w.writerow(["operation", "attribute", "count", "name", "old", "new"])
    for a in doc["attributes"]:
        if not a["samples"]:
            w.writerow([a["operation"], a["attribute"], a["count"], "", "", ""])
        for s in a["samples"]:
            w.writerow(
                [a["operation"], a["attribute"], a["count"], s["name"], _fmt(s["old"]), _fmt(s["new"])]
            )


# -- apply, rollback -------------------------------------------------------------------------


def _apply(args: argparse.Namespace, coord: Coordinator, cluster: str) -> int:
    from idsync.ha import control, rules_zk
    from idsync.ha import rules as r
    from idsync.ha.records import SwitchoverRequest

    state = rules_zk.read(coord)
    trial, report = state.trial, state.report
    if trial is None:
        raise RulesCommandError("no rules trial to apply: start one with `idsync rules trial FILE --on NODE`")
    if report is None or report.hash != trial.hash or (report.loaded and report.cycles < 1):
        raise RulesCommandError(
            f"{trial.node} has not completed a sync under the trial rules yet: review first"
        )
    if not report.loaded:
        raise RulesCommandError(f"{trial.node} cannot load the trial rules ({report.error}): abort the trial")
    if report.guard_held:
        raise RulesCommandError(
            f"held: under the trial rules {report.guard_deletes} deletes exceed the deletion guard;"
            " approve them"
            f" with `idsync approve-deletes {report.guard_fingerprint}` after review, or `idsync rules abort`"
        )
    threshold = report.threshold  # the trial node's policy: it is the one that would export
    fp = r.impact_fingerprint(trial, report)
    if report.changes > threshold and args.fingerprint != fp:
        what = "does not match the trial's current impact" if args.fingerprint else "is required"
        raise RulesCommandError(
            f"the trial changes {report.changes} objects ({r.counts_line(report.pending)}),"
            " above the threshold"
            f" of {threshold}: the fingerprint {what}; review `idsync rules impact` on {trial.node}"
            " and pass the fingerprint it prints"
        )
    by = _cluster.operator()
    note = f"trial on {trial.node}" + (f" from {trial.origin}" if trial.origin else "")
    if not args.switchover:
        v = rules_zk.publish(coord, trial.text, by=by, step=r.APPLY, note=note, trial=trial)
        print(f"rules v{v.version} ({v.hash[:12]}) applied: every node loads it in its next cycle")
        return _await_version(coord, v.version, args.wait)
    view = coord.read()
    if view.leader is None:
        raise RulesCommandError("there is no leader to switch over from: apply without --switchover")
    req = SwitchoverRequest(
        to=trial.node, by=by, at=time.time(), leader=view.leader.node, epoch=view.leader.epoch
    )
    started = time.monotonic()
    v = rules_zk.publish(
        coord,
        trial.text,
        by=by,
        step=r.APPLY,
        note=note + f", switchover {view.leader.node} -> {trial.node}",
        trial=trial,
        switchover=req,
        epoch_version=view.epoch_version,
    )
    print(f"rules v{v.version} ({v.hash[:12]}) applied; {trial.node} takes over from {view.leader.node}")
    try:
        res = control._await_new_leader(
            coord,
            view.leader.node,
            view.leader.epoch,
            trial.node,
            started,
            args.wait,
            time.sleep,
            request=req,
        )
    except control.ControlError as exc:
        raise RulesCommandError(f"v{v.version} is applied, but {exc}") from exc
    print(f"switchover: {res.old} -> {res.new} at epoch {res.epoch} in {res.seconds:.2f}s")
    return _await_version(coord, v.version, args.wait)


def _await_version(coord: Coordinator, version: int, wait: float) -> int:
    """Wait until every member reports `version` (or says why it cannot); 0 when all do."""
    deadline = time.monotonic() + wait
    while True:
        view = coord.read()
        behind = {n: m for n, m in view.members.items() if m.rules_version != version}
        if not behind:
            print(f"every node runs v{version}: {', '.join(sorted(view.members))}")
            return 0
        # Only a refusal of this very version is final; an older one is what it replaces.
        refused = f"cannot load rules v{version}:"
        failed = {n: m.reason for n, m in behind.items() if m.reason.startswith(refused)}
        if failed or time.monotonic() >= deadline:
            for n, m in sorted(behind.items()):
                print(
                    f"idsync: {n} runs v{m.rules_version}: {failed.get(n) or m.reason or 'not yet'}",
                    file=sys.stderr,
                )
            return 1
        time.sleep(0.2)


def _rollback(args: argparse.Namespace, coord: Coordinator, cluster: str) -> int:
    from idsync.ha import rules as r
    from idsync.ha import rules_zk

    state = rules_zk.read(coord)
    cur = state.current
    if cur is None:
        raise RulesCommandError("the cluster has no rules version yet")
    if state.trial is not None:
        raise RulesCommandError(f"a trial runs on {state.trial.node}: `idsync rules abort` it first")
    target = args.version if args.version is not None else cur.version - 1
    old = rules_zk.version(coord, target) if target >= 1 else None
    if old is None:
        raise RulesCommandError(f"no rules version v{target} to roll back to (`idsync rules history`)")
    if old.hash == cur.hash:
        raise RulesCommandError(f"v{cur.version} already holds the rules of v{target}")
    v = rules_zk.publish(
        coord,
        old.text,
        by=_cluster.operator(),
        step=r.ROLLBACK,
        note=f"rollback to v{target} from v{cur.version}",
    )
    print(f"rules v{v.version} = v{target} ({v.hash[:12]}): every node loads it in its next cycle")
    return _await_version(coord, v.version, args.wait)


STEPS = {
    "show": _show,
    "history": _history,
    "diff": _diff,
    "trial": _trial,
    "impact": _impact,
    "apply": _apply,
    "abort": _abort,
    "rollback": _rollback,
}
