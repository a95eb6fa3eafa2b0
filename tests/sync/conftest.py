"""A sync-engine test bench on real PostgreSQL: source rows in, pending exports out.

`World.export_all()` plays the exporter *and* the confirming target import: it claims what is
ready, applies each operation to the target space the way Graph would, and records the result.
The operations only leave the queue on the next sync, when the engine sees the import.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from idsync.model import SourceObject
from idsync.store import links, migrate, pending, source_space, target_space
from idsync.store.db import Store
from idsync.store.target_space import TargetObject, TargetPage, TargetRow
from idsync.sync.engine import SyncEngine, SyncResult
from idsync.sync.guard import Thresholds
from idsync.sync.rules import Rules, load_rules, rules_from_mapping


def guid(i: int) -> str:
    return str(uuid.UUID(int=0x1D5C_0000_0000_0000_0000_0000_0000_0000 + i))


def ad_user(i: int, ou: str = "OU=Staff", **attrs: str) -> SourceObject:
    """An AD user as the source connector would import it (enabled, UAC 512)."""
    base = {
        "cn": f"User {i}",
        "givenname": f"Given{i}",
        "sn": f"Sur{i}",
        "samaccountname": f"u{i}",
        "userprincipalname": f"u{i}@example.com",
        "mail": f"u{i}@example.com",
        "useraccountcontrol": "512",
        "department": "Sales",
    }
    base.update(attrs)
    return SourceObject(
        anchor=guid(i),
        object_type="user",
        dn=f"CN=User {i},{ou},DC=example,DC=com",
        attrs={k: (v,) for k, v in base.items() if v != ""},
    )


def ad_group(i: int, members: list[str], ou: str = "OU=Groups", **attrs: str) -> SourceObject:
    """An AD global security group (groupType 0x80000002)."""
    base = {"cn": f"Group {i}", "samaccountname": f"g{i}", "grouptype": "-2147483646"}
    base.update(attrs)
    return SourceObject(
        anchor=guid(100_000 + i),
        object_type="group",
        dn=f"CN=Group {i},{ou},DC=example,DC=com",
        attrs={k: (v,) for k, v in base.items()},
        members=tuple(members),
    )


class World:
    """Source space, engine and a fake exporter + target import around one store."""

    def __init__(self, store: Store, rules: Rules, **engine_args: Any) -> None:
        self.store = store
        self.rules = rules
        self.engine = SyncEngine(store, rules, **engine_args)
        self._ids = 0

    def source(self, *objs: SourceObject) -> None:
        with self.store.transaction() as conn:
            source_space.upsert(conn, list(objs))

    def delete_source(self, *anchors: str) -> None:
        with self.store.transaction() as conn:
            source_space.delete(conn, anchors)

    def target(self, object_type: str, *rows: TargetRow) -> None:
        """A target import page of objects (e.g. cloud-only objects idsync must leave alone)."""
        with self.store.transaction() as conn:
            target_space.apply_page(conn, TargetPage(object_type, objects=rows))  # type: ignore[arg-type]

    def target_page(self, page: TargetPage) -> None:
        with self.store.transaction() as conn:
            target_space.apply_page(conn, page)

    def sync(self, **kw: Any) -> SyncResult:
        return self.engine.run(**kw)

    def table_stat(self, table: str, counter: str) -> int:
        """A counter of pg_stat_user_tables for one of this store's tables (an expression of its
        columns, e.g. 'vacuum_count' or 'analyze_count + autoanalyze_count'); 0 when not listed."""
        with self.store.connection() as conn:
            row = conn.execute(
                f"SELECT {counter} FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
                (self.store.schema, table),
            ).fetchone()
            return int(row[0]) if row else 0

    def ops(self, *kinds: str) -> list[pending.PendingExport]:
        with self.store.connection() as conn:
            return pending.listing(conn, kinds=list(kinds) or None)

    def op_keys(self, *kinds: str) -> set[tuple[str, str, str]]:
        return {(o.kind, o.anchor, o.member_anchor) for o in self.ops(*kinds)}

    def target_of(self, anchor: str) -> TargetObject | None:
        with self.store.connection() as conn:
            tid = links.target_id(conn, anchor)
            return target_space.get(conn, tid) if tid else None

    def target_members(self, group_anchor: str) -> set[str]:
        """The source anchors of the target group's members (via the links)."""
        with self.store.connection() as conn:
            gid = links.target_id(conn, group_anchor)
            assert gid is not None
            ids = target_space.members(conn, gid)
            rows = conn.execute(
                "SELECT anchor FROM sync_link WHERE target_id = ANY(%s)", (list(ids),)
            ).fetchall()
        return {r[0] for r in rows}

    def export_all(self, *, approved: tuple[str, ...] = (), epoch: int = 1, limit: int = 100_000) -> int:
        """Claim and apply up to `limit` ready operations (as the exporter + target import would)."""
        done = 0
        decision = self.engine.guard_decision(approved)
        with self.store.transaction() as conn:
            ops = pending.claim(conn, epoch=epoch, node="test", limit=limit, held=decision.held)
            for op in ops:
                self._apply(conn, op)
                pending.record_result(conn, op.id, "ok", epoch=epoch, node="test", target_id=op.target_id)
                done += 1
        return done

    def _apply(self, conn: Any, op: pending.PendingExport) -> None:
        """What Graph would do, as the next delta page would report it."""
        t: Any = op.object_type
        anchor_attr = self.rules.anchor_attribute(op.object_type)
        page: TargetPage
        if op.kind in ("create", "update"):
            tid = op.target_id or f"t-{op.anchor}"
            attrs: dict[str, Any] = dict(op.payload)
            known = anchor_attr in attrs
            page = TargetPage(t, objects=[TargetRow(tid, attrs, attrs.get(anchor_attr), known)])
        elif op.kind == "delete":
            assert op.target_id
            page = TargetPage(t, removed=[op.target_id])
        elif op.kind in ("manager_set", "manager_remove"):
            assert op.target_id, op
            page = TargetPage("user", managers=[(op.target_id, op.member_target_id)])
        else:
            assert op.target_id and op.member_target_id, op
            pair = [(op.target_id, op.member_target_id)]
            page = TargetPage(
                "group",
                members_added=pair if op.kind == "member_add" else (),
                members_removed=pair if op.kind == "member_remove" else (),
            )
        target_space.apply_page(conn, page)


@pytest.fixture
def store(pg_dsn: str, pg_schema: str) -> Iterator[Store]:
    with Store(pg_dsn, pg_schema) as s:
        migrate.migrate(s)
        yield s


@pytest.fixture
def ad_rules() -> Rules:
    return load_rules(None, source_kind="ad")


@pytest.fixture
def world(store: Store, ad_rules: Rules) -> World:
    return World(store, ad_rules)


def make_world(store: Store, overrides: Mapping[str, Any], **engine_args: Any) -> World:
    """A world with the AD preset plus rule overrides (a parsed rules file)."""
    rules = rules_from_mapping(overrides, origin="test rules", source_kind="ad")
    engine_args.setdefault("thresholds", Thresholds())
    return World(store, rules, **engine_args)


def node_config(path: Any, dsn: str, schema: str | None = None, sync: str = "") -> Any:
    """Write a minimal valid idsync config (unreachable LDAP, Graph and ZooKeeper) with `[sync]`
    lines appended; for commands that only read this node's store. Returns the path."""
    store = f'schema = "{schema}"\n' if schema else ""
    path.write_text(
        f"""
[node]
name = "a"
[store]
dsn = "{dsn}"
{store}[source]
kind = "ad"
[source.ldap]
urls = ["ldap://127.0.0.1:1"]
base_dns = ["DC=example,DC=com"]
[target.graph]
graph_endpoint = "http://127.0.0.1:1"
anonymous = true
[ha.zookeeper]
hosts = "127.0.0.1:1"
[sync]
{sync}
"""
    )
    return path
