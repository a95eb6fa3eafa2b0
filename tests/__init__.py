"""idsync's test suite (a package so that `python -m tests.harness` works from the repo root)."""
