"""idsync benchmarks: `make bench` runs every bench/bench_*.py and writes BENCHMARKS.md."""
