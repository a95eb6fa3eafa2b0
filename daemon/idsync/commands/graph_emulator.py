"""`idsync graph-emulator`: serve the offline Microsoft Graph emulator."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import sys
from pathlib import Path

CHOICE_SETTINGS = (
    "unregistered_extension_query",
    "bind_existing_member",
    "unreplicated_member",
    "manager_removed_delta",
    "deleted_immutable_id",
)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to its sub-command parser."""
    parser.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT", help="address to bind")
    parser.add_argument("--state", metavar="FILE", help="load state from FILE at start, save it there")
    parser.add_argument("--save-interval", type=float, default=30.0, metavar="S", help="autosave period")
    parser.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", metavar="FILE", help="private key for --tls-cert (PEM)")
    parser.add_argument("--anonymous", action="store_true", help="accept Graph calls without a token")
    parser.add_argument("--tenant", metavar="ID", help="tenant id (GUID)")
    parser.add_argument("--client-id", metavar="ID", help="the one app allowed to get tokens")
    parser.add_argument("--client-secret-file", metavar="FILE", help="file holding that app's secret")
    parser.add_argument("--domain", action="append", metavar="DOMAIN", help="verified domain (repeatable)")
    parser.add_argument(
        "--federated-domain",
        action="append",
        metavar="DOMAIN",
        help="verified domain whose authenticationType is Federated (repeatable; also a --domain)",
    )
    parser.add_argument(
        "--preregister-extension",
        action="append",
        metavar="NAME",
        help="register directory extension extension_<clientid>_NAME (String, on users and groups) "
        "at start, as an admin would (repeatable; default none: clients register their own through "
        "POST /applications/{id}/extensionProperties)",
    )
    parser.add_argument(
        "--client-roles",
        metavar="ROLE,ROLE",
        help="application permissions in the client's tokens (default: what idsync needs, "
        "docs/graph-emulator.md)",
    )
    parser.add_argument(
        "--extra-client",
        action="append",
        metavar="ID:SECRETFILE:ROLE,ROLE",
        help="another app allowed to get tokens, with its secret in SECRETFILE and these roles (repeatable)",
    )
    parser.add_argument(
        "--replication-lag",
        metavar="MIN:MAX",
        help="a new or changed object shows up in reads, $filter and delta after a random lag of "
        "MIN..MAX seconds; also runs $batch items in a random order",
    )
    parser.add_argument("--replication-seed", type=int, metavar="N", help="seed of the lag's RNG (default 0)")
    parser.add_argument(
        "--unregistered-extension-query",
        choices=("error", "ignore"),
        help="an unregistered extension in $select/$filter: 400 (default) or left out / matching nothing",
    )
    parser.add_argument(
        "--bind-existing-member",
        choices=("error", "ignore"),
        help="members@odata.bind naming a member already there: 400, nothing added (default), or skip it",
    )
    parser.add_argument(
        "--unreplicated-member",
        choices=("bad_request", "not_found"),
        help="a reference to an object not replicated yet: 400 (default, as documented) or 404",
    )
    parser.add_argument(
        "--manager-removed-delta",
        choices=("removed", "empty"),
        help="a removed manager in users/delta: an entry marked @removed (default) or an empty list",
    )
    parser.add_argument(
        "--deleted-immutable-id",
        choices=("free", "reserved"),
        help="does a soft-deleted user keep its onPremisesImmutableId taken until restored or purged? "
        "free (default): a new user may take it; reserved: creating one with it conflicts "
        "(Microsoft does not document either)",
    )
    parser.add_argument(
        "--batch-order",
        choices=("request", "random"),
        help="order of $batch items without dependsOn (default: random with --replication-lag)",
    )
    parser.add_argument("--write-budget", type=int, metavar="N", help="writes per window per app (0 = off)")
    parser.add_argument("--write-window", type=float, metavar="S", help="write window in seconds")
    parser.add_argument("--read-budget", type=int, metavar="RU", help="resource units per window (0 = off)")
    parser.add_argument("--read-window", type=float, metavar="S", help="resource-unit window in seconds")
    parser.add_argument("--no-throttle", action="store_true", help="turn both budgets off")
    parser.add_argument(
        "--no-throttle-warning",
        action="store_true",
        help="never send x-ms-throttle-limit-percentage (Graph sends it above 0.8 of the limit)",
    )
    parser.add_argument("--token-lifetime", type=float, metavar="S", help="access token lifetime")
    parser.add_argument(
        "--replication-delay",
        type=float,
        metavar="S",
        help="shorthand for --replication-lag S:S",
    )
    parser.add_argument(
        "--request-log-size",
        type=int,
        metavar="N",
        help="keep the last N calls for /_emulator/requests (default 200000)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        metavar="JSON",
        help='a fault rule active from the start, e.g. \'{"kind": "status", "status": 503, '
        '"probability": 0.05, "count": null}\' (repeatable)',
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM, then save the state file."""
    import ssl

    from idsync.emulator.app import EmulatorServer
    from idsync.emulator.config import ClientSpec, EmulatorConfig
    from idsync.emulator.faults import Fault
    from idsync.emulator.persistence import StateFileError

    cfg = EmulatorConfig(anonymous=args.anonymous)
    if args.tenant:
        cfg.tenant_id = args.tenant
    if args.client_id:
        cfg.client_id = args.client_id
    if args.client_secret_file:
        try:
            cfg.client_secret = Path(args.client_secret_file).read_text().strip()
        except OSError as e:
            print(f"graph-emulator: cannot read --client-secret-file: {e}", file=sys.stderr)
            return 2
    if args.domain:
        cfg.domains = args.domain
    if args.federated_domain:
        cfg.federated_domains = args.federated_domain
        cfg.domains = [*cfg.domains, *(d for d in args.federated_domain if d not in cfg.domains)]
    if args.preregister_extension:
        cfg.preregister_extensions = args.preregister_extension
    if args.client_roles is not None:
        cfg.client_roles = [r.strip() for r in args.client_roles.split(",") if r.strip()]
    for spec in args.extra_client or []:
        cid, _, rest = spec.partition(":")
        secret_file, _, roles = rest.partition(":")
        if not cid or not secret_file:
            print(f"graph-emulator: --extra-client wants ID:SECRETFILE:ROLES, not {spec!r}", file=sys.stderr)
            return 2
        try:
            secret = Path(secret_file).read_text().strip()
        except OSError as e:
            print(f"graph-emulator: cannot read the secret of --extra-client {cid}: {e}", file=sys.stderr)
            return 2
        cfg.extra_clients.append(ClientSpec(cid, secret, [r for r in roles.split(",") if r], cid))
    if args.replication_lag:
        lo, _, hi = args.replication_lag.partition(":")
        try:
            cfg.replication_lag_min, cfg.replication_lag_max = float(lo), float(hi or lo)
        except ValueError:
            print(
                f"graph-emulator: --replication-lag wants MIN:MAX seconds, not {args.replication_lag!r}",
                file=sys.stderr,
            )
            return 2
    if args.replication_seed is not None:
        cfg.replication_seed = args.replication_seed
    # Where Microsoft is silent: each choice flag sets the config field of the same name.
    for name in CHOICE_SETTINGS:
        if getattr(args, name):
            setattr(cfg, name, getattr(args, name))
    if args.batch_order:
        cfg.batch_random_order = args.batch_order == "random"
    for name in (
        "write_budget",
        "write_window",
        "read_budget",
        "read_window",
        "token_lifetime",
        "replication_delay",
        "request_log_size",
    ):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.no_throttle:
        cfg.write_budget = cfg.read_budget = 0
    if args.no_throttle_warning:
        cfg.throttle_warning = False
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        print(f"graph-emulator: --listen wants HOST:PORT, not {args.listen!r}", file=sys.stderr)
        return 2
    if host not in ("127.0.0.1", "::1", "localhost"):
        print(
            "graph-emulator: warning: /_emulator (state, reset, faults) has no authentication; "
            f"it is reachable by anyone who can reach {host}",
            file=sys.stderr,
        )
    ctx = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            print("graph-emulator: --tls-cert and --tls-key go together", file=sys.stderr)
            return 2
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    server = EmulatorServer(cfg, host, int(port), ctx, args.state, args.save_interval)
    for text in args.fault or []:
        try:
            server.emulator.faults.add(Fault.from_dict(json.loads(text)))
        except (ValueError, TypeError) as e:
            print(f"graph-emulator: bad --fault {text!r}: {e}", file=sys.stderr)
            return 2
    # a directory of 10^5 objects is long-lived data: collect the young generation less often
    gc.set_threshold(50_000, 20, 100)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.start()
        mode = "anonymous" if cfg.anonymous else f"tenant {cfg.tenant_id}, client {cfg.client_id}"
        print(
            f"graph-emulator: serving {server.graph_url} ({mode}; domains {', '.join(cfg.domains)})",
            flush=True,
        )
        await stop.wait()
        await server.stop()

    try:
        asyncio.run(main())
    except StateFileError as e:
        print(f"graph-emulator: {e}", file=sys.stderr)
        return 1
    return 0
