"""Shared pieces of the writeback tests: the emulator's Graph calls and AD reads."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import ldap3
import orjson

from tests.cluster.cluster import LocalCluster
from tests.harness.ldap import LdapEndpoint, connect


def graph(c: LocalCluster, method: str, path: str, body: Any = None) -> Any:
    """A Graph call to the cluster's emulator (anonymous, like the nodes); retried for a few
    seconds while Graph answers 400/404 for an object still replicating (the emulator's lag)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return _graph(c, method, path, body)
        except urllib.error.HTTPError as exc:
            if exc.code not in (400, 404) or time.monotonic() > deadline:
                raise AssertionError(f"{method} {path}: {exc.code} {exc.read().decode()}") from None
            time.sleep(0.5)


def _graph(c: LocalCluster, method: str, path: str, body: Any = None) -> Any:
    req = urllib.request.Request(
        c.emulator.url + path,
        data=orjson.dumps(body) if body is not None else None,
        headers={"Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
        return orjson.loads(raw) if raw else None


def cloud_group(c: LocalCluster, name: str, members: list[str] = ()) -> str:  # type: ignore[assignment]
    """Create a cloud-only security group (as an admin would in Entra ID); returns its id."""
    body: dict[str, Any] = {
        "displayName": name,
        "mailEnabled": False,
        "mailNickname": name.replace(" ", "") + uuid.uuid4().hex[:4],
        "securityEnabled": True,
    }
    if members:
        body["members@odata.bind"] = [f"{c.emulator.url}/v1.0/directoryObjects/{m}" for m in members]
    return str(graph(c, "POST", "/v1.0/groups", body)["id"])


def add_member(c: LocalCluster, group: str, member: str) -> None:
    ref = {"@odata.id": f"{c.emulator.url}/v1.0/directoryObjects/{member}"}
    graph(c, "POST", f"/v1.0/groups/{group}/members/$ref", ref)


def remove_member(c: LocalCluster, group: str, member: str) -> None:
    graph(c, "DELETE", f"/v1.0/groups/{group}/members/{member}/$ref")


def ad_groups(ep: LdapEndpoint, ou: str) -> dict[str, dict[str, Any]]:
    """Groups under `ou` by adminDescription: dn, displayName, groupType, members (lower-case DNs)."""
    conn = connect(ep)
    try:
        conn.search(
            ou,
            "(objectClass=group)",
            ldap3.SUBTREE,
            attributes=["adminDescription", "displayName", "groupType", "member", "cn"],
        )
        out: dict[str, dict[str, Any]] = {}
        for e in conn.response:
            if e.get("type") != "searchResEntry":
                continue
            a = {
                k: (v[0] if isinstance(v, list) and k != "member" and v else v)
                for k, v in e["attributes"].items()
            }
            key = str(a.get("adminDescription") or e["dn"])
            if key in out:
                key += "#dup:" + e["dn"]
            out[key] = {
                "dn": e["dn"],
                "displayName": a.get("displayName"),
                "groupType": int(a["groupType"]) if a.get("groupType") is not None else None,
                "members": {str(m).lower() for m in a.get("member") or []},
            }
        return out
    finally:
        conn.unbind()


def consistency_guid(ep: LdapEndpoint, dn: str) -> bytes | None:
    conn = connect(ep)
    try:
        conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["mS-DS-ConsistencyGuid"])
        raw = conn.response[0]["raw_attributes"].get("mS-DS-ConsistencyGuid") or []
        return bytes(raw[0]) if raw else None
    finally:
        conn.unbind()


def writeback_config(ep: LdapEndpoint, groups_ou: str, workdir: Path, **more: Any) -> dict[str, Any]:
    """The `[writeback]` section of the test cluster's nodes (the admin account writes)."""
    pw = workdir / "writeback-password"
    workdir.mkdir(parents=True, exist_ok=True)
    pw.write_text(ep.password)
    return {
        "enabled": True,
        "bind_dn": ep.bind_dn,
        "password_file": str(pw),
        "groups_ou": groups_ou,
        **more,
    }


def user_id(c: LocalCluster, upn: str) -> str:
    return next(str(u["id"]) for u in c.state()["users"] if u.get("userPrincipalName") == upn)


def store_dump(pg_dsn: str, schema: str) -> str:
    """The node's writeback view (target groups, AD rows, notes): printed when a test times out."""
    import psycopg

    out = []
    with psycopg.connect(pg_dsn) as conn:
        for q in (
            f"SELECT id, anchor, attrs, deleted FROM {schema}.target_object WHERE object_type = 'group'",
            f"SELECT group_id, member_id FROM {schema}.target_member",
            f"SELECT kind, anchor, payload, last_error, exported_at, quarantined_at"
            f" FROM {schema}.pending_export WHERE target = 'ad'",
            f"SELECT phase, key, reason FROM {schema}.quarantine",
            f"SELECT anchor, kind, outcome, error FROM {schema}.export_journal WHERE target = 'ad'",
        ):
            out.append(q)
            out += [f"  {r}" for r in conn.execute(q).fetchall()]
    return "\n".join(out)
