"""The source space's bulk path: COPY in, counts out, nothing lost."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from idsync.model import MemberDelta, SourceObject
from idsync.store import migrate, runs, source_space
from idsync.store.db import Store


@pytest.fixture
def store(pg_dsn: str, pg_schema: str) -> Iterator[Store]:
    with Store(pg_dsn, pg_schema) as s:
        migrate.migrate(s)
        yield s


def _user(i: int, **extra: str) -> SourceObject:
    attrs = {"cn": (f"user {i}",), "samaccountname": (f"u{i:06d}",), "department": ("Sales",)}
    attrs.update({k: (v,) for k, v in extra.items()})
    return SourceObject(
        anchor=str(uuid.UUID(int=i)), object_type="user", dn=f"CN=user {i},OU=People,DC=x", attrs=attrs
    )


def test_round_trip_of_10000_objects_through_the_bulk_path(store: Store) -> None:
    users = [_user(i) for i in range(10_000)]
    run_id = runs.start(store, "source.full")
    with store.transaction() as conn:
        counts = source_space.upsert(conn, users, seen_run=run_id)
    assert (counts.added, counts.updated, counts.unchanged) == (10_000, 0, 0)
    with store.connection() as conn:
        assert source_space.live_count(conn) == {"user": 10_000}
        for i in (0, 4_321, 9_999):
            got = source_space.get(conn, str(uuid.UUID(int=i)))
            assert got == users[i]

    # The same objects again: nothing changes, so the sync engine has nothing to look at.
    with store.connection() as conn:
        seq_before = conn.execute("SELECT max(changed_seq) FROM source_object").fetchone()
    with store.transaction() as conn:
        again = source_space.upsert(conn, users, seen_run=run_id)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 10_000)
    with store.connection() as conn:
        assert conn.execute("SELECT max(changed_seq) FROM source_object").fetchone() == seq_before

    # One changed attribute and one rename: two updates, exactly those rows get a new sequence.
    changed = [_user(7, department="Finance"), SourceObject(**{**_fields(users[8]), "dn": "CN=renamed,DC=x"})]
    with store.transaction() as conn:
        delta = source_space.upsert(conn, changed)
    assert (delta.added, delta.updated, delta.unchanged) == (0, 2, 0)
    with store.connection() as conn:
        newer = conn.execute(
            "SELECT anchor FROM source_object WHERE changed_seq > %s ORDER BY anchor", (seq_before[0],)
        ).fetchall()
        assert [r[0] for r in newer] == sorted([users[7].anchor, users[8].anchor])
        assert source_space.get(conn, users[7].anchor).attrs["department"] == ("Finance",)


def _fields(o: SourceObject) -> dict[str, object]:
    return {
        "anchor": o.anchor,
        "object_type": o.object_type,
        "dn": o.dn,
        "attrs": o.attrs,
        "members": o.members,
    }


def test_full_import_sweeps_objects_it_did_not_see(store: Store) -> None:
    first = runs.start(store, "source.full")
    with store.transaction() as conn:
        source_space.upsert(conn, [_user(i) for i in range(10)], seen_run=first)
    second = runs.start(store, "source.full")
    with store.transaction() as conn:
        source_space.upsert(conn, [_user(i) for i in range(8)], seen_run=second)
        swept = source_space.sweep_unseen(conn, second, ["user"])
    assert swept == 2
    with store.connection() as conn:
        assert source_space.is_deleted(conn, _user(9).anchor) is True
        assert source_space.is_deleted(conn, _user(7).anchor) is False
    # A deleted object that reappears is live again (an undelete from the recycle bin).
    with store.transaction() as conn:
        back = source_space.upsert(conn, [_user(9)])
    assert back.updated == 1
    with store.connection() as conn:
        assert source_space.is_deleted(conn, _user(9).anchor) is False


def test_group_members_replace_and_delta(store: Store) -> None:
    members = tuple(str(uuid.UUID(int=i)) for i in range(5_000))
    group = SourceObject(
        anchor="g-1", object_type="group", dn="CN=big,DC=x", attrs={"cn": ("big",)}, members=members
    )
    with store.transaction() as conn:
        c = source_space.upsert(conn, [group])
    assert c.added == 1
    with store.connection() as conn:
        assert len(source_space.get(conn, "g-1").members) == 5_000

    # Same attributes, one member fewer and one more: counted as an update of the group.
    smaller = SourceObject(**{**_fields(group), "members": (*members[1:], "dn:CN=later,DC=x")})
    with store.transaction() as conn:
        c = source_space.upsert(conn, [smaller])
    assert (c.updated, c.unchanged) == (1, 0)

    with store.transaction() as conn:
        changed = source_space.apply_member_deltas(
            conn, [MemberDelta("g-1", added=("m-new",), removed=(members[1], "not-a-member"))]
        )
    assert changed == 1
    with store.connection() as conn:
        got = set(source_space.get(conn, "g-1").members)
    assert "m-new" in got and members[1] not in got and members[0] not in got
    assert len(got) == 5_000  # 4,999 + dn ref + m-new - members[1]

    # The DN reference resolves once an object with that DN exists.
    later = SourceObject(anchor="u-later", object_type="user", dn="CN=Later,DC=x", attrs={"cn": ("later",)})
    with store.transaction() as conn:
        source_space.upsert(conn, [later])
        assert source_space.resolve_dn_refs(conn) == 1
    with store.connection() as conn:
        got = set(source_space.get(conn, "g-1").members)
    assert "u-later" in got and "dn:CN=later,DC=x" not in got


def test_a_failed_transaction_leaves_nothing_behind(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as conn:
        source_space.upsert(conn, [_user(1), _user(2)])
        raise RuntimeError("crash between page and cookie")
    with store.connection() as conn:
        assert source_space.live_count(conn) == {}
