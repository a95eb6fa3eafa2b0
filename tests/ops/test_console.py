"""The web console at `/` of real `idsync run` processes, looked at in a real headless browser.

Debian's chromium driven by Playwright (the system browser, nothing downloaded). The cluster is
real (ZooKeeper, PostgreSQL, Samba AD, the Graph emulator) and so is what the page shows: two
nodes after a switchover, a pause holding an update whose old and new values are shown, a user
quarantined by the rules, the leadership history. The screenshot is written beside the test
output (tmp_path) and copied to $IDSYNC_ARTIFACTS when set.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from idsync.cli import main
from tests.cluster.cluster import LocalCluster
from tests.cluster.directory import AdDirectory
from tests.cluster.instance import wait_for
from tests.conftest import ClusterFactory
from tests.ops.test_admin import serve  # noqa: F401  (fixture)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "console-test-token"
ELSEWHERE = "unverified.example"  # a UPN suffix the emulator's tenant has not verified


@pytest.fixture
def cluster(tmp_path: Path, local_cluster: ClusterFactory) -> Iterator[LocalCluster]:
    rules = tmp_path / "rules.toml"
    rules.write_text('[user]\nupn_unverified = "quarantine"\n')
    token = tmp_path / "admin-token"
    token.write_text(TOKEN + "\n")
    with local_cluster(
        session_timeout=2.0,
        deletion_threshold=1,  # two deletes make the guard hold
        extra={"sync": {"rules_file": str(rules)}, "admin": {"token_file": str(token)}},
    ) as c:
        yield c


def get(port: int, path: str, token: str | None = TOKEN) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            status, raw, ctype = resp.status, resp.read(), resp.headers.get_content_type()
    except urllib.error.HTTPError as exc:
        status, raw, ctype = exc.code, exc.read(), exc.headers.get_content_type()
    except OSError:
        return 0, None  # not listening yet
    return status, orjson.loads(raw) if ctype == "application/json" else raw.decode()


def artifact(shot: Path) -> None:
    where = os.environ.get("IDSYNC_ARTIFACTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(where) / shot.name)


def test_the_console_shows_the_cluster_in_a_real_browser(
    cluster: LocalCluster,
    ad: AdDirectory,
    samba_ou: str,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    users = [ad.add_user(samba_ou, f"u{uuid.uuid4().hex[:8]}", department="Sales") for _ in range(3)]
    odd = ad.add_user(samba_ou, f"q{uuid.uuid4().hex[:8]}", domain=ELSEWHERE)
    cluster.start("a")
    assert cluster.wait_leader() == "a"
    cluster.start("b")
    a, b = cluster.nodes["a"].admin_port, cluster.nodes["b"].admin_port
    wait_for(lambda: get(b, "/staging")[0] == 200, 60, "b to answer 200 on /staging")
    assert main(["switchover", "--to", "b", *cluster.ctl_args()]) == 0
    wait_for(lambda: get(b, "/leader")[0] == 200, 30, "b to lead")
    # Held by a pause, an update stays pending on the leader with its old and new value.
    assert main(["pause", "--reason", "console test", *cluster.ctl_args()]) == 0
    ad.replace(users[0].dn, department="Marketing")
    for u in users[1:]:
        ad.delete(u.dn)  # over the deletion threshold: the guard holds
    wait_for(lambda: get(b, "/pending")[1]["pending"].get("update"), 60, "the update pending on b")
    wait_for(lambda: get(b, "/pending")[1]["pending"].get("delete") == 2, 60, "the deletes pending on b")
    wait_for(lambda: get(a, "/health")[0] == 200, 30, "a healthy")

    # The same token rules as the API: nothing without it.
    code, page = get(b, "/", token=None)  # redirected to the sign-in form
    assert code == 200 and '<form method=post action="/login">' in page and "cluster t" not in page
    assert get(b, "/metrics", token=None)[0] == 401
    code, page = get(b, "/")
    assert code == 200 and "cluster t" in page

    shot = tmp_path / "console.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            ctx = browser.new_context(viewport={"width": 1400, "height": 900})
            tab = ctx.new_page()
            requested: list[str] = []
            tab.on("request", lambda req: requested.append(req.url))
            # Without the token the browser is sent to the sign-in form; a wrong token is refused.
            tab.goto(f"http://127.0.0.1:{b}/")
            assert tab.url.endswith("/login")
            tab.fill("input[name=token]", "wrong")
            tab.click("button[type=submit]")
            assert "That is not the admin token." in tab.inner_text("main")
            tab.fill("input[name=token]", TOKEN)
            tab.click("button[type=submit]")
            tab.wait_for_selector("#cluster")
            assert tab.url == f"http://127.0.0.1:{b}/"

            summary = tab.inner_text("#cluster .summary")
            assert "epoch 2" in summary and "leader b" in summary and "PAUSED by" in summary
            rows = {
                r.inner_text().split()[0]: r.inner_text()
                for r in tab.query_selector_all("#cluster table.members tbody tr")
            }
            assert set(rows) == {"a", "b"}
            assert "leader" in rows["b"] and "(this node)" in rows["b"]
            assert "staging" in rows["a"] and "healthy" in rows["a"]
            # Each node's last cycle sentence: b's own, a's read from a's admin API with the token.
            assert "leader at epoch 2: paused by" in rows["b"]
            assert "staging: leader is b (epoch 2)" in rows["a"]

            pending = tab.inner_text("#pending")
            assert "update" in pending and users[0].upn in pending
            assert "department" in pending and "Sales → Marketing" in pending

            quarantine = tab.inner_text("#quarantine")
            assert odd.dn in quarantine or odd.guid in quarantine
            assert f"UPN suffix {ELSEWHERE}" in quarantine and "not a verified domain" in quarantine

            guard = tab.inner_text("#guard")
            assert "HOLDING all exports" in guard
            [held] = tab.query_selector_all("#guard table.holds tbody tr")
            assert held.inner_text().split("\t")[1] == "2"  # the held set: two deletes

            history = [r.inner_text().split("\t") for r in tab.query_selector_all("#history tbody tr")]
            assert [(h[0], h[2], h[3]) for h in history] == [("2", "a", "b"), ("1", "-", "a")]
            assert (
                history[0][4].startswith("switchover by ") and history[1][4] == "first leader of the cluster"
            )

            tab.screenshot(path=str(shot), full_page=True)
            # Works without internet: every request the page made went to this node.
            assert requested and all(u.startswith(f"http://127.0.0.1:{b}/") for u in requested), requested
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    artifact(shot)
    print(f"console screenshot: {shot}")


# -- the page without a browser: sources that fail, hostile text, the sign-in ------------------


async def test_a_node_without_cluster_or_store_still_renders_and_says_why(serve: Any) -> None:  # noqa: F811
    from idsync.runtime.console import ConsoleSources
    from tests.ops.test_admin import LEADER, FixedState
    from tests.ops.test_admin import get as aget

    server = await serve(FixedState(LEADER), console=ConsoleSources("c", None, None))
    status, page = await aget(server.url + "/")
    assert status == 200
    assert "standalone node: no ZooKeeper cluster" in page
    assert (
        page.count("this node&#x27;s store is not available to the console") == 3
    )  # pending, quarantine, guard
    assert "<b>a</b> (this node)" in page and "leader at epoch 7: exporting" in page
    assert (await aget(server.url + "/?page=0"))[0] == 400
    assert (await aget(server.url + "/?page=x"))[0] == 400
    _, page = await aget(server.url + "/?refresh=5")  # auto-refresh: the browser reloads, no script
    assert '<meta http-equiv="refresh" content="5">' in page and "<script" not in page
    assert '<meta http-equiv="refresh"' not in (await aget(server.url + "/"))[1]
    assert (await aget(server.url + "/?refresh=-1"))[0] == 400


async def test_text_from_the_directory_is_escaped(serve: Any) -> None:  # noqa: F811
    import dataclasses

    from idsync.runtime.console import ConsoleSources
    from tests.ops.test_admin import LEADER, FixedState
    from tests.ops.test_admin import get as aget

    hostile = dataclasses.replace(
        LEADER, sentence='leader: <script>alert("x")</script>', reason="<img src=x>"
    )
    server = await serve(FixedState(hostile), console=ConsoleSources("c<b>", None, None))
    _, page = await aget(server.url + "/")
    assert "<script>alert" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<img src=x>" not in page and "c&lt;b&gt;" in page


async def test_sign_in_sets_a_cookie_the_token_check_accepts(serve: Any, tmp_path: Path) -> None:  # noqa: F811
    import aiohttp

    from idsync.runtime.console import ConsoleSources
    from tests.ops.test_admin import LEADER, FixedState, settings

    token = tmp_path / "token"
    token.write_text("s3cret\n")
    server = await serve(
        FixedState(LEADER), settings(token_file=token), console=ConsoleSources("c", None, None)
    )
    # unsafe: keep cookies of an IP-address host (127.0.0.1), as a browser does
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(server.url + "/", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/login"
        async with http.get(server.url + "/pending") as resp:
            assert resp.status == 401  # the API still answers 401, not a redirect
        async with http.post(server.url + "/login", data={"token": "wrong"}, allow_redirects=False) as resp:
            assert resp.status == 401 and "That is not the admin token." in await resp.text()
        async with http.post(server.url + "/login", data={"token": "s3cret"}, allow_redirects=False) as resp:
            assert resp.status == 303
            port = server.url.rsplit(":", 1)[1]
            cookie = resp.cookies[f"idsync_admin_token_{port}"]  # its own, beside another node's
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
        async with http.get(server.url + "/") as resp:  # the session now sends the cookie
            assert resp.status == 200 and "cluster c" in await resp.text()
        token.write_text("rotated\n")  # a rotated token ends the browser's access too
        async with http.get(server.url + "/", allow_redirects=False) as resp:
            assert resp.status == 303


def _own_address() -> str | None:
    """This host's non-loopback IPv4 address (no packet is sent), None when it has none."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the outgoing interface
            addr = str(s.getsockname()[0])
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


@pytest.mark.parametrize("credentials", [None, ("idsync", "pw")])
async def test_the_token_goes_to_another_host_only_when_member_records_are_protected(
    credentials: tuple[str, str] | None,
) -> None:
    """Without ZooKeeper credentials anyone may have written a member's admin URL: the console
    must not hand its token to such a URL (it still does to this host's own loopback peers)."""
    from types import SimpleNamespace

    from aiohttp import web

    from idsync.ha.records import ClusterView, EpochRecord, MemberRecord
    from idsync.runtime.console import ClusterState, ConsoleSources, gather
    from tests.harness.ports import free_port
    from tests.ops.test_admin import LEADER, FixedState

    addr = _own_address()
    if addr is None:
        pytest.skip("this host has no non-loopback IPv4 address to serve a peer on")
    seen: list[str] = []

    async def health(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Bearer tok":
            return web.json_response({"error": "a valid bearer token is required"}, status=401)
        return web.json_response({"decision": "staging: leader is a (epoch 7)"})

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, addr, port).start()

    class Sources(ConsoleSources):
        def cluster(self) -> ClusterState:
            peer = MemberRecord(node="b", role="staging", admin_url=f"http://{addr}:{port}")
            view = ClusterView(None, EpochRecord(7), 7, {"b": peer}, None, None, None, None)
            return ClusterState(view, [])

    ha: Any = SimpleNamespace(coord=SimpleNamespace(settings=SimpleNamespace(auth=credentials)))
    try:
        data = await gather(FixedState(LEADER), Sources("c", ha, None), 1, "tok")
    finally:
        await runner.cleanup()
    peer = data.peers["b"]
    if credentials:
        assert seen == ["Bearer tok"] and peer.data == {"decision": "staging: leader is a (epoch 7)"}
    else:
        assert seen == [""] and peer.data is None
        assert "not sent, as the cluster's znodes are world-writable" in peer.error
