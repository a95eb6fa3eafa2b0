"""`make bench`: run every bench/bench_*.py (or those named) and write BENCHMARKS.md.

Each benchmark module exposes `main() -> list[Figure]`, measuring idsync against a baseline in
the same run on the same machine, so the ratios mean something on a noisy machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

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


def render(results: dict[str, list[Figure] | str], took: dict[str, float]) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    lines = [
        "# idsync benchmarks",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {machine()},",
        f"commit {commit.strip() or '?'}.",
        "Each figure is compared with a baseline measured in the same run on the same machine.",
        "Written by `make bench`; do not edit by hand.",
        "",
        "| benchmark | figure | value | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        if isinstance(res, str):
            lines.append(f"| {name} | **failed to run** | | | | | no |")
            continue
        for f in res:
            base = f"{fmt(f.baseline)} {f.unit} ({f.baseline_name})" if f.baseline is not None else "—"
            met = "—" if f.ok is None else ("yes" if f.ok else "**no**")
            value = f"{fmt(f.value)} {f.unit}"
            lines.append(f"| {name} | {f.name} | {value} | {base} | {fmt(f.ratio)} | {f.target} | {met} |")
    notes = [(n, f) for n, res in results.items() if not isinstance(res, str) for f in res if f.note]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- **{n} / {f.name}**: {f.note}" for n, f in notes]
    failures = {n: r for n, r in results.items() if isinstance(r, str)}
    if failures:
        lines += ["", "## Benchmarks that failed to run", ""]
        for n, r in failures.items():
            lines += [f"### {n}", "", "```", r.strip()[-3000:], "```", ""]
    lines += ["", "Run times: " + ", ".join(f"{n} {s:.0f} s" for n, s in took.items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all), e.g. bench_source")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    names = args.names or discover()
    results: dict[str, list[Figure] | str] = {}
    took: dict[str, float] = {}
    for name in names:
        name = name if name.startswith("bench_") else f"bench_{name}"
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        try:
            mod = importlib.import_module(f"bench.{name}")
            results[name] = list(mod.main())
        except Exception:
            results[name] = traceback.format_exc()
            print(results[name], file=sys.stderr)
        took[name] = time.monotonic() - t0
        if not isinstance(results[name], str):
            for f in results[name]:
                base = fmt(f.baseline)
                print(f"   {f.name}: {fmt(f.value)} {f.unit} (baseline {base}, target {f.target}, ok={f.ok})")
    Path(args.output).write_text(render(results, took))
    print(f"wrote {args.output}")
    return 0 if all(not isinstance(r, str) for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
