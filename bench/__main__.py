"""`make bench`: run every bench/bench_*.py (or those named) and write BENCHMARKS.md.

Each benchmark module exposes `main() -> list[Figure]`, measuring idsync against a baseline in
the same run on the same machine where there is one, so the ratios mean something on a noisy
machine. Each benchmark's latest result is kept in bench/results/<name>.json with the run it came
from (time, commit, machine, load, environment overrides); BENCHMARKS.md is rendered from all of
them, so re-running one benchmark keeps the others' rows and says which run each row is from.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import Figure

ROOT = Path(__file__).resolve().parent.parent


def discover() -> list[str]:
    return sorted(p.stem for p in (ROOT / "bench").glob("bench_*.py"))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{system}, {os.cpu_count()} cores ({cpu}){mem}, Python {platform.python_version()}"


def fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


OVERRIDE_PREFIXES = ("BENCH_", "IDSYNC_BENCH_")


def overrides() -> dict[str, str]:
    """Environment variables that change what a bench measures (sizes, counts): a run with any
    of them does not measure what `make bench` measures, and BENCHMARKS.md says so."""
    return {
        k: v
        for k, v in sorted(os.environ.items())
        if k.startswith(OVERRIDE_PREFIXES) and k != "IDSYNC_BENCH_IN_NETNS"  # set by bench_source itself
    }


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def save(results_dir: Path, name: str, res: list[Figure] | str, run: dict[str, Any]) -> None:
    """One benchmark's latest result (figures or the error) with the run it came from."""
    results_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "run": run,
        "figures": [f.to_dict() for f in res] if not isinstance(res, str) else [],
        "error": res if isinstance(res, str) else None,
    }
    (results_dir / f"{name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def load(results_dir: Path) -> list[dict[str, Any]]:
    """Every benchmark's latest result: those of bench modules first, in their order."""
    docs = {p.stem: json.loads(p.read_text()) for p in sorted(results_dir.glob("bench_*.json"))}
    order = [n for n in discover() if n in docs] + sorted(n for n in docs if n not in discover())
    return [docs[n] for n in order]


def render(docs: list[dict[str, Any]]) -> str:
    """BENCHMARKS.md from the latest result of every benchmark, saying which run each row is from."""
    runs: list[tuple[str, str]] = []
    for d in docs:
        key = (d["run"]["at"], d["run"]["commit"])
        if key not in runs:
            runs.append(key)
    runs.sort()
    label = {k: f"R{i + 1}" for i, k in enumerate(runs)}
    lines = [
        "# idsync benchmarks",
        "",
        "Written by `make bench` (`python -m bench`) from the latest result of every benchmark",
        "(bench/results/*.json); do not edit by hand. `python -m bench NAME` re-runs one benchmark",
        "and rewrites its rows only, so rows can come from different runs: the *run* column says",
        "which. `make bench` re-runs all of them in one run.",
        "",
        "*Baseline* column: **same run** = a reference measured in the same run on the same machine",
        "(the ratio compares two measurements); **configured** = a configured value (a timeout, an",
        "interval, a quota), not a measurement; empty = an absolute figure, judged against its target",
        "only.",
        "",
        "## Runs",
        "",
    ]
    for k in runs:
        benches = [d for d in docs if (d["run"]["at"], d["run"]["commit"]) == k]
        r = benches[0]["run"]
        ov = {d["benchmark"]: d["run"]["overrides"] for d in benches if d["run"].get("overrides")}
        lines.append(
            f"- **{label[k]}**: {r['at']} UTC, commit {r['commit']}, {r['machine']};"
            f" load average {r.get('load', '?')}; benchmarks: {', '.join(d['benchmark'] for d in benches)}."
            + (
                " **Environment overrides**: "
                + "; ".join(f"{b}: " + ", ".join(f"`{n}={v}`" for n, v in o.items()) for b, o in ov.items())
                + " (`make bench` without them measures the defaults instead)."
                if ov
                else " No environment overrides (what `make bench` measures)."
            )
            + "".join(f" {d['benchmark']}: {d['run']['remark']}" for d in benches if d["run"].get("remark"))
        )
    lines += [
        "",
        "| benchmark | figure | value | baseline | basis | ratio | target | met | run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d in docs:
        name, run = d["benchmark"], label[(d["run"]["at"], d["run"]["commit"])]
        if d.get("error"):
            lines.append(f"| {name} | **failed to run** | | | | | | no | {run} |")
            continue
        for f in (Figure.from_dict(x) for x in d["figures"]):
            base = f"{fmt(f.baseline)} {f.unit} ({f.baseline_name})" if f.baseline is not None else ""
            met = "—" if f.ok is None else ("yes" if f.ok else "**no**")
            value = f"{fmt(f.value)} {f.unit}"
            lines.append(
                f"| {name} | {f.name} | {value} | {base} | {f.baseline_basis} | {fmt(f.ratio)}"
                f" | {f.target} | {met} | {run} |"
            )
    notes = [(d["benchmark"], Figure.from_dict(x)) for d in docs for x in d["figures"]]
    notes = [(n, f) for n, f in notes if f.note]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- **{n} / {f.name}**: {f.note}" for n, f in notes]
    failures = [d for d in docs if d.get("error")]
    if failures:
        lines += ["", "## Benchmarks that failed to run", ""]
        for d in failures:
            lines += [f"### {d['benchmark']}", "", "```", d["error"].strip()[-3000:], "```", ""]
    took = ", ".join(f"{d['benchmark']} {d['run'].get('seconds', 0):.0f} s" for d in docs)
    lines += ["", f"Run times: {took}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all), e.g. bench_source")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--results", default=str(ROOT / "bench" / "results"), help="per-benchmark results")
    parser.add_argument("--render-only", action="store_true", help="rewrite the output from the results")
    args = parser.parse_args(argv)
    results_dir = Path(args.results)
    names = [] if args.render_only else (args.names or discover())
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")
    load0 = loadavg()
    failed = False
    for name in names:
        name = name if name.startswith("bench_") else f"bench_{name}"
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        res: list[Figure] | str
        try:
            mod = importlib.import_module(f"bench.{name}")
            res = list(mod.main())
        except Exception:
            res = traceback.format_exc()
            print(res, file=sys.stderr)
            failed = True
        run = {
            "at": started,
            "commit": commit or "?",
            "machine": machine(),
            "load": f"{load0} at the start, {loadavg()} after {name}",
            "overrides": overrides(),
            "seconds": time.monotonic() - t0,
        }
        save(results_dir, name, res, run)
        if not isinstance(res, str):
            for f in res:
                base = fmt(f.baseline)
                print(f"   {f.name}: {fmt(f.value)} {f.unit} (baseline {base}, target {f.target}, ok={f.ok})")
    Path(args.output).write_text(render(load(results_dir)))
    print(f"wrote {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
