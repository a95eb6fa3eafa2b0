"""What AD should be told: the writeback operations from the cloud groups, AD as read now and
the synced users that lack mS-DS-ConsistencyGuid. Pure: no LDAP, no SQL."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from idsync.store.writeback import GROUP_PREFIX, GUID_PREFIX, AdOp, CloudGroup, UnstampedUser, group_name
from idsync.writeback.directory import AdGroup, dn_key


def group_ops(
    cloud: Sequence[CloudGroup], ad: Mapping[str, AdGroup], in_scope: Callable[[str], bool]
) -> list[AdOp]:
    """Create, update (exact values) or delete each written-back group so that the OU holds one
    group per cloud group in scope, with its synced members."""
    ops: list[AdOp] = []
    wanted = {g.id: g for g in cloud if in_scope(g.display_name)}
    for gid, g in sorted(wanted.items()):
        attrs = {
            "displayName": g.display_name,
            "description": g.description or None,
            "member": list(g.member_dns),
        }
        have = ad.get(gid)
        anchor = GROUP_PREFIX + group_name(gid)
        if have is None:
            ops.append(AdOp("group", anchor, "create", {"cloud_id": gid, **attrs}))
            continue
        same = (
            have.display_name == g.display_name
            and (have.description or None) == (g.description or None)
            and {dn_key(m) for m in have.members} == {dn_key(m) for m in g.member_dns}
        )
        if not same:
            ops.append(AdOp("group", anchor, "update", {"cloud_id": gid, "dn": have.dn, **attrs}))
    for gid, have in sorted(ad.items()):
        if gid not in wanted:
            payload = {"cloud_id": gid, "dn": have.dn, "displayName": have.display_name}
            ops.append(AdOp("group", GROUP_PREFIX + group_name(gid), "delete", payload))
    return ops


def guid_ops(users: Sequence[UnstampedUser]) -> list[AdOp]:
    """Set mS-DS-ConsistencyGuid := objectGUID on each synced user lacking it."""
    return [
        AdOp("user", GUID_PREFIX + u.anchor, "update", {"dn": u.dn, "objectGUID": u.anchor}) for u in users
    ]
