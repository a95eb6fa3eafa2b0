"""Invariants checked at the end of HA and chaos runs, from AD and the emulator's own records."""

from __future__ import annotations

import base64
import re
import uuid
from collections import Counter
from typing import Any

_EPOCH = re.compile(r"epoch=(\d+)")
_NODE = re.compile(r"node=([^;)]+)")
UF_ACCOUNTDISABLE = 0x2


def immutable_id(guid: str) -> str:
    return base64.b64encode(uuid.UUID(guid).bytes_le).decode("ascii")


def expected_users(ad_users: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the default rules should make of AD users, keyed by onPremisesImmutableId."""
    out = {}
    for guid, a in ad_users.items():
        uac = int(a.get("userAccountControl") or 0)
        out[immutable_id(guid)] = {
            "userPrincipalName": a.get("userPrincipalName"),
            "displayName": a.get("displayName"),
            "accountEnabled": not uac & UF_ACCOUNTDISABLE,
        }
    return out


def user_differences(expected: dict[str, dict[str, Any]], state: dict[str, Any]) -> list[str]:
    """Every way the emulator's users differ from what AD says they should be."""
    actual = {u.get("onPremisesImmutableId"): u for u in state["users"] if u.get("onPremisesImmutableId")}
    diffs = []
    for iid, want in sorted(expected.items()):
        got = actual.get(iid)
        if got is None:
            diffs.append(f"missing user {want['userPrincipalName']} ({iid})")
            continue
        for k, v in want.items():
            if got.get(k) != v:
                diffs.append(f"user {want['userPrincipalName']}: {k} is {got.get(k)!r}, want {v!r}")
    for iid in sorted(set(actual) - set(expected)):
        diffs.append(f"unexpected user {actual[iid].get('userPrincipalName')} ({iid})")
    return diffs


def duplicate_objects(state: dict[str, Any], group_anchor: str) -> list[str]:
    """Objects that exist twice for one source anchor (the exporter's idempotence failed)."""
    dups = []
    users = Counter(u.get("onPremisesImmutableId") for u in state["users"] if u.get("onPremisesImmutableId"))
    dups += [f"user anchor {a} x{n}" for a, n in users.items() if n > 1]
    groups = Counter(g.get(group_anchor) for g in state["groups"] if g.get(group_anchor))
    dups += [f"group anchor {a} x{n}" for a, n in groups.items() if n > 1]
    return dups


def write_epochs(writes: list[dict[str, Any]]) -> list[tuple[int, str, int]]:
    """(seq, node, epoch) of every write that carried idsync's User-Agent."""
    out = []
    for w in writes:
        ua = str(w.get("user_agent", ""))
        m = _EPOCH.search(ua)
        if m:
            n = _NODE.search(ua)
            out.append((int(w["seq"]), n.group(1) if n else "?", int(m.group(1))))
    return sorted(out)


def fencing_violations(writes: list[dict[str, Any]]) -> list[str]:
    """Writes carrying an epoch older than one that had already written (a stale leader wrote)."""
    newest = 0
    bad = []
    for seq, node, epoch in write_epochs(writes):
        if epoch < newest:
            bad.append(f"write #{seq} by {node} at epoch {epoch} after epoch {newest} had written")
        newest = max(newest, epoch)
    return bad


def group_differences(expected: dict[str, set[str]], state: dict[str, Any], group_anchor: str) -> list[str]:
    """Groups (by source anchor) whose member set in the target differs from AD's (member anchors)."""
    by_id = {u["id"]: u.get("onPremisesImmutableId") for u in state["users"]}
    actual = {g.get(group_anchor): g for g in state["groups"] if g.get(group_anchor)}
    diffs = []
    for anchor, members in sorted(expected.items()):
        got = actual.get(anchor)
        if got is None:
            diffs.append(f"missing group {anchor}")
            continue
        have = {by_id.get(m) for m in got.get("members", [])}
        want = {immutable_id(m) for m in members}
        if have != want:
            name = got.get("displayName")
            diffs.append(f"group {name}: {len(want - have)} members missing, {len(have - want)} extra")
    diffs += [f"unexpected group {a}" for a in sorted(set(actual) - set(expected))]
    return diffs
