"""A seeded stream of AD changes: creates, updates, renames, moves, deletes and membership churn."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import ldap3
from ldap3.core.exceptions import LDAPException, LDAPNoSuchObjectResult

from tests.cluster.directory import AdDirectory, User
from tests.harness.ldap import LdapEndpoint


@dataclass
class ChangeLog:
    done: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)


class ChangeGenerator:
    """Runs in a thread; tolerates the directory going away (a Samba restart) and reconnects."""

    def __init__(
        self, ep: LdapEndpoint, ous: tuple[str, str], seed: int, *, rate: float = 4.0, max_users: int = 80
    ):
        self.ep = ep
        self.ous = ous  # two OUs in scope: moves go between them
        self.rng = random.Random(seed)
        self.period = 1.0 / rate
        self.max_users = max_users
        self.users: list[User] = []
        self.groups: list[str] = []
        self.log = ChangeLog()
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._run, name="changes", daemon=True)
        self._dir: AdDirectory | None = None
        self._seq = 0

    def _ad(self) -> AdDirectory:
        if self._dir is None:
            self._dir = AdDirectory(self.ep)
        return self._dir

    def seed(self, users: int, groups: int) -> None:
        """Initial data, written before the daemons start."""
        ad = self._ad()
        for _ in range(users):
            self.users.append(ad.add_user(self.rng.choice(self.ous), self._name("u"), department="Sales"))
        for _ in range(groups):
            members = [u.dn for u in self.rng.sample(self.users, k=min(5, len(self.users)))]
            self.groups.append(ad.add_group(self.ous[0], self._name("g"), members))

    def _name(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{self.rng.randrange(16**6):06x}{self._seq}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._dir is not None:
            with contextlib.suppress(LDAPException):
                self._dir.close()

    def hold(self) -> None:
        """Stop changing AD for a while (e.g. around a deliberate mass delete)."""
        self._paused.set()

    def release(self) -> None:
        self._paused.clear()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            if self._paused.is_set():
                continue
            op = self._pick()
            try:
                op()
                self.log.done[op.__name__] += 1
            except (LDAPException, OSError, IndexError) as exc:
                self.log.failed[op.__name__] += 1
                if not isinstance(exc, IndexError):
                    self._dir = None  # reconnect next time (the DC may have restarted)
                    time.sleep(0.5)

    def _pick(self):  # type: ignore[no-untyped-def]
        if len(self.users) < 10:
            return self.create
        ops = [
            (self.create, 30 if len(self.users) < self.max_users else 5),
            (self.update, 25),
            (self.disable, 5),
            (self.rename, 10),
            (self.move, 8),
            (self.delete, 10),
            (self.membership, 12),
        ]
        return self.rng.choices([o for o, _ in ops], weights=[w for _, w in ops])[0]

    # -- operations -------------------------------------------------------------------------

    def create(self) -> None:
        self.users.append(self._ad().add_user(self.rng.choice(self.ous), self._name("u"), department="Sales"))

    def update(self) -> None:
        u = self.rng.choice(self.users)
        self._ad().replace(
            u.dn,
            displayName=f"User {self.rng.randrange(10**6)}",
            department=self.rng.choice(["Sales", "Ops", "R&D"]),
        )

    def disable(self) -> None:
        u = self.rng.choice(self.users)
        self._ad().set_disabled(u.dn, self.rng.random() < 0.5)

    def rename(self) -> None:
        i = self.rng.randrange(len(self.users))
        u = self.users[i]
        new_cn = self._name("r")
        dn = self._ad().move(u.dn, f"CN={new_cn}")
        self.users[i] = User(dn, u.sam, u.upn, u.guid)

    def move(self) -> None:
        i = self.rng.randrange(len(self.users))
        u = self.users[i]
        parent = u.dn.split(",", 1)[1]
        other = self.ous[1] if parent.lower() == self.ous[0].lower() else self.ous[0]
        dn = self._ad().move(u.dn, u.dn.split(",", 1)[0], other)
        self.users[i] = User(dn, u.sam, u.upn, u.guid)

    def delete(self) -> None:
        u = self.users.pop(self.rng.randrange(len(self.users)))
        try:
            self._ad().delete(u.dn)
        except LDAPNoSuchObjectResult:
            return  # gone already (an earlier answer was lost)
        except LDAPException:
            self.users.append(u)
            raise

    def membership(self) -> None:
        g = self.rng.choice(self.groups)
        u = self.rng.choice(self.users)
        ad = self._ad()
        ad.conn.search(g, "(objectClass=group)", ldap3.BASE, attributes=["member"])
        current = {m.lower() for m in ad.conn.response[0]["attributes"].get("member", [])}
        if u.dn.lower() in current:
            ad.members(g, remove=[u.dn])
        else:
            ad.members(g, add=[u.dn])

    def burst(self, n: int) -> None:
        """`n` quick creates and updates (so that a batch is in flight)."""
        for i in range(n):
            try:
                (self.create if i % 2 else self.update)()
                self.log.done["burst"] += 1
            except (LDAPException, OSError):
                self.log.failed["burst"] += 1
                self._dir = None

    def mass_delete(self, n: int) -> list[User]:
        """Delete `n` users at once (what the deletion guard is for)."""
        gone = [
            self.users.pop(self.rng.randrange(len(self.users))) for _ in range(min(n, len(self.users) - 5))
        ]
        for u in gone:
            # An earlier delete may have landed although its answer was lost.
            with contextlib.suppress(LDAPNoSuchObjectResult):
                self._ad().delete(u.dn)
        return gone
