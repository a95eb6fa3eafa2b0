"""The state file: saved at stop, loaded at start, delta tokens and bearer tokens survive."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp
import orjson
import pytest

from idsync.emulator.app import EmulatorServer
from idsync.emulator.persistence import StateFileError
from tests.emulator.conftest import Graph, make_config
from tests.emulator.tlsutil import PKIFiles


async def test_restart_keeps_objects_and_delta_tokens(tmp_path: Path) -> None:
    path = str(tmp_path / "state.json")
    async with EmulatorServer(make_config(), state_path=path) as srv, aiohttp.ClientSession() as s:
        g = Graph(srv, s)
        u = await g.create_user("nia")
        grp = await g.create_group("keep")
        await g.call(
            "POST",
            f"/groups/{grp['id']}/members/$ref",
            {"@odata.id": f"https://graph.microsoft.com/v1.0/directoryObjects/{u['id']}"},
        )
        r = await g.call("GET", "/users/delta")
        link = r.body["@odata.deltaLink"]
        token = g.token
    assert Path(path).exists()
    async with EmulatorServer(make_config(), state_path=path) as srv, aiohttp.ClientSession() as s:
        g = Graph(srv, s)
        g.token = token  # issued before the restart: still valid
        assert (await g.call("GET", "/users/nia@example.com")).status == 200
        members = (await g.call("GET", f"/groups/{grp['id']}/members")).body["value"]
        assert [m["id"] for m in members] == [u["id"]]
        # the old deltaLink names another port; its token is what matters
        r = await g.call("GET", srv.graph_url + "/users/delta?" + link.split("?", 1)[1])
        assert r.status == 200 and r.body["value"] == []
        await g.call("PATCH", f"/users/{u['id']}", {"jobTitle": "after restart"})
        r = await g.call("GET", r.body["@odata.deltaLink"])
        assert [i["id"] for i in r.body["value"]] == [u["id"]]
        # a conflict still holds after reload (indexes rebuilt)
        r = await g.call(
            "POST",
            "/users",
            {
                "accountEnabled": True,
                "displayName": "N",
                "mailNickname": "nia",
                "userPrincipalName": "NIA@example.com",
                "passwordProfile": {"password": "Xy7!long-enough"},
            },
        )
        assert r.status == 400


async def test_broken_state_file_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{ not json")
    srv = EmulatorServer(make_config(), state_path=str(path))
    with pytest.raises(StateFileError, match=r"state\.json"):
        await srv.start()
    path.write_bytes(orjson.dumps({"format": 1, "tenant": "someone-else", "store": {}, "auth_key": ""}))
    with pytest.raises(StateFileError, match="saved for tenant someone-else"):
        await EmulatorServer(make_config(), state_path=str(path)).start()


def test_cli_serves_https_with_faults_and_saves_on_sigterm(tmp_path: Path, pki: PKIFiles) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    state = tmp_path / "cli-state.json"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "idsync",
            "graph-emulator",
            "--listen",
            f"127.0.0.1:{port}",
            "--anonymous",
            "--domain",
            "corp.example",
            "--state",
            str(state),
            "--write-budget",
            "100",
            "--tls-cert",
            str(pki.server_cert),
            "--tls-key",
            str(pki.server_key),
            "--fault",
            '{"kind": "status", "status": 503, "count": 1, "path": "^/domains"}',
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stdout.readline().decode() if proc.stdout else ""
        assert f"https://127.0.0.1:{port}/v1.0" in line, line
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        base = f"https://127.0.0.1:{port}"
        body = orjson.dumps(
            {
                "accountEnabled": True,
                "displayName": "Cli",
                "mailNickname": "cli",
                "userPrincipalName": "cli@corp.example",
                "passwordProfile": {"password": "Xy7!long-enough"},
            }
        )

        req = urllib.request.Request(
            f"{base}/v1.0/users",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            assert r.status == 201
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{base}/v1.0/domains", timeout=10, context=ctx)
        assert e.value.code == 503  # the --fault rule
        with urllib.request.urlopen(f"{base}/v1.0/domains", timeout=10, context=ctx) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"{base}/_emulator/config", timeout=10, context=ctx) as r:
            cfg = orjson.loads(r.read())
        assert (
            cfg["write_budget"] == 100 and cfg["domains"] == ["corp.example"] and "client_secret" not in cfg
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(15)
    assert rc == 0
    saved = orjson.loads(state.read_bytes())
    assert [o["props"]["userPrincipalName"] for o in saved["store"]["objects"]] == ["cli@corp.example"]
