"""`idsync status` names privileged users a node quarantined (a security event), on any host."""

from __future__ import annotations

import time

from idsync.ha.control import render_status
from idsync.ha.records import ClusterView, EpochRecord, LeaderRecord, MemberRecord, decode, encode


def _view(privileged: int) -> ClusterView:
    now = time.time()
    members = {
        "a": MemberRecord("a", "leader", True, last_cycle_ok=now, last_cycle=now, privileged=privileged),
        "b": MemberRecord("b", "staging", True, last_cycle_ok=now, last_cycle=now),
    }
    return ClusterView(LeaderRecord("a", 3, 1), EpochRecord(3, "a"), 1, members, None, None, None, None)


def test_status_names_the_node_with_quarantined_privileged_users() -> None:
    text = render_status(_view(2), "corp")
    [line] = [x for x in text.splitlines() if x.startswith("PRIVILEGED")]
    assert line.startswith("PRIVILEGED USERS: 2 quarantined on a: Graph refused")
    assert "`idsync quarantine list --phase export`" in line
    assert "PRIVILEGED" not in render_status(_view(0), "corp")


def test_the_count_travels_in_the_member_record() -> None:
    rec = MemberRecord("a", "leader", privileged=1)
    back = decode(MemberRecord, encode(rec))
    assert back is not None and back.privileged == 1
    old = decode(MemberRecord, b'{"node": "a", "role": "leader"}')  # a node of an older version
    assert old is not None and old.privileged == 0
