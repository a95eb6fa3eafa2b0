"""The emulator as one object: directory, auth, throttling, faults and the request log.

`Emulator.execute()` answers one Graph call (plain or a `$batch` item) synchronously; the
aiohttp edge in `app.py` adds what needs the network: latency, dropped connections, auth headers.
Tests use this object directly for setup and inspection (`seed_users`, `faults.add`, `log`).
"""

from __future__ import annotations

import logging
import random
import uuid
from typing import Any

from idsync.emulator import batch
from idsync.emulator.auth import Auth
from idsync.emulator.call import Call, Reply, error_reply
from idsync.emulator.config import DELETED_IMMUTABLE_ID, ClientSpec, EmulatorConfig
from idsync.emulator.errors import STATUS_MESSAGES, GraphError, too_many_requests
from idsync.emulator.faults import STATUS_CODES, Fault, Faults
from idsync.emulator.model import GROUP_READONLY, USER_READONLY
from idsync.emulator.reqlog import RequestLog
from idsync.emulator.routing import route
from idsync.emulator.store import Store, iso_now
from idsync.emulator.throttle import Throttle

log = logging.getLogger(__name__)


class DropConnection(Exception):
    """Raised to make the HTTP edge close the connection without an answer."""

    def __init__(self, applied: bool) -> None:
        super().__init__("dropped")
        self.applied = applied


class Emulator:
    """A tenant: its directory and everything that stands between a client and it."""

    def __init__(self, cfg: EmulatorConfig | None = None, seed: int = 0) -> None:
        self.cfg = cfg or EmulatorConfig()
        self.store = Store()
        self._apply_lag()
        self.preregister()
        self.auth = Auth(self.cfg, self.store.clock)
        self.throttle = Throttle(self.cfg)
        self.faults = Faults(seed)
        self.log = RequestLog(self.cfg.request_log_size)
        self.rng = random.Random(seed)

    # --- answering calls ------------------------------------------------------------------
    def execute(self, call: Call, item: str | None = None, batch_id: str | None = None) -> Reply:
        """Faults, throttling, then the handler; logs the call. Raises DropConnection for drops."""
        rid = str(uuid.uuid4())
        fault = self.faults.take(call, ("throttle", "status", "gone", "drop"))
        note = ""
        if fault is not None and fault.kind == "drop" and not fault.after:
            self.record(call, 0, rid, item, batch_id, "dropped before processing")
            raise DropConnection(applied=False)
        if fault is not None and fault.kind in ("throttle", "status", "gone"):
            reply = self._fault_reply(fault, call)
            note = f"fault {fault.id}"
        else:
            verdict = self.throttle.charge(call)
            if verdict.retry_after:
                err = too_many_requests(verdict.retry_after, verdict.scope, verdict.info)
                reply = error_reply(err, call)
                note = "throttled"
            else:
                try:
                    reply = route(self, call)
                except GraphError as e:
                    reply = error_reply(e, call)
                except Exception as e:  # an emulator bug must still answer like Graph, and be visible
                    log.exception("emulator.handler_failed", extra={"method": call.method, "path": call.path})
                    reply = error_reply(GraphError(500, "generalException", f"Emulator error: {e!r}"), call)
                    note = "emulator error"
                # both on normal responses only (concepts/throttling-limits.md, "Regular responses")
                reply.headers["x-ms-resource-unit"] = str(verdict.ru)
                warning = self.throttle.warning(verdict.used)
                if warning is not None:
                    reply.headers["x-ms-throttle-limit-percentage"] = warning
        if fault is not None and fault.kind == "drop":
            self.record(call, reply.status, rid, item, batch_id, "response dropped after processing")
            raise DropConnection(applied=True)
        reply.headers.setdefault("request-id", rid)
        if "client-request-id" in call.headers:
            reply.headers["client-request-id"] = call.headers["client-request-id"]
        self.record(call, reply.status, rid, item, batch_id, note)
        return reply

    def execute_batch(self, call: Call) -> Reply:
        """A `$batch` envelope: validates it and runs every item through `execute`."""
        rid = str(uuid.uuid4())
        fault = self.faults.take(call, ("throttle", "status"), envelope=True)
        if fault is not None:
            reply = self._fault_reply(fault, call)
        else:
            shuffle = self.rng.shuffle if self.cfg.shuffle_batch_responses else None
            # Graph runs items without dependsOn in parallel, in no promised order
            # (concepts/json-batching.md); the lag mode makes that visible
            order = self.store.lag_rng.shuffle if self.cfg.random_batch_order() else None
            try:
                reply = batch.run(call, lambda sub, item: self.execute(sub, item, rid), shuffle, order)
            except GraphError as e:
                reply = error_reply(e, call)
        reply.headers["request-id"] = rid
        self.record(call, reply.status, rid, None, None, "batch")
        return reply

    def _fault_reply(self, fault: Fault, call: Call) -> Reply:
        if fault.kind == "throttle":
            err = too_many_requests(
                fault.retry_after or 0,
                f"Tenant_Application/Write/{call.app_id}/{self.cfg.tenant_id}",
                "WriteLimitExceeded",
            )
            if fault.retry_after is None:
                err.headers.pop("Retry-After")
            return error_reply(err, call)
        if fault.kind == "gone":
            coll = call.path.strip("/").split("/")[0]
            err = GraphError(
                410,
                "resyncRequired",
                "The delta token is no longer valid, and the app must reset the sync state.",
                headers={"Location": f"{call.base_url}/{coll}/delta?$deltatoken="},
            )
            return error_reply(err, call)
        code = STATUS_CODES.get(fault.status, "serviceNotAvailable")
        err = GraphError(fault.status, code, STATUS_MESSAGES.get(fault.status, "Service unavailable."))
        if fault.retry_after is not None:
            err.headers["Retry-After"] = str(fault.retry_after)
        return error_reply(err, call)

    def record(
        self, call: Call, status: int, rid: str, item: str | None, batch_id: str | None, note: str
    ) -> None:
        """Append an answered call to the request log."""
        q = "&".join(f"{k}={v}" for k, v in call.query.items())
        self.log.add(
            time=self.store.clock.now(),
            method=call.method,
            path=call.path + (f"?{q}" if q else ""),
            status=status,
            write=call.is_write,
            client_request_id=call.headers.get("client-request-id", ""),
            user_agent=call.headers.get("user-agent", ""),
            app_id=call.app_id,
            request_id=rid,
            batch=batch_id,
            item=item,
            note=note,
        )

    # --- administration -------------------------------------------------------------------
    def reset(self) -> None:
        """Empty directory, no faults, full buckets, empty request log; old delta tokens die.
        Extensions named by `preregister_extensions` are registered again."""
        self.store.reset()
        self.preregister()
        self.faults.clear()
        self.throttle.reset()
        self.log.clear()

    def preregister(self) -> None:
        """Register the `preregister_extensions` (String, on User and Group) on the default
        client's application, as an admin would have; names already registered are kept."""
        from idsync.emulator.applications import register

        main = self.cfg.clients()[0]
        for short in self.cfg.preregister_extensions:
            if self.cfg.extension_name(short) not in self.store.extensions:
                register(self, main, short)

    def _apply_lag(self) -> None:
        self.store.lag_min, self.store.lag_max = self.cfg.lag_bounds()
        self.store.lag_rng.seed(self.cfg.replication_seed)
        self.store.hold_deleted_immutable_ids(self.cfg.deleted_immutable_id == "reserved")

    def grant_role(self, role: str, principal: str) -> None:
        """Give directory role `role` (a name, e.g. "User Administrator") to a user id or a
        service principal id (`config.service_principal_id(client_id)`)."""
        from idsync.emulator import roles

        if role not in roles.TEMPLATES:
            raise ValueError(f"unknown directory role {role!r}; known: {', '.join(roles.TEMPLATES)}")
        roles.assign(self, roles.role_id(self, role), principal)

    def role_holders(self) -> dict[str, list[str]]:
        """Directory role name -> ids of the users and service principals holding it."""
        from idsync.emulator import roles

        return {n: list(self.store.role_members.get(roles.role_id(self, n), [])) for n in roles.TEMPLATES}

    def add_client(self, client_id: str, client_secret: str, app_roles: list[str], name: str = "") -> None:
        """Allow another app to get tokens, with these application permissions."""
        if self.auth.client(client_id) is not None:
            raise ValueError(f"client {client_id} already exists")
        self.cfg.extra_clients.append(ClientSpec(client_id, client_secret, list(app_roles), name))

    def advance_clock(self, seconds: float) -> int:
        """Move time forward (token and delta-token expiry, deleted-item retention)."""
        self.store.clock.advance(seconds)
        return self.store.expire_deleted(self.cfg.soft_delete_retention)

    def configure(self, **settings: Any) -> None:
        """Change limits and behaviour at run time (names of EmulatorConfig fields)."""
        allowed = {
            "write_budget",
            "write_window",
            "read_budget",
            "read_window",
            "throttle_warning",
            "throttle_warning_at",
            "throttle_warning_decimals",
            "shuffle_batch_responses",
            "delta_page_size",
            "delta_link_limit",
            "token_lifetime",
            "delta_token_lifetime",
            "domains",
            "federated_domains",
            "preregister_extensions",
            "client_roles",
            "replication_delay",
            "replication_lag_min",
            "replication_lag_max",
            "replication_seed",
            "batch_random_order",
            "unregistered_extension_query",
            "manager_removed_delta",
            "deleted_immutable_id",
        }
        bad = set(settings) - allowed
        if bad:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(bad))}")
        if settings.get("unregistered_extension_query", "error") not in ("error", "ignore"):
            raise ValueError("unregistered_extension_query is 'error' or 'ignore'")
        if settings.get("manager_removed_delta", "removed") not in ("removed", "empty"):
            raise ValueError("manager_removed_delta is 'removed' or 'empty'")
        if settings.get("deleted_immutable_id", "free") not in DELETED_IMMUTABLE_ID:
            raise ValueError("deleted_immutable_id is 'free' or 'reserved'")
        for k, v in settings.items():
            setattr(self.cfg, k, v)
        self._apply_lag()
        self.preregister()
        self.throttle.reset()

    def seed_users(self, count: int, prefix: str = "user", domain: str | None = None) -> list[str]:
        """Create `count` valid users directly in the store (fast setup for demos and benches)."""
        dom = domain or self.cfg.domains[0]
        ext = (
            self.cfg.extension_name(self.cfg.preregister_extensions[0])
            if self.cfg.preregister_extensions
            else None
        )
        now = iso_now(self.store)
        ids = []
        start = self.store.live_count["user"]
        for i in range(start, start + count):
            props: dict[str, Any] = {
                "accountEnabled": True,
                "displayName": f"User {i}",
                "mailNickname": f"{prefix}{i}",
                "userPrincipalName": f"{prefix}{i}@{dom}",
                "givenName": "User",
                "surname": str(i),
                "mail": f"{prefix}{i}@{dom}",
                "proxyAddresses": [f"SMTP:{prefix}{i}@{dom}"],
                "onPremisesImmutableId": f"imm{prefix}{i}",
                "userType": "Member",
                "createdDateTime": now,
                "jobTitle": "Engineer",
                "department": "R&D",
                "employeeId": str(100000 + i),
            }
            if ext:
                props[ext] = f"anchor-{prefix}{i}"
            ids.append(self.store.add("user", props).id)
        return ids

    def mark_synced(
        self, ids: list[str], synced: bool | None = True, props: dict[str, Any] | None = None
    ) -> int:
        """Mark objects as synced by Entra Connect (`onPremisesSyncEnabled` true: Graph then
        refuses writes to their directory-mastered properties, deletes and member changes),
        formerly synced (false: onPremisesExtensionAttributes stay read-only) or cloud-only
        (None). `props` sets on-premises properties only sync can write (e.g.
        onPremisesSamAccountName, onPremisesExtensionAttributes). Graph itself cannot do
        either. Returns how many objects were found."""
        allowed = {"onPremisesExtensionAttributes"} | {
            k for k in (*USER_READONLY, *GROUP_READONLY) if k.startswith("onPremises")
        }
        bad = set(props or {}) - allowed
        if bad:
            raise ValueError(f"not on-premises properties: {', '.join(sorted(bad))}")
        found = 0
        for ident in ids:
            o = self.store.objects.get(ident)
            if o is None:
                continue
            found += 1
            changed = {"onPremisesSyncEnabled": synced, **(props or {})}
            self.store.will_change(o)
            o.props.update(changed)
            self.store.touch(o, list(changed))
        return found

    def dump(self) -> dict[str, Any]:
        """The whole directory as JSON-ready data (GET /_emulator/state)."""
        st = self.store

        def view(o: Any) -> dict[str, Any]:
            d = {k: v for k, v in o.props.items() if k != "passwordProfile"}
            if o.kind == "group":
                d["members"] = list(o.members)
            elif o.manager:
                d["manager"] = o.manager
            return d

        live = sorted((o for o in st.objects.values() if o.deleted_at is None), key=lambda o: o.created_seq)
        return {
            "seq": st.seq,
            "generation": st.generation,
            "clock": st.clock.now(),
            "users": [view(o) for o in live if o.kind == "user"],
            "groups": [view(o) for o in live if o.kind == "group"],
            "deletedItems": [view(o) for o in st.objects.values() if o.deleted_at is not None],
            "extensionProperties": [e.to_graph() for e in st.extensions.values()],
            "directoryRoles": {k: v for k, v in self.role_holders().items() if v},
            "counts": dict(st.live_count),
        }
