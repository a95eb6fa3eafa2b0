"""The bounded chaos run of `make test`: at least 20 faults, then every invariant must hold."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.chaos.run import ChaosRun
from tests.harness.ldap import LdapEndpoint
from tests.harness.service import Service
from tests.harness.stack import Stack

SEED = int(os.environ.get("CHAOS_SEED", "20261125"))
FAULTS = int(os.environ.get("CHAOS_FAULTS", "20"))


def test_chaos_bounded_run(
    tmp_path: Path, spawn: Callable[[str], Service], stack: Stack, samba: LdapEndpoint
) -> None:
    samba_svc = stack.samba()
    run = ChaosRun(
        tmp_path,
        seed=SEED,
        faults=FAULTS,
        postgres=spawn("postgres"),
        zookeeper=spawn("zookeeper"),
        samba_ep=samba,
        samba=None if samba_svc.shared else samba_svc,
    )
    result = run.run()
    print(result.table())
    assert len(result.outcomes) >= FAULTS
    assert result.violations == [], result.table()
