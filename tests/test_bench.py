"""The bench machinery itself: growth exponent, the RSS sampler, and BENCHMARKS.md rendering."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench.bench_scale import RssSampler, exponent
from bench.common import CONFIGURED, SAME_RUN, Figure


def test_exponent_of_linear_flat_and_quadratic_growth() -> None:
    sizes = [10_000, 100_000, 1_000_000]
    assert exponent(sizes, [n * 3e-5 for n in sizes]) == pytest.approx(1.0)
    assert exponent(sizes, [0.4, 0.4, 0.4]) == pytest.approx(0.0)
    assert exponent(sizes, [(n / 1000) ** 2 for n in sizes]) == pytest.approx(2.0)
    # least squares, not the end points: one slow middle point bends the slope
    assert exponent(sizes, [1.0, 30.0, 100.0]) == pytest.approx(1.0, abs=0.05)


def test_exponent_needs_two_different_sizes() -> None:
    with pytest.raises(ValueError, match="two sizes"):
        exponent([1000], [1.0])
    with pytest.raises(ValueError, match="different sizes"):
        exponent([1000, 1000], [1.0, 2.0])


def test_rss_sampler_sees_a_peak_the_process_no_longer_has() -> None:
    """Allocate 200 MB, free it, then idle: sampled during the run, the peak is still seen."""
    code = (
        "import sys, time\n"
        "b = bytearray(200 << 20)\n"
        "time.sleep(0.5)\n"
        "del b\n"
        "print('freed', flush=True)\n"
        "time.sleep(0.5)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    with RssSampler({"child": proc.pid}, interval=0.01) as sampler:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "freed"
        after_free = _child_rss_mb(proc.pid)
        proc.wait()
    assert sampler.samples > 10
    assert sampler.peak["child"] >= 190
    assert sampler.cpu["child"] > 0  # zeroing 200 MB takes CPU
    assert after_free < 100  # the peak was not simply read at the end


def _child_rss_mb(pid: int) -> float:
    from bench.bench_scale import _status_kb

    kb = _status_kb(pid, "VmRSS")
    assert kb is not None
    return kb / 1024


def test_figure_basis() -> None:
    assert Figure("a", 1.0, "s").baseline_basis == ""
    assert Figure("a", 1.0, "s", baseline=2.0).baseline_basis == SAME_RUN
    assert Figure("a", 1.0, "s", baseline=2.0, basis=CONFIGURED).baseline_basis == CONFIGURED
    f = Figure("a", 1.5, "s", 2.0, "x", "<= 2", True, "n", CONFIGURED)
    assert Figure.from_dict(f.to_dict()) == f


def _run(at: str, commit: str, **overrides: str) -> dict[str, object]:
    return {"at": at, "commit": commit, "machine": "m", "load": "1.0", "overrides": overrides, "seconds": 5}


def test_rendering_says_which_run_and_which_basis(tmp_path: Path) -> None:
    bench_main.save(
        tmp_path,
        "bench_sync",
        [
            Figure("full sync", 16.0, "s", 0.3, "INSERT … SELECT copy"),
            Figure("rss", 7.0, "MB", target="<= 200"),
        ],
        _run("2026-01-01 10:00", "aaa"),
    )
    bench_main.save(
        tmp_path,
        "bench_ha",
        [Figure("failover", 4.4, "s", 4.0, "session timeout", basis=CONFIGURED)],
        _run("2026-01-02 10:00", "bbb", IDSYNC_BENCH_USERS="78000"),
    )
    bench_main.save(tmp_path, "bench_target", "Traceback: boom", _run("2026-01-02 10:00", "bbb"))
    md = bench_main.render(bench_main.load(tmp_path))
    rows = {line.split(" | ")[1]: line for line in md.splitlines() if line.startswith("| bench_")}
    assert rows["full sync"].endswith("| same run | 53.3 |  | — | R1 |")
    assert "| configured |" in rows["failover"] and rows["failover"].endswith("| R2 |")
    assert rows["rss"].endswith("|  |  | — | <= 200 | — | R1 |")
    assert rows["**failed to run**"].endswith("| no | R2 |")
    assert "**R1**: 2026-01-01 10:00 UTC, commit aaa" in md
    assert "No environment overrides" in md.split("**R2**")[0]
    assert "bench_ha: `IDSYNC_BENCH_USERS=78000`" in md.split("**R2**")[1]
    assert "Traceback: boom" in md


def test_rerunning_one_benchmark_keeps_the_others(tmp_path: Path) -> None:
    bench_main.save(tmp_path, "bench_sync", [Figure("a", 1.0, "s")], _run("2026-01-01 10:00", "aaa"))
    bench_main.save(tmp_path, "bench_ha", [Figure("b", 2.0, "s")], _run("2026-01-01 10:00", "aaa"))
    bench_main.save(tmp_path, "bench_ha", [Figure("b", 3.0, "s")], _run("2026-01-03 10:00", "ccc"))
    md = bench_main.render(bench_main.load(tmp_path))
    assert "| bench_sync | a | 1 s |" in md and md.count("| bench_ha |") == 1
    assert "| bench_ha | b | 3 s |" in md
    assert "benchmarks: bench_sync." in md and "benchmarks: bench_ha." in md


def test_overrides_are_the_bench_variables_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDSYNC_BENCH_USERS", "78000")
    monkeypatch.setenv("BENCH_EMULATOR_WRITES", "10")
    monkeypatch.setenv("IDSYNC_BENCH_IN_NETNS", "1")
    monkeypatch.setenv("IDSYNC_STACK_DIR", "/x")
    assert bench_main.overrides() == {"BENCH_EMULATOR_WRITES": "10", "IDSYNC_BENCH_USERS": "78000"}


def test_bench_scale_is_discovered() -> None:
    assert "bench_scale" in bench_main.discover()
