"""AD over LDAP for writeback: read the written-back groups, write with the fence checked first.

Every write asks the fence right before its bytes go out (`write_deadline()`, which raises Fenced
when the lease is over) and bounds the socket by that deadline; nothing is re-sent without asking
again. The writer binds with its own account (`[writeback]`), never the import account.
"""

from __future__ import annotations

import contextlib
import math
import ssl
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ldap3
import structlog
from ldap3.core import exceptions as lx

from idsync.fencing import Fence
from idsync.source.normalize import split_dn

log = structlog.get_logger(__name__)

# Universal security group (ADS_GROUP_TYPE_UNIVERSAL_GROUP | ADS_GROUP_TYPE_SECURITY_ENABLED),
# what Cloud Sync creates in AD.
UNIVERSAL_SECURITY = -2147483640
MARK_ATTRIBUTE = "adminDescription"  # carries Group_<cloud id>, like Entra Connect's group writeback
CONSISTENCY_GUID = "mS-DS-ConsistencyGuid"

# LDAP result codes (RFC 4511) AD answers a writer with.
NO_SUCH_OBJECT = 32
ATTRIBUTE_OR_VALUE_EXISTS = 20
CONSTRAINT_VIOLATION = 19
INSUFFICIENT_ACCESS = 50
ENTRY_ALREADY_EXISTS = 68
BUSY = 51
UNAVAILABLE = 52
UNWILLING = 53
_TRANSIENT = {BUSY, UNAVAILABLE, 80}


class WritebackUnavailable(Exception):
    """AD cannot be reached or the writer's bind is refused."""


@dataclass(frozen=True)
class AdGroup:
    """A written-back group as AD holds it."""

    cloud_id: str
    dn: str
    display_name: str | None
    description: str | None
    members: tuple[str, ...]


@dataclass(frozen=True)
class WriteResult:
    """What one LDAP write did: outcome ok | adopted | retry | error; `final` errors quarantine
    at once (AD refuses them for a reason a retry does not change)."""

    outcome: str
    error: str | None = None
    final: bool = False
    code: int | None = None


def dn_key(dn: str) -> str:
    """A DN as compared: RDN-wise, case- and space-insensitive."""
    return ",".join(split_dn(dn))


def guid_bytes(anchor: str) -> bytes:
    """The objectGUID bytes (AD's little-endian order) of a source anchor."""
    return uuid.UUID(anchor).bytes_le


@dataclass(frozen=True)
class AdConnection:
    """Where and as whom the writer connects."""

    urls: tuple[str, ...]
    bind_dn: str
    password: Callable[[], str]
    start_tls: bool = False
    ca_file: Path | None = None
    connect_timeout: float = 10.0
    write_timeout: float = 10.0


class AdDirectory:
    """One bound connection of the writeback account, opened on first use."""

    def __init__(self, settings: AdConnection) -> None:
        self.settings = settings
        self._conn: ldap3.Connection | None = None

    def _open(self) -> ldap3.Connection:
        if self._conn is not None and self._conn.bound and not self._conn.closed:
            return self._conn
        s = self.settings
        reasons = []
        for url in s.urls:
            tls = None
            if url.lower().startswith("ldaps://") or s.start_tls:
                tls = ldap3.Tls(
                    validate=ssl.CERT_REQUIRED,
                    ca_certs_file=str(s.ca_file) if s.ca_file else None,
                    version=ssl.PROTOCOL_TLS_CLIENT,
                )
            server = ldap3.Server(url, connect_timeout=s.connect_timeout, get_info=ldap3.NONE, tls=tls)
            conn = ldap3.Connection(
                server,
                user=s.bind_dn,
                password=s.password(),
                authentication=ldap3.SIMPLE,
                receive_timeout=max(1, math.ceil(s.write_timeout)),
                raise_exceptions=False,
                auto_referrals=False,
            )
            try:
                conn.open()
                if s.start_tls and not url.lower().startswith("ldaps://") and not conn.start_tls():
                    reasons.append(f"{url}: StartTLS failed")
                    continue
                if not conn.bind():
                    r = conn.result or {}
                    why = f"{r.get('description')} {r.get('message', '')}".strip()
                    raise WritebackUnavailable(f"writeback bind as {s.bind_dn} refused by {url}: {why}")
            except lx.LDAPException as exc:
                reasons.append(f"{url}: {exc}")
                continue
            self._conn = conn
            return conn
        raise WritebackUnavailable("no AD server answered the writeback account: " + "; ".join(reasons))

    def bind(self) -> None:
        """Bind now (raises WritebackUnavailable naming why not)."""
        self._open()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(lx.LDAPException):
                self._conn.unbind()
            self._conn = None

    # --- reads (every node) ----------------------------------------------------------------

    def _search(
        self, base: str, flt: str, attrs: Sequence[str], scope: Any = ldap3.SUBTREE
    ) -> list[dict[str, Any]]:
        conn = self._open()
        try:
            entries = conn.extend.standard.paged_search(
                base, flt, search_scope=scope, attributes=list(attrs), paged_size=500, generator=False
            )
        except lx.LDAPException as exc:
            self.close()
            raise WritebackUnavailable(f"search of {base} failed: {exc}") from exc
        if conn.result and conn.result.get("result") not in (0, None):
            r = conn.result
            raise WritebackUnavailable(
                f"search of {base} failed: {r.get('description')} {r.get('message', '')}"
            )
        return [e for e in entries if e.get("type") == "searchResEntry"]

    def groups(self, ou: str) -> dict[str, AdGroup]:
        """The written-back groups under `ou` (their adminDescription is Group_<cloud id>), by
        cloud id; several for one id (a duplicate) keep the first by DN, the rest are logged."""
        out: dict[str, AdGroup] = {}
        flt = f"(&(objectClass=group)({MARK_ATTRIBUTE}=Group_*))"
        attrs = [MARK_ATTRIBUTE, "displayName", "description", "member"]
        for e in sorted(self._search(ou, flt, attrs), key=lambda e: dn_key(e["dn"])):
            a = e["attributes"]
            mark = _one(a.get(MARK_ATTRIBUTE)) or ""
            cloud_id = mark.removeprefix("Group_")
            if cloud_id in out:
                log.warning("writeback.duplicate_group", cloud_id=cloud_id, dn=e["dn"], kept=out[cloud_id].dn)
                continue
            out[cloud_id] = AdGroup(
                cloud_id,
                e["dn"],
                _one(a.get("displayName")),
                _one(a.get("description")),
                tuple(str(m) for m in a.get("member") or ()),
            )
        return out

    def find_group(self, ou: str, cloud_id: str) -> str | None:
        """The DN of the group carrying Group_<cloud_id> under `ou`, or None (idempotent adds)."""
        found = self._search(ou, f"(&(objectClass=group)({MARK_ATTRIBUTE}=Group_{cloud_id}))", ["cn"])
        return found[0]["dn"] if found else None

    def may_create_groups(self, ou: str) -> bool:
        """Whether the bound account may create groups in `ou` (AD's allowedChildClassesEffective,
        computed for the account by the DC); raises WritebackUnavailable when `ou` is missing."""
        got = self._search(ou, "(objectClass=*)", ["allowedChildClassesEffective"], ldap3.BASE)
        if not got:
            raise WritebackUnavailable(f"{ou} does not exist")
        allowed = got[0]["attributes"].get("allowedChildClassesEffective") or []
        return any(str(c).lower() == "group" for c in allowed)

    def consistency_guid(self, anchor: str) -> bytes | None:
        """The user's mS-DS-ConsistencyGuid as AD holds it now (None when unset)."""
        got = self._search(f"<GUID={anchor}>", "(objectClass=*)", [CONSISTENCY_GUID], ldap3.BASE)
        if not got:
            return None
        raw = (got[0].get("raw_attributes") or {}).get(CONSISTENCY_GUID) or []
        return bytes(raw[0]) if raw else None

    # --- writes (the leader, fenced) --------------------------------------------------------

    def _arm(self, fence: Fence) -> ldap3.Connection:
        """Ask the fence right before a write (raises Fenced) and bound the write by its answer."""
        conn = self._open()
        deadline = min(fence.write_deadline(), self.settings.write_timeout)
        if conn.socket is not None:
            conn.socket.settimeout(max(0.05, deadline))
        return conn

    def _result(self, conn: ldap3.Connection, ok: bool, what: str) -> WriteResult:
        if ok:
            return WriteResult("ok")
        r = conn.result or {}
        code = int(r.get("result", -1))
        text = f"{what}: AD answered {r.get('description', '?')} ({code}) {r.get('message', '')}".strip()
        if code in _TRANSIENT:
            return WriteResult("retry", text, code=code)
        return WriteResult(
            "error", text, final=code in (INSUFFICIENT_ACCESS, UNWILLING, CONSTRAINT_VIOLATION), code=code
        )

    def _call(self, fence: Fence, what: str, fn: Callable[[ldap3.Connection], bool]) -> WriteResult:
        conn = self._arm(fence)
        try:
            ok = fn(conn)
        except lx.LDAPException as exc:
            # The socket broke or timed out: whether the write landed is unknown; the next plan
            # reads AD and computes what is still missing (writes are idempotent).
            self.close()
            return WriteResult("retry", f"{what}: {type(exc).__name__}: {exc}")
        finally:
            if conn.socket is not None:
                conn.socket.settimeout(self.settings.write_timeout)
        return self._result(conn, ok, what)

    def add_group(self, fence: Fence, ou: str, cloud_id: str, attrs: Mapping[str, Any]) -> WriteResult:
        """Create CN=Group_<cloud_id> in `ou` as a universal security group."""
        dn = f"CN=Group_{cloud_id},{ou}"
        values: dict[str, Any] = {
            "groupType": UNIVERSAL_SECURITY,
            MARK_ATTRIBUTE: f"Group_{cloud_id}",
            "sAMAccountName": "G_" + cloud_id.replace("-", "")[:18],
        }
        for k, v in attrs.items():
            if v not in (None, "", [], ()):
                values[k] = list(v) if isinstance(v, list | tuple) else v
        res = self._call(fence, f"create {dn}", lambda c: c.add(dn, ["top", "group"], values))
        if res.code == ENTRY_ALREADY_EXISTS:
            return WriteResult(
                "error",
                f"name collision: {dn} already exists and is not the written-back group of cloud group"
                f" {cloud_id} (its {MARK_ATTRIBUTE} is not Group_{cloud_id}); rename or remove it",
                final=True,
                code=res.code,
            )
        if res.code == INSUFFICIENT_ACCESS:
            return WriteResult(
                "error",
                f"insufficientAccessRights: {self.settings.bind_dn} may not create groups in {ou}"
                " (delegate 'Create/Delete Group objects' on the OU to the writeback account)",
                final=True,
                code=res.code,
            )
        return res

    def replace(self, fence: Fence, dn: str, attrs: Mapping[str, Any]) -> WriteResult:
        """Write the exact values of `attrs` (MODIFY_REPLACE; None or empty clears)."""
        changes: dict[str, Any] = {}
        for k, v in attrs.items():
            vals = [] if v in (None, "") else (list(v) if isinstance(v, list | tuple) else [v])
            changes[k] = [(ldap3.MODIFY_REPLACE, vals)]
        res = self._call(fence, f"modify {dn}", lambda c: c.modify(dn, changes))
        if res.code == INSUFFICIENT_ACCESS:
            return WriteResult(
                "error",
                f"insufficientAccessRights: {self.settings.bind_dn} may not modify {dn}",
                final=True,
                code=res.code,
            )
        return res

    def delete(self, fence: Fence, dn: str) -> WriteResult:
        """Delete `dn` after a quorum-confirmed lease (irreversible); gone already is success."""
        fence.confirm_now()
        res = self._call(fence, f"delete {dn}", lambda c: c.delete(dn))
        if res.code == NO_SUCH_OBJECT:
            return WriteResult("adopted")
        return res

    def stamp_consistency_guid(self, fence: Fence, anchor: str) -> WriteResult:
        """Set the user's mS-DS-ConsistencyGuid to its objectGUID, only if it has none: an ADD,
        which AD refuses when a value exists, so a value is never overwritten (exactly once)."""
        value = guid_bytes(anchor)
        target = f"<GUID={anchor}>"
        changes = {CONSISTENCY_GUID: [(ldap3.MODIFY_ADD, [value])]}
        res = self._call(fence, f"set {CONSISTENCY_GUID} of {target}", lambda c: c.modify(target, changes))
        if res.code in (ATTRIBUTE_OR_VALUE_EXISTS, CONSTRAINT_VIOLATION):
            held = self.consistency_guid(anchor)
            if held is not None:  # set already (by us before a failover, or by someone else): kept
                return WriteResult("adopted")
        if res.code == INSUFFICIENT_ACCESS:
            return WriteResult(
                "error",
                f"insufficientAccessRights: {self.settings.bind_dn} may not write {CONSISTENCY_GUID}"
                f" of {target} (delegate Write mS-DS-ConsistencyGuid on the users' OUs)",
                final=True,
                code=res.code,
            )
        return res


def _one(values: Any) -> str | None:
    if values is None:
        return None
    if isinstance(values, list | tuple):
        return str(values[0]) if values else None
    return str(values)
