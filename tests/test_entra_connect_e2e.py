"""Beside Entra Connect, on a real cluster (Samba AD -> `idsync run` -> the strict emulator): a user
Entra Connect synchronizes is left alone and `idsync pending` says so; once Entra Connect stops
syncing it (onPremisesSyncEnabled false), idsync takes it over by its anchor, without touching the
attributes Graph keeps read-only for a formerly synced user."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson

from tests.cluster.checks import immutable_id
from tests.cluster.cluster import LocalCluster
from tests.cluster.directory import AdDirectory
from tests.cluster.instance import wait_for
from tests.conftest import ClusterFactory

RULES = """
[user.flows]
"onPremisesExtensionAttributes.extensionAttribute1" = "source.department"
"""


def _idsync(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "idsync", "--config", str(config), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _users(c: LocalCluster, guid: str) -> list[dict[str, Any]]:
    iid = immutable_id(guid)
    return [u for u in c.state()["users"] if u.get("onPremisesImmutableId") == iid]


def test_entra_connect_objects_are_left_alone_until_it_lets_go(
    local_cluster: ClusterFactory,
    samba_ou: str,
    ad: AdDirectory,
) -> None:
    tag = uuid.uuid4().hex[:4]
    inside = ad.ou("in", samba_ou)
    ann = ad.add_user(inside, f"ann{tag}", department="Sales")
    erin = ad.add_user(inside, f"erin{tag}", department="Ops")
    with local_cluster(
        cluster="ec",
        include_ous=[inside],
    ) as c:
        # Entra Connect already synchronizes erin: same anchor (its default sourceAnchor).
        body = {
            "accountEnabled": True,
            "displayName": "Erin (Entra Connect)",
            "mailNickname": f"erin{tag}",
            "userPrincipalName": erin.upn,
            "department": "Old",
            "onPremisesImmutableId": immutable_id(erin.guid),
            "passwordProfile": {"password": "Entra-Connect-Passw0rd!"},
        }
        erin_id = c.emulator.post("/v1.0/users", body)["id"]
        ext = {"onPremisesExtensionAttributes": {"extensionAttribute1": "from Exchange"}}
        c.emulator.post("/_emulator/synced", {"ids": [erin_id], "synced": True, "props": ext})

        node = c.add("a")
        node.use_rules(RULES)
        node.start()
        c.wait_leader(60)
        wait_for(lambda: _users(c, ann.guid), 90, "ann in the target")

        # 1. erin is Entra Connect's: not created twice, not written, and `idsync pending` says so.
        def pending_note() -> str:
            out = _idsync(node.config, "pending")
            return out.stdout if "left to Entra Connect" in out.stdout else ""

        text = wait_for(pending_note, 60, "idsync pending to name erin", step=0.5)
        assert erin.dn.lower() in text.lower()
        assert f"Entra Connect synchronizes {erin.upn} ({erin_id}, onPremisesSyncEnabled)" in text
        [only] = _users(c, erin.guid)
        assert only["id"] == erin_id and only["department"] == "Old"
        out = _idsync(node.config, "quarantine", "list", "--phase", "managed", "--json")
        listed = orjson.loads(out.stdout)
        assert [e["key"] for e in listed] == [erin.guid]
        writes = [w for w in c.emulator.writes() if erin_id in str(w.get("path", ""))]
        assert writes == []  # not one write attempted on Entra Connect's object

        # 2. Entra Connect lets go (directory sync turned off: the object is now cloud-only).
        c.emulator.post("/_emulator/synced", {"ids": [erin_id], "synced": False})
        got = wait_for(
            lambda: (u := _users(c, erin.guid)) and u[0].get("department") == "Ops" and u[0],
            90,
            "erin taken over",
        )
        assert len(_users(c, erin.guid)) == 1
        assert got["displayName"] != "Erin (Entra Connect)"
        # extensionAttribute1 is read-only for a formerly synced user: left as Exchange has it.
        assert got["onPremisesExtensionAttributes"]["extensionAttribute1"] == "from Exchange"
        out = _idsync(node.config, "quarantine", "list", "--json")
        assert [e for e in orjson.loads(out.stdout) if e["key"] == erin.guid] == []
        assert "left to Entra Connect" not in _idsync(node.config, "pending").stdout
        assert node.alive
