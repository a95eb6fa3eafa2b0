"""Rules that span several settings; each broken rule is a problem naming a setting."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

from idsync.config.errors import ConfigError, ConfigProblem
from idsync.config.model import Config
from idsync.config.secrets import check_secret, exclusive
from idsync.config.source import AD_MAX_PAGE_SIZE, DELTA_MODES
from idsync.config.target import is_microsoft_host
from idsync.config.writeback import writeback_problems

Rule = Callable[[Config], Iterator[ConfigProblem]]


def _source(cfg: Config) -> Iterator[ConfigProblem]:
    ldap = cfg.source.ldap
    kind = cfg.source.kind
    if ldap.delta_mode not in DELTA_MODES[kind]:
        allowed = ", ".join(repr(m) for m in DELTA_MODES[kind])
        yield ConfigProblem(
            "source.ldap.delta_mode",
            f"{ldap.delta_mode!r} is not available for kind {kind!r} (use {allowed})",
        )
    if kind == "ad" and ldap.page_size > AD_MAX_PAGE_SIZE:
        yield ConfigProblem(
            "source.ldap.page_size",
            f"must be at most {AD_MAX_PAGE_SIZE} for Active Directory (its MaxPageSize)",
        )
    if ldap.start_tls and any(u.lower().startswith("ldaps://") for u in ldap.urls):
        yield ConfigProblem("source.ldap.start_tls", "cannot be used with ldaps:// URLs (already TLS)")
    if ldap.bind_dn and not ldap.password_source().configured:
        yield ConfigProblem(
            "source.ldap.password_file",
            "bind_dn is set but no password is (set password_file, password_credential or password)",
        )
    if not ldap.bind_dn and ldap.password_source().configured:
        yield ConfigProblem("source.ldap.bind_dn", "a password is set but bind_dn is not")


def _target(cfg: Config) -> Iterator[ConfigProblem]:
    g = cfg.target.graph
    secret, cert = g.client_secret_source(), g.certificate_source()
    if g.anonymous:
        if is_microsoft_host(g.graph_endpoint):
            yield ConfigProblem(
                "target.graph.anonymous",
                f"is only allowed with an emulator endpoint, not {g.graph_endpoint}",
            )
        return
    for name in ("tenant_id", "client_id"):
        if getattr(g, name) is None:
            yield ConfigProblem(f"target.graph.{name}", "required unless anonymous = true")
    if secret.configured and cert.configured:
        yield ConfigProblem("target.graph.certificate_file", "set a client secret or a certificate, not both")
    elif not secret.configured and not cert.configured:
        yield ConfigProblem(
            "target.graph.client_secret_file",
            "no app credential: set client_secret_file, client_secret_credential, certificate_file "
            "or certificate_credential",
        )


def _ha(cfg: Config) -> Iterator[ConfigProblem]:
    ha, zk = cfg.ha, cfg.ha.zookeeper
    needed = ha.loop_interval_seconds + 2 * ha.retry_timeout_seconds
    if needed > zk.session_timeout_seconds:
        yield ConfigProblem(
            "ha.zookeeper.session_timeout_seconds",
            f"must be at least ha.loop_interval_seconds + 2 * ha.retry_timeout_seconds "
            f"({ha.loop_interval_seconds:g} + 2 * {ha.retry_timeout_seconds:g} = {needed:g}), "
            f"is {zk.session_timeout_seconds:g}",
        )
    lease = zk.session_timeout_seconds * 2 / 3
    if cfg.target.graph.request_timeout_seconds >= lease:
        yield ConfigProblem(
            "target.graph.request_timeout_seconds",
            f"must be less than 2/3 of ha.zookeeper.session_timeout_seconds ({lease:g}): the leader "
            "starts a write only while its lease outlasts the request, so that the write has ended "
            "before another node can be elected",
        )
    delay, write = ha.lock_delay_seconds, cfg.target.graph.request_timeout_seconds
    if delay is not None and delay < write:
        yield ConfigProblem(
            "ha.lock_delay_seconds",
            f"must be at least target.graph.request_timeout_seconds ({write:g}):"
            " after an unplanned takeover the old leader's last writes may take that long to end",
        )


def _store(cfg: Config) -> Iterator[ConfigProblem]:
    if not cfg.store.dsn_source().configured:
        yield ConfigProblem("store.dsn", "required (set dsn, dsn_file or dsn_credential)")
    if cfg.store.pool_min_size > cfg.store.pool_max_size:
        yield ConfigProblem("store.pool_min_size", "must not exceed store.pool_max_size")


def _admin(cfg: Config) -> Iterator[ConfigProblem]:
    if not cfg.admin.loopback and not cfg.admin.token_source().configured:
        yield ConfigProblem(
            "admin.token_file",
            f"required because admin.listen ({cfg.admin.listen}) is not a loopback address",
        )


def _exclusive_secrets(cfg: Config) -> Iterator[ConfigProblem]:
    for src in cfg.secret_sources():
        problem = exclusive(src)
        if problem:
            yield problem


RULES: tuple[Rule, ...] = (_source, _target, _ha, _store, _admin, _exclusive_secrets, writeback_problems)


def cross_field_problems(cfg: Config) -> list[ConfigProblem]:
    """Problems no single field can see (kind vs delta mode, the HA timing rule, ...)."""
    return [p for rule in RULES for p in rule(cfg)]


_DSN_PASSWORD = re.compile(r"://[^/@:]*:[^@]*@|\bpassword\s*=", re.IGNORECASE)


def inline_secret_warnings(cfg: Config) -> list[ConfigProblem]:
    """Secrets written inline in the file (allowed, discouraged). A DSN without a password is fine."""
    out = []
    for src in cfg.secret_sources():
        if src.inline is None:
            continue
        if src.path == "store.dsn" and not _DSN_PASSWORD.search(src.inline.get_secret_value()):
            continue
        name = src.path.rsplit(".", 1)[-1]
        out.append(ConfigProblem(src.path, f"secret written inline; prefer {name}_file or {name}_credential"))
    return out


def _file_problem(setting: str, path: Path) -> ConfigProblem | None:
    try:
        with path.open("rb"):
            return None
    except FileNotFoundError:
        return ConfigProblem(setting, f"{path} does not exist")
    except IsADirectoryError:
        return ConfigProblem(setting, f"{path} is a directory, not a file")
    except PermissionError:
        return ConfigProblem(setting, f"{path} is not readable (permission denied)")
    except OSError as exc:
        return ConfigProblem(setting, f"cannot read {path}: {exc.strerror}")


def file_problems(cfg: Config) -> list[ConfigProblem]:
    """Unreadable secrets and referenced files. Secret values are read and discarded."""
    creds = cfg._credentials_dir
    out = [p for src in cfg.secret_sources() if (p := check_secret(src, creds))]
    files = {
        "source.ldap.ca_file": cfg.source.ldap.ca_file,
        "target.graph.ca_file": cfg.target.graph.ca_file,
        "ha.zookeeper.ca_file": cfg.ha.zookeeper.ca_file,
        "sync.rules_file": cfg.sync.rules_file,
    }
    out += [p for setting, path in files.items() if path and (p := _file_problem(setting, path))]
    zk_auth = cfg.ha.zookeeper.auth_source()
    if zk_auth.configured and not any(p.path == zk_auth.setting() for p in out):
        try:
            cfg.ha.zookeeper.auth()  # also proves the user:password format
        except ConfigError as exc:
            out += exc.problems
    return out
