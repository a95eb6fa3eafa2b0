"""`idsync approve-deletes`: from a held mass delete to an approval every node's guard honours."""

from __future__ import annotations

import argparse
import re
import uuid
from pathlib import Path

import pytest

from idsync.commands import approve_deletes
from idsync.ha.zk import Coordinator, ZkSettings
from idsync.store.db import Store
from idsync.sync.guard import Thresholds
from tests.sync.conftest import ad_user, make_world, node_config


def _config(tmp_path: Path, pg_dsn: str, pg_schema: str) -> Path:
    return Path(node_config(tmp_path / "idsync.toml", pg_dsn, pg_schema, "deletion_threshold_count = 2"))


def test_show_then_approve_the_held_set(
    store: Store,
    pg_dsn: str,
    pg_schema: str,
    zk_hosts: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    w = make_world(
        store,
        {"user": {"scope": {"include": ["OU=Staff,DC=example,DC=com"]}}},
        thresholds=Thresholds(count=2),
    )
    w.source(*(ad_user(i) for i in range(5)))
    w.sync()
    w.export_all()
    w.sync()
    w.source(*(ad_user(i, ou="OU=Gone") for i in range(3)))
    held = w.sync().guard
    assert held.held

    cfg = _config(tmp_path, pg_dsn, pg_schema)
    cluster = f"t{uuid.uuid4().hex[:8]}"
    base = {"config": str(cfg), "zookeeper": zk_hosts, "cluster": cluster, "timeout": 5.0, "force": False}
    # The cluster exists once a node has joined it (the CLI never creates a cluster's znodes).
    coord = Coordinator(ZkSettings(hosts=zk_hosts, session_timeout=5.0, retry_timeout=5.0), cluster, "a")
    coord.start(timeout=5.0)
    assert approve_deletes.run(argparse.Namespace(fingerprint=None, **base)) == 0
    out = capsys.readouterr().out
    assert f"idsync approve-deletes {held.fingerprint}" in out
    assert len(re.findall(r"^  delete user u\d@example.com$", out, re.M)) == 3

    # A fingerprint this node never held is refused (a typo must not approve anything).
    assert approve_deletes.run(argparse.Namespace(fingerprint="0" * 32, **base)) == 1
    assert "is not a delete set this node has held" in capsys.readouterr().err

    assert approve_deletes.run(argparse.Namespace(fingerprint=held.fingerprint, **base)) == 0
    try:
        approvals = tuple(coord.approvals())
    finally:
        coord.stop()
    assert approvals == (held.fingerprint,)
    assert not w.engine.guard_decision(approvals).held
    assert w.export_all(approved=approvals) == 3
