"""The directory in memory: objects, indexes and the change log that makes delta O(changes).

Every change takes the next value of one global sequence number and stamps it on the object
(`obj.seq`), on the changed properties (`obj.prop_seq`) and on member links. A per-kind
append-only log of `(seq, id)` lets a delta page start at its cursor by bisection and walk only
what changed since; entries made stale by a later change of the same object are skipped, and
the log is compacted when stale entries outnumber live ones.
"""

from __future__ import annotations

import bisect
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from idsync.emulator.model import DirObject, ExtensionProperty, Tombstone


class Clock:
    """Wall-clock time with a settable offset, so tests can age tokens and deleted items."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        """Seconds since the epoch, as the emulator sees them."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move emulator time forward."""
        self.offset += seconds


class ChangeLog:
    """Append-only `(seq, id)` pairs in ascending seq order."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.ids: list[str] = []

    def append(self, seq: int, ident: str) -> None:
        """Record that `ident` changed at `seq` (seq grows monotonically)."""
        self.seqs.append(seq)
        self.ids.append(ident)

    def after(self, seq: int) -> Iterator[tuple[int, str]]:
        """Entries with a seq greater than `seq`, in order."""
        i = bisect.bisect_right(self.seqs, seq)
        seqs, ids = self.seqs, self.ids
        while i < len(seqs):
            yield seqs[i], ids[i]
            i += 1

    def rebuild(self, entries: list[tuple[int, str]]) -> None:
        """Replace the log by the live entries (compaction)."""
        entries.sort()
        self.seqs = [s for s, _ in entries]
        self.ids = [i for _, i in entries]

    def __len__(self) -> int:
        return len(self.seqs)


class Store:
    """All directory state. Methods here keep indexes and change numbers right; validation lives
    in the users/groups modules."""

    def __init__(self) -> None:
        self.clock = Clock()
        # Graph's replication lag: a new or changed object stays invisible to reads for a random
        # number of seconds in [lag_min, lag_max] (0, 0: off)
        self.lag_min = self.lag_max = 0.0
        self.lag_rng = random.Random(0)
        # Whether a soft-deleted user keeps its onPremisesImmutableId from other objects (see
        # EmulatorConfig.deleted_immutable_id: Microsoft's pages do not say)
        self.deleted_holds_immutable_id = False
        self.reset()

    def reset(self) -> None:
        """Forget every object; old delta tokens become invalid (new generation)."""
        self.seq = 0
        self.generation = uuid.uuid4().hex[:12]
        self.objects: dict[str, DirObject] = {}
        self.tombstones: dict[str, Tombstone] = {}
        self.changes: dict[str, ChangeLog] = {"user": ChangeLog(), "group": ChangeLog()}
        self.created: dict[str, ChangeLog] = {"user": ChangeLog(), "group": ChangeLog()}
        self.live_count: dict[str, int] = {"user": 0, "group": 0}
        # unique keys of live objects, lower-cased where Graph compares case-insensitively
        self.by_upn: dict[str, str] = {}
        self.by_immutable: dict[str, str] = {}
        self.by_proxy: dict[str, str] = {}
        # soft-deleted users by onPremisesImmutableId (a recycle-bin `$filter` without a scan)
        self.deleted_by_immutable: dict[str, set[str]] = {}
        # new objects not replicated yet: id -> when they become visible
        self.fresh: dict[str, float] = {}
        # changed objects not replicated yet: id -> (when, what reads show until then)
        self.stale: dict[str, tuple[float, DirObject]] = {}
        # directory extensions registered on applications, by property name
        self.extensions: dict[str, ExtensionProperty] = {}
        # activated directory roles: role id -> ids of the users and service principals holding it
        self.role_members: dict[str, list[str]] = {}

    # --- change numbers -------------------------------------------------------------------
    def next_seq(self) -> int:
        """Take the next global change number."""
        self.seq += 1
        return self.seq

    def lag(self) -> float:
        """How long the next change takes to replicate (seconds; 0 when the lag is off)."""
        if self.lag_max <= 0:
            return 0.0
        return self.lag_rng.uniform(self.lag_min, self.lag_max)

    def will_change(self, obj: DirObject) -> None:
        """Call before changing a visible object: with a replication lag, reads keep showing
        this version until the change has replicated (the first unreplicated version wins)."""
        if self.lag_max <= 0 or obj.id in self.fresh:
            return
        held = self.stale.get(obj.id)
        if held is not None and self.clock.now() < held[0]:
            snapshot = held[1]
        else:
            snapshot = replace(
                obj,
                props=dict(obj.props),
                prop_seq=dict(obj.prop_seq),
                members=dict(obj.members),
                removed=dict(obj.removed),
                member_of=set(obj.member_of),
            )
        self.stale[obj.id] = (self.clock.now() + self.lag(), snapshot)

    def visible(self, obj: DirObject) -> DirObject:
        """What reads show of a live object: its last replicated version."""
        if not self.stale:
            return obj
        held = self.stale.get(obj.id)
        if held is None:
            return obj
        if self.clock.now() >= held[0]:
            del self.stale[obj.id]
            return obj
        return held[1]

    def pending(self, obj: DirObject) -> bool:
        """Whether a change (or the creation) of `obj` has not replicated yet."""
        if self.fresh and self.replicating(obj.id):
            return True
        return bool(self.stale) and self.visible(obj) is not obj

    def touch(self, obj: DirObject, props: list[str] | tuple[str, ...] = ()) -> int:
        """Mark `obj` (and `props`) changed now; returns the change number."""
        seq = self.next_seq()
        obj.seq = seq
        for p in props:
            obj.prop_seq[p] = seq
        log = self.changes[obj.kind]
        log.append(seq, obj.id)
        if len(log) > 4096 and len(log) > 3 * (len(self.objects) + len(self.tombstones)):
            self._compact(obj.kind)
        return seq

    def _compact(self, kind: str) -> None:
        entries = [(o.seq, o.id) for o in self.objects.values() if o.kind == kind]
        entries += [(t.seq, t.id) for t in self.tombstones.values() if t.kind == kind]
        self.changes[kind].rebuild(entries)

    # --- lookups ----------------------------------------------------------------------------
    def live(self, kind: str | None, ident: str) -> DirObject | None:
        """A live (not deleted) object by id, of `kind` if given."""
        o = self.objects.get(ident)
        if o is None or o.deleted_at is not None or (kind is not None and o.kind != kind):
            return None
        if self.fresh and self.replicating(ident):
            return None
        return o

    def replicating(self, ident: str) -> bool:
        """Whether `ident` was created too recently to be visible yet."""
        until = self.fresh.get(ident)
        if until is None:
            return False
        if self.clock.now() >= until:
            del self.fresh[ident]
            return False
        return True

    def user(self, id_or_upn: str) -> DirObject | None:
        """A live user by id or by userPrincipalName (case-insensitive)."""
        o = self.live("user", id_or_upn)
        if o is not None:
            return o
        ident = self.by_upn.get(id_or_upn.lower())
        return self.live("user", ident) if ident else None

    def deleted(self, ident: str) -> DirObject | None:
        """A soft-deleted object in deletedItems."""
        o = self.objects.get(ident)
        return o if o is not None and o.deleted_at is not None else None

    def iter_live(self, kind: str, after_created: int = 0) -> Iterator[DirObject]:
        """Live objects of `kind` in creation order, starting after a creation number."""
        for cseq, ident in self.created[kind].after(after_created):
            o = self.objects.get(ident)
            if o is not None and o.created_seq == cseq and o.deleted_at is None:
                if self.fresh and self.replicating(o.id):
                    continue
                yield o

    # --- unique keys ------------------------------------------------------------------------
    @staticmethod
    def keys_of(obj: DirObject) -> dict[str, list[str]]:
        """The unique values an object holds, per indexed property."""
        p = obj.props
        out: dict[str, list[str]] = {
            "userPrincipalName": [],
            "onPremisesImmutableId": [],
            "proxyAddresses": [],
        }
        if p.get("userPrincipalName"):
            out["userPrincipalName"].append(p["userPrincipalName"].lower())
        if p.get("onPremisesImmutableId"):
            out["onPremisesImmutableId"].append(p["onPremisesImmutableId"])
        for a in p.get("proxyAddresses") or []:
            out["proxyAddresses"].append(a.split(":", 1)[-1].lower())
        return out

    def _index(self, prop: str) -> dict[str, str]:
        return {
            "userPrincipalName": self.by_upn,
            "onPremisesImmutableId": self.by_immutable,
            "proxyAddresses": self.by_proxy,
        }[prop]

    def conflict_with(self, obj_id: str, keys: dict[str, list[str]]) -> str | None:
        """The first property whose value another live object already holds."""
        for prop, vals in keys.items():
            idx = self._index(prop)
            for v in vals:
                holder = idx.get(v)
                if holder is not None and holder != obj_id:
                    return prop
        return None

    def index(self, obj: DirObject) -> None:
        """Add a live object's unique keys."""
        for prop, vals in self.keys_of(obj).items():
            idx = self._index(prop)
            for v in vals:
                idx[v] = obj.id

    def unindex(self, obj: DirObject) -> None:
        """Remove an object's unique keys."""
        for prop, vals in self.keys_of(obj).items():
            idx = self._index(prop)
            for v in vals:
                if idx.get(v) == obj.id:
                    del idx[v]

    # --- object life cycle ------------------------------------------------------------------
    def add(self, kind: str, props: dict[str, Any]) -> DirObject:
        """Insert a new live object (already validated) and index it."""
        ident = str(uuid.uuid4())
        props["id"] = ident
        seq = self.next_seq()
        obj = DirObject(id=ident, kind=kind, props=props, seq=seq, created_seq=seq)
        obj.prop_seq = dict.fromkeys(props, seq)
        self.objects[ident] = obj
        self.changes[kind].append(seq, ident)
        self.created[kind].append(seq, ident)
        self.live_count[kind] += 1
        self.index(obj)
        if self.lag_max > 0:
            self.fresh[ident] = self.clock.now() + self.lag()
        return obj

    def add_member(self, group: DirObject, member: DirObject) -> None:
        """Link `member` into `group` (caller checked it is not a member yet)."""
        self.will_change(group)
        seq = self.touch(group)
        group.removed.pop(member.id, None)
        group.members[member.id] = seq
        member.member_of.add(group.id)

    def set_manager(self, user: DirObject, manager_id: str | None) -> None:
        """Give `user` a manager (None: take it away); a change delta reports as `manager@delta`."""
        if user.manager == manager_id:
            return
        self.will_change(user)
        user.manager_was = user.manager
        user.manager = manager_id
        user.manager_seq = self.touch(user)

    def remove_member(self, group: DirObject, member_id: str) -> None:
        """Unlink a member (caller checked it is one)."""
        self.will_change(group)
        seq = self.touch(group)
        del group.members[member_id]
        group.removed[member_id] = seq
        m = self.objects.get(member_id)
        if m is not None:
            m.member_of.discard(group.id)

    def soft_delete(self, obj: DirObject) -> None:
        """Move a user to deletedItems: unindexed, out of its groups, restorable."""
        groups = sorted(obj.member_of)
        for gid in groups:
            g = self.objects.get(gid)
            if g is not None and obj.id in g.members:
                self.remove_member(g, obj.id)
        self.unindex(obj)
        self._index_deleted(obj)
        obj.deleted_at = self.clock.now()
        obj.deleted_groups = groups
        obj.props["deletedDateTime"] = _iso(obj.deleted_at)
        self.live_count[obj.kind] -= 1
        self.touch(obj, ["deletedDateTime"])

    def restore(self, obj: DirObject) -> None:
        """Bring a soft-deleted user back, with the group memberships it had."""
        self._unindex_deleted(obj)
        obj.deleted_at = None
        obj.props["deletedDateTime"] = None
        self.index(obj)
        self.live_count[obj.kind] += 1
        self.touch(obj, list(obj.props))
        for gid in obj.deleted_groups:
            g = self.live("group", gid)
            if g is not None and obj.id not in g.members:
                self.add_member(g, obj)
        obj.deleted_groups = []

    def _index_deleted(self, obj: DirObject) -> None:
        imm = obj.props.get("onPremisesImmutableId")
        if not imm:
            return
        self.deleted_by_immutable.setdefault(imm, set()).add(obj.id)
        if self.deleted_holds_immutable_id and imm not in self.by_immutable:
            self.by_immutable[imm] = obj.id  # still taken: a create with it conflicts

    def _unindex_deleted(self, obj: DirObject) -> None:
        imm = obj.props.get("onPremisesImmutableId")
        if not imm:
            return
        ids = self.deleted_by_immutable.get(imm)
        if ids is not None:
            ids.discard(obj.id)
            if not ids:
                del self.deleted_by_immutable[imm]
        if self.by_immutable.get(imm) == obj.id:
            del self.by_immutable[imm]

    def hold_deleted_immutable_ids(self, hold: bool) -> None:
        """Whether soft-deleted users keep their onPremisesImmutableId taken (changeable at run time)."""
        self.deleted_holds_immutable_id = hold
        for imm, ids in self.deleted_by_immutable.items():
            holder = self.by_immutable.get(imm)
            if hold and holder is None:
                self.by_immutable[imm] = min(ids, key=lambda i: self.objects[i].created_seq)
            elif not hold and holder in ids:
                del self.by_immutable[imm]

    def deleted_with_immutable_id(self, value: str) -> list[DirObject]:
        """The soft-deleted users carrying this onPremisesImmutableId."""
        out = [self.objects[i] for i in self.deleted_by_immutable.get(value, ())]
        return sorted(out, key=lambda o: o.created_seq)

    def iter_deleted(self, kind: str, after_created: int = 0) -> Iterator[DirObject]:
        """Soft-deleted objects of `kind` in creation order, starting after a creation number."""
        for cseq, ident in self.created[kind].after(after_created):
            o = self.objects.get(ident)
            if o is not None and o.created_seq == cseq and o.deleted_at is not None:
                yield o

    def purge(self, obj: DirObject) -> None:
        """Delete permanently; delta reports `@removed: deleted` from now on."""
        if obj.deleted_at is None:
            for gid in sorted(obj.member_of):
                g = self.objects.get(gid)
                if g is not None and obj.id in g.members:
                    self.remove_member(g, obj.id)
            self.unindex(obj)
            self.live_count[obj.kind] -= 1
        else:
            self._unindex_deleted(obj)
        for mid in list(obj.members):
            m = self.objects.get(mid)
            if m is not None:
                m.member_of.discard(obj.id)
        del self.objects[obj.id]
        seq = self.next_seq()
        self.tombstones[obj.id] = Tombstone(obj.id, obj.kind, seq)
        self.changes[obj.kind].append(seq, obj.id)

    def expire_deleted(self, retention: float) -> int:
        """Purge deleted items older than `retention` seconds; returns how many."""
        cutoff = self.clock.now() - retention
        old = [o for o in self.objects.values() if o.deleted_at is not None and o.deleted_at < cutoff]
        for o in old:
            self.purge(o)
        return len(old)

    # --- persistence ------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Everything needed to come back with the same objects and valid delta tokens."""
        return {
            "seq": self.seq,
            "generation": self.generation,
            "clock_offset": self.clock.offset,
            "objects": [o.to_state() for o in sorted(self.objects.values(), key=lambda o: o.created_seq)],
            "tombstones": [[t.id, t.kind, t.seq] for t in self.tombstones.values()],
            "extensions": [e.to_state() for e in self.extensions.values()],
            "role_members": self.role_members,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the directory with a saved one."""
        self.reset()
        self.seq = int(state["seq"])
        self.generation = str(state["generation"])
        self.clock.offset = float(state.get("clock_offset", 0.0))
        for d in state["objects"]:
            o = DirObject.from_state(d)
            self.objects[o.id] = o
            self.created[o.kind].append(o.created_seq, o.id)
            if o.deleted_at is None:
                self.live_count[o.kind] += 1
                self.index(o)
        for o in self.objects.values():
            if o.deleted_at is not None:
                self._index_deleted(o)  # after the live ones: a live holder comes first
        for ident, kind, seq in state["tombstones"]:
            self.tombstones[ident] = Tombstone(ident, kind, seq)
        for e in state.get("extensions", []):
            ext = ExtensionProperty.from_state(e)
            self.extensions[ext.name] = ext
        self.role_members = {k: list(v) for k, v in state.get("role_members", {}).items()}
        for kind in ("user", "group"):
            self._compact(kind)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def iso_now(store: Store) -> str:
    """The emulator's current time as Graph formats timestamps."""
    return _iso(store.clock.now())
