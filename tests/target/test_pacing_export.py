"""The exporter paces itself by what Graph tells, through `$batch` items (emulator + PostgreSQL)."""

from __future__ import annotations

from idsync.emulator.core import Emulator
from idsync.store.db import Store
from idsync.target import GraphTarget
from tests.target.conftest import TestFence, queue, user_payload


async def test_the_limit_header_in_batch_items_slows_the_exporter_down_before_any_429(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    # Graph's real quota: 100 writes per 1,000 s, far below the configured 3,000 per 150 s
    em.configure(write_budget=100, write_window=1000.0)
    for n in range(95):
        queue(store, "user", f"src-{n}", "create", user_payload(n))
    report = await target.exporter(store, lease).export()
    budget = target.client.write_budget
    assert report.count("ok") == 95 and report.throttled == 0
    # writes 81 to 95 came back with x-ms-throttle-limit-percentage 0.81 .. 0.95
    assert budget.warnings >= 10 and budget.last_limit is not None and budget.last_limit > 0.9
    assert budget.rate < budget.base_rate  # it slowed down while the figure rose past 0.9
    assert budget.throttled_total == 0
