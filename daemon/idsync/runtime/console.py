"""The web console at `/` of the admin server: the cluster at a glance, for an operator who
would rather look than read.

Read-only and server-rendered (no build step, no JavaScript needed, nothing fetched from the
internet): the cluster's nodes with role, epoch, health and each node's last cycle sentence, the
pending exports of this node (summary and a paged list with old -> new values), quarantined
objects with their reasons, deletion-guard holds, and the leadership history. It sits behind the
admin server's token check like every other endpoint.

Every source is read on its own and a failing one (ZooKeeper down, the store unreachable, a peer
not answering) is shown as such in its section; the rest of the page still renders.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import ipaddress
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog
from aiohttp import web

from idsync import metrics
from idsync.sync.preview import reference_arrow

if TYPE_CHECKING:
    from idsync.ha.history import HistoryEntry
    from idsync.ha.loop import HaLoop
    from idsync.ha.records import ClusterView
    from idsync.model import Quarantined
    from idsync.runtime.admin import AdminState, NodeSnapshot
    from idsync.store.db import Store
    from idsync.sync.preview import PreviewItem

log = structlog.get_logger(__name__)
T = TypeVar("T")

PAGE_SIZE = 50  # pending operations per page
HISTORY_SHOWN = 50  # newest leadership changes shown
QUARANTINE_SHOWN = 200
PEER_TIMEOUT = 1.5  # seconds to wait for another node's /health
AUTO_REFRESH = 5  # seconds between reloads when the operator turns auto-refresh on


# -- what the page shows ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterState:
    """The cluster as ZooKeeper has it, plus the leadership history."""

    view: ClusterView
    history: Sequence[HistoryEntry]


@dataclass(frozen=True)
class PendingPage:
    """One page of this node's pending exports, and the counts by operation and state."""

    counts: Mapping[tuple[str, str, str], int]
    items: Sequence[PreviewItem]
    page: int
    more: bool  # a next page exists


@dataclass(frozen=True)
class GuardState:
    holding: bool  # the deletion guard held the last export back
    holds: Sequence[tuple[str, int, datetime]]  # recorded held delete sets: fingerprint, deletes, when


@dataclass(frozen=True)
class Section(Generic[T]):
    """A source's data, or why it could not be read."""

    data: T | None = None
    error: str = ""


@dataclass(frozen=True)
class ConsoleData:
    cluster_name: str
    me: NodeSnapshot
    cluster: Section[ClusterState] = field(default_factory=Section)
    peers: Mapping[str, Section[Mapping[str, Any]]] = field(default_factory=dict)  # node -> /health
    pending: Section[PendingPage] = field(default_factory=Section)
    quarantine: Section[Sequence[Quarantined]] = field(default_factory=Section)
    guard: Section[GuardState] = field(default_factory=Section)
    now: float = 0.0


# -- where it comes from ----------------------------------------------------------------------


class ConsoleSources:
    """Blocking readers of the console's data (run in threads), over a node's ZooKeeper session
    and store. Either may be None: a standalone node has no cluster, a bare server no store."""

    def __init__(self, cluster_name: str, ha: HaLoop | None, store: Store | None) -> None:
        self.cluster_name = cluster_name
        self.ha = ha
        self.store = store

    def cluster(self) -> ClusterState:
        from idsync.ha import history

        if self.ha is None:
            raise LookupError("standalone node: no ZooKeeper cluster")
        coord: Any = self.ha.coord
        view = coord.read()
        entries = history.read(
            coord.client, coord.paths.base, coord.settings.retry_timeout, limit=HISTORY_SHOWN
        )
        return ClusterState(view, entries)

    def members_trusted(self) -> bool:
        """True when only holders of the cluster's ZooKeeper credentials can write member records
        (their admin URLs): only then may this node's token be sent to another host's URL."""
        coord: Any = self.ha.coord if self.ha is not None else None
        return bool(coord is not None and getattr(coord.settings, "auth", None))

    def _need_store(self) -> Store:
        if self.store is None:
            raise LookupError("this node's store is not available to the console")
        return self.store

    def pending(self, page: int) -> PendingPage:
        from idsync.sync import preview

        store = self._need_store()
        counts = preview.status_counts(store)
        start = (page - 1) * PAGE_SIZE
        # One more than a page tells whether a next page exists.
        items = list(
            islice(preview.iter_items(store, page=start + PAGE_SIZE + 1), start, start + PAGE_SIZE + 1)
        )
        return PendingPage(counts, items[:PAGE_SIZE], page, len(items) > PAGE_SIZE)

    def quarantine(self) -> Sequence[Quarantined]:
        from idsync.store import quarantine

        with self._need_store().connection() as conn:
            return quarantine.listing(conn)[:QUARANTINE_SHOWN]

    def guard(self) -> GuardState:
        from idsync.store import pending

        with self._need_store().connection() as conn:
            holds = pending.holds(conn)
        holding = metrics.REGISTRY.get_sample_value("idsync_deletion_guard_holding")  # set each cycle
        return GuardState(bool(holding), holds)


async def _section(read: Callable[[], T]) -> Section[T]:
    try:
        return Section(await asyncio.to_thread(read))
    except LookupError as exc:
        return Section(error=str(exc))
    except Exception as exc:  # a source is down: say so on the page, the daemon keeps running
        log.warning("console.source_failed", source=getattr(read, "__name__", "?"), error=repr(exc))
        return Section(error=f"cannot read: {type(exc).__name__}: {exc}")


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _peer(
    session: aiohttp.ClientSession, url: str, token: str | None, trusted: bool
) -> Section[Mapping[str, Any]]:
    # A member record names the URL; without ZooKeeper credentials anyone could have written it,
    # so the token goes only to this host then.
    send = token if trusted or _loopback(url) else None
    headers = {"Authorization": f"Bearer {send}"} if send else {}
    try:
        async with session.get(f"{url}/health", headers=headers) as resp:
            if resp.status == 401 and token and not send:
                return Section(
                    error="its admin API wants a token; not sent, as the cluster's znodes are"
                    " world-writable ([ha.zookeeper] auth)"
                )
            if resp.status == 401:
                return Section(error="its admin API refused this node's token (401)")
            body = orjson.loads(await resp.read())
            return Section(body if isinstance(body, dict) else {})
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
        return Section(error=f"not answering at {url}: {type(exc).__name__}")


async def gather(state: AdminState, sources: ConsoleSources, page: int, token: str | None) -> ConsoleData:
    """Read every source concurrently; each failure stays in its own section."""
    me = state.snapshot()
    cluster, pending, quarantine, guard = await asyncio.gather(
        _section(sources.cluster),
        _section(lambda: sources.pending(page)),
        _section(sources.quarantine),
        _section(sources.guard),
    )
    peers: dict[str, Section[Mapping[str, Any]]] = {}
    if cluster.data is not None:
        others = {
            n: m.admin_url for n, m in cluster.data.view.members.items() if n != me.node and m.admin_url
        }
        if others:
            timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                trusted = sources.members_trusted()
                got = await asyncio.gather(*(_peer(session, u, token, trusted) for u in others.values()))
            peers = dict(zip(others, got, strict=True))
    return ConsoleData(sources.cluster_name, me, cluster, peers, pending, quarantine, guard, time.time())


# -- rendering: pure functions of ConsoleData ---------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _value(v: Any) -> str:
    if v is None:
        return '<span class="none">∅</span>'
    text = v if isinstance(v, str) else orjson.dumps(v).decode()
    return f"<code>{_e(text)}</code>"


def _ago(now: float, then: float) -> str:
    if not then:
        return "never"
    secs = max(0.0, now - then)
    if secs < 120:
        return f"{secs:.0f}s ago"
    if secs < 7200:
        return f"{secs / 60:.0f}m ago"
    return f"{secs / 3600:.1f}h ago"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], cls: str, empty: str) -> str:
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _error(section: Section[Any]) -> str:
    return f'<p class="error">{_e(section.error)}</p>' if section.error else ""


def _badge(text: str, kind: str) -> str:
    return f'<span class="badge {kind}">{_e(text)}</span>'


def _cluster_html(d: ConsoleData) -> str:
    me = d.me
    out = ['<section id="cluster"><h2>Cluster</h2>']
    cs = d.cluster.data
    if cs is None:
        out.append(_error(d.cluster))
        head = f"Node {_e(me.node)}: {_e(me.role)} at epoch {me.epoch}"
        out.append(f'<p class="summary">{head}</p>')
    else:
        v = cs.view
        leader = v.leader.node if v.leader else None
        line = [f"epoch <b>{v.epoch.epoch}</b>"]
        line.append(f"leader <b>{_e(leader)}</b>" if leader else _badge("NO LEADER", "bad"))
        if v.pause:
            ack = f", acknowledged by {v.pause.ack_node}" if v.pause.ack_node else ""
            why = f": {v.pause.reason}" if v.pause.reason else ""
            line.append(_badge(f"PAUSED by {v.pause.by or '?'}{ack}{why}", "warn"))
        if v.switchover:
            line.append(
                _e(f"switchover requested to {v.switchover.to or 'any healthy node'} by {v.switchover.by}")
            )
        if v.failover:
            line.append(_e(f"failover requested to {v.failover.to} by {v.failover.by}"))
        if v.rules_version:
            line.append(f"rules <b>v{v.rules_version}</b>")
        if v.trial_node:
            line.append(_badge(f"rules trial {v.trial_hash[:12]} on {v.trial_node}", "warn"))
        out.append(f'<p class="summary">{" · ".join(line)}</p>')
    out.append(_members_html(d))
    out.append("</section>")
    return "".join(out)


def _members_html(d: ConsoleData) -> str:
    from idsync.ha.control import healthy

    me = d.me
    rows: list[list[str]] = []
    members = d.cluster.data.view.members if d.cluster.data else {}
    leader = d.cluster.data.view.leader if d.cluster.data else None
    names = sorted(set(members) | {me.node})
    for name in names:
        m = members.get(name)
        if name == me.node:
            role, epoch, sentence = me.role, me.epoch, me.sentence
            ok = me.healthy
            note = me.reason
            last = _ago(d.now, d.now - me.since_success) if me.since_success is not None else "never"
            pending = sum(me.pending.values())
            shown = f"<b>{_e(name)}</b> (this node)"
        else:
            assert m is not None
            role = "leader" if leader is not None and leader.node == name else m.role
            epoch = m.epoch or (leader.epoch if leader else 0)
            ok = healthy(m, d.now)
            note = m.reason
            last = _ago(d.now, m.last_cycle_ok)
            pending = sum(m.pending.values())
            peer = d.peers.get(name, Section[Mapping[str, Any]](error="no admin URL published"))
            sentence = str(peer.data.get("decision", "")) if peer.data is not None else ""
            if peer.error:
                note = f"{note}; {peer.error}" if note else peer.error
            shown = _e(name)
        rows.append(
            [
                shown,
                _badge(role, "leader" if role == "leader" else "role"),
                str(epoch),
                # A rules trial node is not failing: it runs candidate rules and never leads.
                _badge("trial", "warn")
                if m is not None and m.trial
                else _badge("healthy", "ok")
                if ok
                else _badge("UNHEALTHY", "bad"),
                _e(last),
                str(pending),
                f'<span class="sentence">{_e(sentence)}</span>',
                _e(note),
            ]
        )
    head = ["node", "role", "epoch", "health", "last good cycle", "pending", "last cycle", "note"]
    return _table(head, rows, "members", "no running members")


def _pending_html(d: ConsoleData) -> str:
    out = [f'<section id="pending"><h2>Pending exports of {_e(d.me.node)}</h2>', _error(d.pending)]
    p = d.pending.data
    if p is not None:
        total = sum(p.counts.values())
        by_state: dict[str, int] = {}
        rows = []
        for (kind, otype, state), n in sorted(p.counts.items()):
            rows.append([_e(kind), _e(otype), _e(state), str(n)])
            by_state[state] = by_state.get(state, 0) + n
        states = ", ".join(f"{k} {v}" for k, v in sorted(by_state.items()))
        out.append(
            f'<p class="summary">{total} pending operations{(" (" + _e(states) + ")") if states else ""}</p>'
        )
        out.append(_table(["operation", "type", "state", "count"], rows, "counts", "nothing pending"))
        if p.items:
            out.append(_items_html(p.items))
        out.append(_pager(p))
    out.append("</section>")
    return "".join(out)


def _items_html(items: Sequence[PreviewItem]) -> str:
    rows = []
    for i in items:
        name = _e(i.name)
        if i.member_anchor:
            arrow = reference_arrow(i.kind)
            name += f" {arrow} {_e(i.member_name)}"
        if i.changes:
            changes = "".join(
                f'<div class="change"><span class="attr">{_e(c.attribute)}</span> '
                f"{_value(c.old) if i.kind != 'create' else ''}"
                f"{' → ' if i.kind != 'create' else ''}{_value(c.new)}</div>"
                for c in i.changes
            )
        else:
            changes = ""
        status = _e(i.status) if i.status == "ready" else f'<span class="warn">{_e(i.status)}</span>'
        where = "AD" if i.target == "ad" else "Entra ID"
        rows.append([str(i.id), where, _e(i.kind), _e(i.object_type), name, changes, status])
    return _table(["#", "to", "operation", "type", "object", "old → new", "status"], rows, "ops", "")


def _pager(p: PendingPage) -> str:
    links = []
    if p.page > 1:
        links.append(f'<a href="/?page={p.page - 1}#pending" rel="prev">← previous</a>')
    links.append(f"page {p.page}")
    if p.more:
        links.append(f'<a href="/?page={p.page + 1}#pending" rel="next">next →</a>')
    return f'<nav class="pager">{" · ".join(links)}</nav>'


def _quarantine_html(d: ConsoleData) -> str:
    out = ['<section id="quarantine"><h2>Quarantine</h2>', _error(d.quarantine)]
    if d.quarantine.data is not None:
        rows = [
            [_e(q.phase), _e(q.object_type or ""), _e(q.dn or q.key), _e(q.reason)] for q in d.quarantine.data
        ]
        out.append(_table(["phase", "type", "object", "reason"], rows, "quarantine", "nothing quarantined"))
    out.append("</section>")
    return "".join(out)


def _guard_html(d: ConsoleData) -> str:
    out = ['<section id="guard"><h2>Deletion guard</h2>', _error(d.guard)]
    g = d.guard.data
    if g is not None:
        if g.holding:
            out.append(
                '<p class="summary">'
                + _badge("HOLDING all exports", "bad")
                + " · <code>idsync approve-deletes</code> shows the held deletes</p>"
            )
        else:
            out.append('<p class="summary">not holding</p>')
        rows = [
            [f"<code>{_e(fp)}</code>", str(n), _e(at.strftime("%Y-%m-%d %H:%M:%S %Z"))]
            for fp, n, at in g.holds
        ]
        out.append(
            _table(["held delete set", "deletes", "held at"], rows, "holds", "no delete set was ever held")
        )
    out.append("</section>")
    return "".join(out)


def _history_html(d: ConsoleData) -> str:
    out = ['<section id="history"><h2>Leadership history</h2>', _error(d.cluster)]
    if d.cluster.data is not None:
        rows = [
            [str(e.epoch), _e(e.when()), _e(e.old or "-"), _e(e.node), _e(e.reason)]
            for e in reversed(d.cluster.data.history)
        ]
        out.append(
            _table(
                ["epoch", "time", "old", "new", "reason"], rows, "history", "no leadership changes recorded"
            )
        )
    out.append("</section>")
    return "".join(out)


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d232a;background:#f5f6f8}
header{background:#1d2b3a;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:baseline}
header h1{font-size:18px;margin:0}header a{color:#9cc7ff;margin-right:8px}main{padding:10px 20px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;margin:12px 0;padding:8px 14px}
h2{font-size:16px;margin:6px 0}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceff2;vertical-align:top}
th{font-weight:600;color:#56606b;font-size:12px;text-transform:uppercase}
.badge{padding:1px 7px;border-radius:9px;font-size:12px;background:#e4e8ec}
.badge.leader{background:#1f6feb;color:#fff}.badge.ok{background:#d3f3dc;color:#135c2a}
.badge.bad{background:#fbd5d5;color:#8a1212}.badge.warn{background:#fff0c2;color:#6b5000}
.error{color:#8a1212}.warn{color:#8a5a00}.empty,.none{color:#7b8590}.sentence{font-family:monospace;font-size:12px}
.change .attr{color:#56606b}code{font-size:12px}nav.pager{margin:6px 0}
"""


def render(d: ConsoleData, refresh: int = 0) -> str:
    """The whole page; `refresh` > 0 reloads it every that many seconds (no script needed)."""
    generated = datetime.fromtimestamp(d.now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    reload = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    toggle = (
        '<a href="/">stop auto-refresh</a>'
        if refresh
        else '<a href="/">refresh</a>'
        f'<a href="/?refresh={AUTO_REFRESH}">auto-refresh every {AUTO_REFRESH}s</a>'
    )
    body = "".join(
        [_cluster_html(d), _pending_html(d), _quarantine_html(d), _guard_html(d), _history_html(d)]
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>idsync {_e(d.cluster_name)} · {_e(d.me.node)}</title>"
        f"<meta name=viewport content='width=device-width'>{reload}<style>{STYLE}</style></head><body>"
        f"<header><h1>idsync · cluster {_e(d.cluster_name)}</h1><span>node {_e(d.me.node)}</span>"
        f"<span>{_e(generated)}</span>{toggle}</header><main>{body}</main></body></html>"
    )


# -- the route ----------------------------------------------------------------------------------


def add_routes(
    app: web.Application,
    state: AdminState,
    sources: ConsoleSources,
    token: Callable[[], str | None],
    cookie: str,
) -> None:
    """Serve the console at `/` of `app` (behind the app's own token middleware); `/login` sets
    the token in the cookie `cookie`, which that middleware accepts in place of the header."""

    async def index(request: web.Request) -> web.Response:
        try:
            page = int(request.query.get("page", "1"))
            refresh = int(request.query.get("refresh", "0"))
        except ValueError:
            page = refresh = -1
        if page < 1 or not 0 <= refresh <= 3600:
            return web.Response(status=400, text="page must be a whole number from 1, refresh 0 to 3600")
        data = await gather(state, sources, page, token())
        return web.Response(text=render(data, refresh), content_type="text/html", charset="utf-8")

    async def login_form(request: web.Request) -> web.Response:
        return web.Response(text=_login_page(""), content_type="text/html", charset="utf-8")

    async def login(request: web.Request) -> web.Response:
        given = str((await request.post()).get("token", "")).strip()
        expected = token()
        if expected is None:
            raise web.HTTPSeeOther("/")  # no token configured: nothing to sign in to
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return web.Response(
                text=_login_page("That is not the admin token."),
                status=401,
                content_type="text/html",
                charset="utf-8",
            )
        resp = web.HTTPSeeOther("/")
        # HttpOnly: no script reads it; SameSite=Strict: no other site's page sends it.
        resp.set_cookie(cookie, given, httponly=True, samesite="Strict", path="/")
        raise resp

    handler: Callable[[web.Request], Awaitable[web.StreamResponse]] = index
    app.router.add_get("/", handler)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)


def _login_page(problem: str) -> str:
    note = f'<p class="error">{_e(problem)}</p>' if problem else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>idsync · sign in</title>"
        f"<style>{STYLE}</style></head><body><header><h1>idsync console</h1></header><main><section>"
        "<h2>Admin token</h2><p>This node's admin API requires its bearer token "
        "(<code>admin.token_file</code>).</p>"
        f'{note}<form method=post action="/login"><input type=password name=token autofocus '
        "autocomplete=current-password size=40> <button type=submit>Sign in</button></form>"
        "</section></main></body></html>"
    )
