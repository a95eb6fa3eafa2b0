"""Initial passwords at export time, against the emulator: the rules' password reaches Graph in
the create and nowhere else (queue, journal, logs, results); a password Entra ID would refuse is
quarantined at once without being sent; random passwords can force a change at first sign-in."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from idsync.emulator.core import Emulator
from idsync.model import SourceObject
from idsync.store import quarantine, source_space
from idsync.store.db import Store
from idsync.sync.rules import rules_from_mapping
from idsync.sync.signin import InitialPasswords
from idsync.target import GraphTarget
from tests.target.conftest import TestFence, queue, user_payload

EXPRESSION = "'Welcome-' + source.employeeid + '!'"


def _source(store: Store, anchor: str, **attrs: str) -> None:
    obj = SourceObject(
        anchor, "user", f"CN={anchor},OU=Staff,DC=example,DC=com", {k: (v,) for k, v in attrs.items()}
    )
    with store.transaction() as conn:
        source_space.upsert(conn, [obj])


def _passwords(store: Store, **password: Any) -> InitialPasswords:
    return InitialPasswords(store, rules_from_mapping({"user": {"password": password}}, origin="t"))


def _sent_bodies(target: GraphTarget) -> list[bytes]:
    """Record the bodies idsync's client sends (what goes on the wire to Graph)."""
    sent: list[bytes] = []
    send = target.client.send

    async def recording(method: str, path: str, **kw: Any) -> Any:
        if kw.get("body") is not None:
            sent.append(bytes(kw["body"]))
        return await send(method, path, **kw)

    target.client.send = recording  # type: ignore[method-assign]
    return sent


def _stored_text(store: Store) -> str:
    """Everything the store keeps about exports and objects, as text."""
    with store.connection() as conn:
        rows = [
            conn.execute(f"SELECT coalesce(json_agg(t)::text, '') FROM {table} t").fetchone()
            for table in ("pending_export", "export_journal", "source_object", "quarantine")
        ]
    return "\n".join(str(r[0]) for r in rows if r)


async def test_the_rules_password_is_sent_once_and_kept_nowhere(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    _source(store, "src-1", employeeid="4711")
    queue(store, "user", "src-1", "create", user_payload(1))
    sent = _sent_bodies(target)
    with capture_logs() as logs:
        report = await target.exporter(
            store, lease, _passwords(store, initial=EXPRESSION, force_change=True)
        ).export()
    assert report.count("ok") == 1, report.results
    user = em.store.objects[str(report.results[0].target_id)]
    # Graph keeps forceChangePasswordNextSignIn and never the password (the emulator drops it).
    assert user.props["passwordProfile"] == {"forceChangePasswordNextSignIn": True}
    assert any(b"Welcome-4711!" in body for body in sent)  # on the wire, in the create
    assert "Welcome-4711!" not in _stored_text(store)
    assert any(e["event"] == "export.run" for e in logs)  # the logs were captured
    assert "Welcome-4711!" not in repr(logs) and "Welcome-4711!" not in repr(report)


async def test_a_password_entra_would_refuse_is_quarantined_at_once_and_never_sent(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    _source(store, "src-2")  # no employeeID: the expression gives no password
    weak = "lower(source.cn)"
    _source(store, "src-3", cn="alllowercase")
    queue(store, "user", "src-2", "create", user_payload(2))
    exporter = target.exporter(store, lease, _passwords(store, initial=EXPRESSION))
    report = await exporter.export()
    [r] = report.results
    assert r.outcome == "error" and r.final and r.error is not None
    assert r.error.code == "InitialPassword"
    assert "user.password.initial: gave no password" in r.error.message
    assert em.dump()["users"] == []  # nothing was sent
    with store.connection() as conn:
        [entry] = [e for e in quarantine.entries(conn) if e.key == "src-2"]
    assert entry.phase == "export" and "create failed 1 times" in entry.reason

    queue(store, "user", "src-3", "create", user_payload(3))
    report = await target.exporter(store, lease, _passwords(store, initial=weak)).export()
    [r] = report.results
    assert (
        r.error is not None
        and "breaks Entra ID's password rules: it mixes only 1 of the 4 kinds" in r.error.message
    )
    assert "alllowercase" not in str(r.error)
    assert em.dump()["users"] == []


async def test_random_passwords_can_force_a_change_at_first_sign_in(
    em: Emulator, target: GraphTarget, store: Store, lease: TestFence
) -> None:
    queue(store, "user", "src-1", "create", user_payload(1))
    report = await target.exporter(store, lease, _passwords(store, force_change=True)).export()
    assert report.count("ok") == 1, report.results
    user = em.store.objects[str(report.results[0].target_id)]
    assert user.props["passwordProfile"] == {"forceChangePasswordNextSignIn": True}
    queue(store, "user", "src-2", "create", user_payload(2))
    report = await target.exporter(store, lease).export()  # no policy: as before, no forced change
    user = em.store.objects[str(report.results[0].target_id)]
    assert user.props["passwordProfile"] == {"forceChangePasswordNextSignIn": False}
