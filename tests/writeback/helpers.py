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
    seconds while Graph answers 400/404 for an object still replicating (the emulator's lag), and
    after a 429 (the chaos run's throttling storms hit the test's own calls too) or, for calls that
    are safe to repeat, a 5xx."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return _graph(c, method, path, body)
        except urllib.error.HTTPError as exc:
            retry = exc.code in (400, 404, 429) or (exc.code >= 500 and method != "POST")
            if not retry or time.monotonic() > deadline:
                raise AssertionError(f"{method} {path}: {exc.code} {exc.read().decode()}") from None
            after = exc.headers.get("Retry-After") if exc.code == 429 else None
            time.sleep(min(float(after), 5.0) if after and after.isdigit() else 0.5)


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


def dns_by_guid(ep: LdapEndpoint, base: str) -> dict[str, str]:
    """objectGUID (idsync's anchor form) -> lower-case DN of every object under `base`."""
    conn = connect(ep)
    try:
        conn.search(
            base, "(|(objectClass=user)(objectClass=group))", ldap3.SUBTREE, attributes=["objectGUID"]
        )
        return {
            str(uuid.UUID(bytes_le=e["raw_attributes"]["objectGUID"][0])): e["dn"].lower()
            for e in conn.response
            if e.get("type") == "searchResEntry"
        }
    finally:
        conn.unbind()


def writeback_differences(
    ep: LdapEndpoint, cloud_ou: str, users_base: str, state: dict[str, Any]
) -> list[str]:
    """How AD's groups OU differs from the cloud (the chaos invariant): every live cloud-only
    security group has one AD group Group_<id> with its display name and exactly its members that
    are synced AD users; no other group, no duplicate."""
    import base64

    by_immutable = {
        base64.b64encode(uuid.UUID(g).bytes_le).decode(): dn for g, dn in dns_by_guid(ep, users_base).items()
    }
    users = {u["id"]: u.get("onPremisesImmutableId") for u in state["users"]}
    cloud = [
        g
        for g in state["groups"]
        if g.get("securityEnabled")
        and not g.get("mailEnabled")
        and not any(k.startswith("extension_") for k in g)
    ]
    have = ad_groups(ep, cloud_ou)
    out = [f"duplicate or unmarked group {k}" for k in have if "#dup:" in k or not k.startswith("Group_")]
    for g in cloud:
        got = have.get(f"Group_{g['id']}")
        want = {by_immutable[i] for m in g.get("members", []) if (i := users.get(m)) in by_immutable}
        if got is None:
            out.append(f"cloud group {g.get('displayName')} missing in AD")
        elif got["displayName"] != g.get("displayName"):
            out.append(f"cloud group {g.get('displayName')} named {got['displayName']!r} in AD")
        elif got["members"] != want:
            out.append(
                f"cloud group {g.get('displayName')}: {len(want - got['members'])} members missing in AD,"
                f" {len(got['members'] - want)} extra"
            )
    ids = {f"Group_{g['id']}" for g in cloud}
    out += [f"AD group {k} has no cloud group" for k in have if k.startswith("Group_") and k not in ids]
    return out
