"""`make demo`: idsync on a local stack — a sample AD, the Graph emulator, two nodes, Prometheus and
Alertmanager, a live switchover. It starts its services with the same local-stack runner as the
test suite (`tests/harness`, `tests/cluster`)."""
