"""`idsync preflight [--fix] [--json] [--standalone]`: is this node ready for its tenant?

One line per check, `OK` / `WARN` / `FAIL`, each problem with its fix:

    OK    token             obtained for app 0c3c… in tenant 72f9…
    FAIL  group-extension   extension_0c3c…_idsyncSourceAnchor is not registered for groups
                            fix: idsync preflight --fix

Checks: PostgreSQL and ZooKeeper reachable; a Graph token; its application permissions (the
token's `roles` claim); the tenant's verified domains against every UPN suffix in the source
scope (with counts); how those users will sign in (a managed domain with no initial-password
policy is a warning); the group anchor extension registered; the app's own directory roles
(whether users holding admin roles can be managed); the source bind and in-scope counts (pilot
groups, `scope.member_of`, read with the first range of their members).
`--fix` registers the group anchor extension (idempotent). Exit status: 0 all OK, 1 warnings
only, 2 at least one failure (or an invalid configuration). `--json` prints the checks as a list.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["OK", "WARN", "FAIL"]
EXIT = {"OK": 0, "WARN": 1, "FAIL": 2}


@dataclass(frozen=True)
class Check:
    """The outcome of one check, as printed."""

    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class SourceScan:
    """What the source scope holds, as the sync rules see it."""

    server: str = ""
    found: Counter[str] = field(default_factory=Counter)  # entries read per type
    in_scope: Counter[str] = field(default_factory=Counter)  # in scope of the rules per type
    unreadable: int = 0  # entries the normalizer or the rules refused
    suffixes: Counter[str] = field(default_factory=Counter)  # UPN suffix → in-scope users


def configure(parser: argparse.ArgumentParser) -> None:
    """Add preflight's arguments."""
    parser.add_argument("--fix", action="store_true", help="register the group anchor extension")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument("--standalone", action="store_true", help="no ZooKeeper (a node run --standalone)")


def run(args: argparse.Namespace) -> int:
    """Run the checks; exit 0 (all OK), 1 (warnings), 2 (a failure or an invalid configuration)."""
    from idsync.commands import _node

    cfg = _node.load(args)
    if cfg is None:
        return 2
    checks = asyncio.run(run_checks(cfg, fix=args.fix, standalone=args.standalone))
    if args.json:
        import orjson

        print(orjson.dumps([asdict(c) for c in checks], option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(checks))
    return max((EXIT[c.status] for c in checks), default=0)


def render(checks: list[Check]) -> str:
    """The report: one line per check, the fix indented below a problem."""
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for c in checks:
        lines.append(f"{c.status:<5} {c.name:<{width}}  {c.detail}")
        if c.fix:
            lines.append(f"{'':<5} {'':<{width}}  fix: {c.fix}")
    return "\n".join(lines)


async def run_checks(cfg: Any, *, fix: bool = False, standalone: bool = False) -> list[Check]:
    """Every check, in the order an operator would fix them."""
    from idsync.config import Config
    from idsync.sync.engine import group_anchor_of
    from idsync.sync.errors import RulesError
    from idsync.sync.rules import load_rules
    from idsync.target.client import GraphClient
    from idsync.target.tenant import TenantReader

    assert isinstance(cfg, Config)
    checks: list[Check] = [await asyncio.to_thread(_postgresql, cfg)]
    checks.append(
        Check("zookeeper", "OK", "not used (--standalone)")
        if standalone
        else await asyncio.to_thread(_zookeeper, cfg)
    )
    try:
        rules = load_rules(
            cfg.sync.rules_file, source_kind=cfg.source.kind, group_anchor=group_anchor_of(cfg)
        )
    except RulesError as exc:
        checks.append(
            Check("rules", "FAIL", str(exc).splitlines()[0], "idsync check-config lists every problem")
        )
        return checks
    scan_task = asyncio.create_task(asyncio.to_thread(_scan_source, cfg, rules))
    client = GraphClient(cfg.target.graph, node=cfg.node.name, read_attempts=2)  # say it, do not wait
    try:
        graph_checks, tenant = await _graph_checks(cfg, TenantReader(client), rules, fix)
        checks.extend(graph_checks)
        scan, source_check = await scan_task
        checks.append(source_check)
        if cfg.writeback.enabled:
            checks.append(await asyncio.to_thread(writeback_check, cfg))
        if scan is not None:
            checks.append(_upn_check(scan, tenant, rules))
            if rules.of("user").enabled:
                checks.append(_signin_check(scan, tenant, rules))
    finally:
        await client.close()
    return checks


# --- services --------------------------------------------------------------------------------


def _postgresql(cfg: Any) -> Check:
    from idsync.store.db import Store
    from idsync.store.errors import StoreError

    s = cfg.store
    try:
        store = Store(s.dsn(), s.schema_name, max_size=1, connect_timeout=s.connect_timeout_seconds)
        with store, store.connection() as conn:
            row = conn.execute(
                "SELECT current_setting('server_version'), current_setting('autovacuum')::bool"
            ).fetchone()
    except (StoreError, OSError) as exc:
        return Check(
            "postgresql", "FAIL", f"unreachable: {exc}", "check [store] dsn and that PostgreSQL runs"
        )
    except Exception as exc:  # psycopg errors that the store does not wrap
        return Check("postgresql", "FAIL", f"{type(exc).__name__}: {exc}", "check [store] dsn")
    # autovacuum off is a choice some sites make: the node analyzes (and there vacuums) its own
    # tables after each sync (store/upkeep.py); said here so that nobody has to guess.
    vacuum = (
        "" if row is None or row[1] else "; autovacuum off: the node tends its own tables after each sync"
    )
    return Check(
        "postgresql", "OK", f"reachable (PostgreSQL {row[0] if row else '?'}, schema {s.schema_name}{vacuum})"
    )


def _zookeeper(cfg: Any) -> Check:
    """A TCP connection to each server of the connect string (only ha/ speaks ZooKeeper)."""
    zk = cfg.ha.zookeeper
    hosts = zk.hosts.split("/", 1)[0]
    up, down = [], []
    for hp in hosts.split(","):
        host, _, port = hp.strip().rpartition(":")
        host = host or hp.strip()
        try:
            with socket.create_connection((host.strip("[]"), int(port or 2181)), timeout=3.0):
                up.append(hp.strip())
        except (OSError, ValueError) as exc:
            down.append(f"{hp.strip()} ({exc})")
    if not up:
        return Check(
            "zookeeper", "FAIL", "no server answers: " + ", ".join(down), "check [ha.zookeeper] hosts"
        )
    if down:
        return Check("zookeeper", "WARN", f"reachable: {', '.join(up)}; not: {', '.join(down)}")
    return Check("zookeeper", "OK", f"reachable: {', '.join(up)}")


# --- Graph -----------------------------------------------------------------------------------


async def _graph_checks(cfg: Any, reader: Any, rules: Any, fix: bool) -> tuple[list[Check], Any]:
    """The Graph checks, and the tenant's domains (None when unreadable) for the UPN check."""
    from idsync.target.errors import GraphAuthError, GraphRequestError, GraphUnavailable
    from idsync.target.tenant import LIMITED_MANAGERS, PRIVILEGED_MANAGERS, missing, token_roles

    graph = cfg.target.graph
    out: list[Check] = []
    try:
        token = await reader.token()
    except GraphAuthError as exc:
        out.append(
            Check(
                "token",
                "FAIL",
                str(exc),
                "check [target.graph] tenant_id, client_id and the secret/certificate",
            )
        )
        return out, None
    except Exception as exc:  # the identity platform unreachable, a bad CA file, ...
        out.append(
            Check("token", "FAIL", f"{type(exc).__name__}: {exc}", "check authority_host and the network")
        )
        return out, None
    if token is None:
        out.append(Check("token", "WARN", "anonymous = true: no token (only for the Graph emulator)"))
        out.append(Check("permissions", "WARN", "not checked (no token)"))
    else:
        out.append(Check("token", "OK", f"obtained for app {graph.client_id} in tenant {graph.tenant_id}"))
        roles = token_roles(token)
        gaps = [r for r in missing(roles) if rules.of("group").enabled or "group" not in r.what]
        fatal = [r for r in gaps if r.fatal]
        have = ", ".join(roles) or "none"
        if gaps:
            what = "; ".join(
                f"{'cannot' if r.fatal else 'will not'} {r.what} (needs one of {', '.join(r.any_of)})"
                for r in gaps
            )
            out.append(
                Check(
                    "permissions",
                    "FAIL" if fatal else "WARN",
                    f"{what}; the token carries: {have}",
                    "grant the application permissions in the app registration and give admin consent",
                )
            )
        else:
            out.append(Check("permissions", "OK", have))

    tenant = None
    try:  # resources/domain.md: isVerified, isInitial
        tenant = await reader.domains()
    except (GraphRequestError, GraphUnavailable) as exc:
        out.append(Check("domains", "WARN", f"cannot read: {exc}", "grant Domain.Read.All"))
    else:
        verified = ", ".join(sorted(tenant.verified)) or "none"
        out.append(Check("domains", "OK", f"verified: {verified}; initial: {tenant.initial or 'unknown'}"))

    anchor = rules.anchor_attribute("group")
    if rules.of("group").enabled:
        out.append(await _extension_check(reader, anchor, fix))

    if graph.client_id:
        try:
            app_roles = await reader.app_roles(str(graph.client_id))
        except (GraphRequestError, GraphUnavailable) as exc:
            out.append(Check("privileged-users", "WARN", f"cannot read the app's directory roles: {exc}"))
        else:
            held = ", ".join(app_roles) or "no directory role"
            if PRIVILEGED_MANAGERS.intersection(app_roles):
                out.append(
                    Check("privileged-users", "OK", f"the app holds {held}: it may manage administrators too")
                )
            else:
                limited = " (limited administrators only)" if LIMITED_MANAGERS.intersection(app_roles) else ""
                out.append(
                    Check(
                        "privileged-users",
                        "WARN",
                        f"the app holds {held}{limited}: users holding admin roles cannot be disabled,"
                        " deleted or have their phones changed by it (403); idsync quarantines such"
                        " changes with the roles",
                        "assign the app's service principal Privileged Authentication Administrator,"
                        " or manage admin accounts by hand",
                    )
                )
    return out, tenant


async def _extension_check(reader: Any, anchor: str, fix: bool) -> Check:
    from idsync.target.errors import GraphRequestError, GraphUnavailable

    name = "group-extension"
    try:
        state = await reader.extension(anchor)
    except (GraphRequestError, GraphUnavailable) as exc:
        return Check(name, "WARN", f"cannot list extension properties: {exc}", "grant Application.Read.All")
    if state.serves("Group"):
        return Check(name, "OK", f"{anchor} registered for groups")
    if not fix:
        where = (
            f"registered for {', '.join(state.target_objects)} only" if state.registered else "not registered"
        )
        return Check(
            name,
            "FAIL",
            f"{anchor} is {where}: group exports stay stopped (users go on)",
            "idsync preflight --fix",
        )
    try:
        done = await reader.register_extension(anchor, "Group")
    except (GraphRequestError, GraphUnavailable) as exc:
        return Check(
            name, "FAIL", f"could not register {anchor}: {exc}", "grant Application.ReadWrite.OwnedBy"
        )
    return Check(name, "OK", done)


# --- source ----------------------------------------------------------------------------------


def writeback_check(cfg: Any) -> Check:
    """`[writeback]`: the writer's account binds, and may create groups in the groups OU."""
    from idsync.writeback.directory import AdDirectory, WritebackUnavailable
    from idsync.writeback.run import connection

    wb = cfg.writeback
    d = AdDirectory(connection(cfg))
    try:
        if not (wb.groups and wb.groups_ou):
            d.bind()
            return Check("writeback", "OK", f"bound as {wb.bind_dn}")
        allowed = d.may_create_groups(wb.groups_ou)
        held = len(d.groups(wb.groups_ou))
    except WritebackUnavailable as exc:
        return Check("writeback", "FAIL", str(exc), "check [writeback] bind_dn, the password and groups_ou")
    finally:
        d.close()
    if not allowed:
        return Check(
            "writeback",
            "FAIL",
            f"{wb.bind_dn} may not create groups in {wb.groups_ou}",
            "delegate 'Create/Delete Group objects' on the OU to the writeback account",
        )
    return Check(
        "writeback",
        "OK",
        f"bound as {wb.bind_dn}; may create groups in {wb.groups_ou}; {held} written back there",
    )


def _scan_source(cfg: Any, rules: Any) -> tuple[SourceScan | None, Check]:
    """Bind, read the scope as an import would and apply the rules (nothing is stored)."""
    from idsync.model import OBJECT_TYPES
    from idsync.source.connection import LdapConnector
    from idsync.source.controls import EXTENDED_DN_OID, extended_dn_control
    from idsync.source.errors import BadEntry, SourceError
    from idsync.source.normalize import Normalizer, lower_keys, parse_extended_dn
    from idsync.source.scope import Scope
    from idsync.source.settings import LdapSourceSettings
    from idsync.sync.errors import EvaluationError
    from idsync.sync.evaluate import Evaluator

    settings = LdapSourceSettings.from_config(cfg.source)
    scope = Scope.from_settings(settings)
    normalizer = Normalizer(settings.kind, scope.attribute_names, settings.max_value_bytes)
    connector = LdapConnector(settings)
    scan = SourceScan()
    evaluator = Evaluator(rules)
    try:
        session = connector.session(check=True)
        scan.server = session.info.name
        controls = []
        if settings.kind == "ad" and EXTENDED_DN_OID in session.info.supported_controls:
            controls = [extended_dn_control()]
        evaluator.pilot = _pilot_groups(session, scope, normalizer, rules, controls)
        for t in OBJECT_TYPES:
            for base in scope.search_bases:
                for page in session.paged(
                    base, scope.filter_for(t), list(scope.attributes), settings.page_size, controls
                ):
                    for entry in page:
                        if not scope.in_scope(parse_extended_dn(entry["dn"]).dn):
                            continue
                        scan.found[t] += 1
                        try:
                            obj = normalizer.to_object(
                                entry["dn"], lower_keys(entry["raw_attributes"]), t, None
                            )
                            out = evaluator.evaluate(obj.anchor, t, obj.dn, obj.attrs)
                        except (BadEntry, EvaluationError):
                            scan.unreadable += 1
                            continue
                        if not out.in_scope:
                            continue
                        scan.in_scope[t] += 1
                        upn = (out.attrs or {}).get("userPrincipalName")
                        if t == "user" and isinstance(upn, str) and "@" in upn:
                            scan.suffixes[upn.rsplit("@", 1)[1].lower()] += 1
    except SourceError as exc:
        return None, Check("source", "FAIL", str(exc), "check [source.ldap] urls, bind_dn and the password")
    except Exception as exc:  # ldap3 raising something the connector does not wrap
        return None, Check("source", "FAIL", f"{type(exc).__name__}: {exc}", "check [source.ldap]")
    finally:
        connector.close()
    who = settings.bind_dn or "anonymous"
    detail = (
        f"bound to {scan.server} as {who}; in scope: {scan.in_scope['user']} users,"
        f" {scan.in_scope['group']} groups (of {scan.found['user']} and {scan.found['group']} read)"
    )
    if scan.unreadable:
        return scan, Check(
            "source", "WARN", f"{detail}; {scan.unreadable} refused by the rules", "idsync pending lists why"
        )
    return scan, Check("source", "OK", detail)


def _pilot_groups(
    session: Any, scope: Any, normalizer: Any, rules: Any, controls: list[Any]
) -> dict[str, Any]:
    """The members of the pilot groups (`scope.member_of`), read as the import reads them; a
    group outside the imported scope is missing, as it is for the sync."""
    import ldap3

    from idsync.source.normalize import lower_keys, parse_extended_dn
    from idsync.sync.evaluate import pilot_scope

    out = {}
    for t in ("user", "group"):
        dns = rules.of(t).scope.member_of
        if not dns:
            continue
        found: dict[str, tuple[str, list[str]]] = {}
        for dn in dns:
            if not scope.in_scope(dn):
                continue
            res = session.search(dn, "(objectClass=group)", ldap3.BASE, ["member"], controls, allow=(32,))
            for entry in res.entries:
                raw = lower_keys(entry["raw_attributes"])
                # A large AD group answers with `member;range=0-1499` only: preflight counts those.
                ranged = next((v for k, v in raw.items() if k.startswith("member;range=")), [])
                obj = normalizer.to_object(entry["dn"], raw, "group", raw.get("member") or ranged)
                found[parse_extended_dn(entry["dn"]).dn.lower()] = (obj.anchor, list(obj.members or ()))
        out[t] = pilot_scope(found, dns)
    return out


def _signin_check(scan: SourceScan, tenant: Any, rules: Any) -> Check:
    """How the users idsync creates will sign in. Graph cannot sync password hashes: a user in a
    managed domain signs in with the password idsync sets on create, or one set later through
    self-service password reset, a Temporary Access Pass or an administrator."""
    policy = rules.of("user").password
    change = f"forceChangePasswordNextSignIn {str(policy.force_change).lower()}"
    if policy.initial is not None:
        return Check("sign-in", "OK", f"initial password from user.password.initial ({change})")
    if policy.force_change:
        return Check("sign-in", "OK", f"random initial password, {change}")
    if tenant is None:
        return Check("sign-in", "WARN", "not checked (the domains could not be read)")
    managed: Counter[str] = Counter()
    for suffix, n in scan.suffixes.items():
        domain = suffix if tenant.is_verified(suffix) else tenant.initial or suffix
        if not tenant.is_federated(domain):
            managed[domain] += n
    if not managed:
        return Check(
            "sign-in", "OK", "every user in scope is in a federated domain (sign-in at its identity provider)"
        )
    where = ", ".join(f"{d} ({n} users)" for d, n in sorted(managed.items()))
    return Check(
        "sign-in",
        "WARN",
        f"managed domain(s) {where}: users get a random password nobody knows and no forced change"
        " ([user.password] is not set), so they cannot sign in until self-service password reset,"
        " a Temporary Access Pass or an administrator sets one",
        'set [user.password] initial = "<CEL expression>" or force_change = true in the rules,'
        " or federate the domain (docs/operations.md, Sign-in)",
    )


def _upn_check(scan: SourceScan, tenant: Any, rules: Any) -> Check:
    counts = ", ".join(f"{s} {n}" for s, n in scan.suffixes.most_common()) or "no users in scope"
    if tenant is None:
        return Check("upn-suffixes", "WARN", f"{counts}; not compared (the domains could not be read)")
    bad = {s: n for s, n in scan.suffixes.items() if not tenant.is_verified(s)}
    if not bad:
        return Check("upn-suffixes", "OK", f"{counts}: all verified")
    mode = rules.of("user").upn_unverified
    then = (
        f"exported as <local>@{tenant.initial} (upn_unverified = fallback)"
        if mode == "fallback"
        else "quarantined (upn_unverified = quarantine)"
    )
    unverified = ", ".join(f"{s} ({n} users)" for s, n in sorted(bad.items()))
    return Check(
        "upn-suffixes",
        "WARN",
        f"{counts}; not verified in the tenant: {unverified}: {then}",
        "verify the domains in the tenant, or change the users' UPN suffix in AD",
    )
