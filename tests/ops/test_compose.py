"""compose.yaml without a Docker engine: it parses, every file it names exists, host ports are
unique, dependencies are consistent, the idsync configs pass check-config and point at the
services that exist, and the Samba image's sample data loads into a real Samba AD DC.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
from ldap3 import SUBTREE, Connection, Server

from tests.harness import LdapEndpoint

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    "zk1",
    "zk2",
    "zk3",
    "postgres",
    "samba",
    "graph-emulator",
    "idsync-preflight",
    "idsync-a",
    "idsync-b",
    "prometheus",
    "alertmanager",
}


def load_yaml(path: Path) -> Any:
    """PyYAML from the venv if present, else Debian's python3-yaml through the system python."""
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        res = subprocess.run(
            [
                "/usr/bin/python3",
                "-c",
                "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
            ],
            stdin=path.open(),
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            pytest.fail(
                f"cannot parse {path}: {res.stderr.strip()} (python3-yaml: deploy/local/install-deps.sh)"
            )
        return json.loads(res.stdout)
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(ROOT / "compose.yaml")
    assert isinstance(data, dict)
    return data


def mounts(svc: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume in short syntax."""
    out = []
    for v in svc.get("volumes", []):
        assert isinstance(v, str), v
        parts = v.split(":")
        out.append((parts[0], parts[1]))
    return out


def host_path(source: str) -> Path | None:
    return (ROOT / source).resolve() if source.startswith((".", "/")) else None


def in_container(svc: dict[str, Any], container_path: str) -> Path:
    """The checkout file that a path inside the service's container comes from (via a bind mount)."""
    p = PurePosixPath(container_path)
    for source, target in mounts(svc):
        src = host_path(source)
        if src is not None and (p == PurePosixPath(target) or PurePosixPath(target) in p.parents):
            return src / p.relative_to(target)
    raise AssertionError(f"{container_path} is not bind-mounted into the service")


def test_services_and_named_resources(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES
    volumes = set(compose.get("volumes") or {})
    secrets = set(compose.get("secrets") or {})
    for name, svc in compose["services"].items():
        assert "image" in svc or "build" in svc, name
        for source, _ in mounts(svc):
            if host_path(source) is None:
                assert source in volumes, f"{name}: volume {source} is not declared"
        for s in svc.get("secrets", []):
            assert s in secrets, f"{name}: secret {s} is not declared"
    for name, s in (compose.get("secrets") or {}).items():
        assert (ROOT / s["file"]).is_file(), f"secret {name}: {s['file']} missing"


def test_every_bind_mount_and_build_exists(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for source, _ in mounts(svc):
            src = host_path(source)
            if src is not None:
                assert src.exists(), f"{name}: {source} does not exist"
        build = svc.get("build")
        if build:
            context = ROOT / build["context"]
            assert context.is_dir(), f"{name}: build context {context}"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
        for item in copied.split():
            assert (ROOT / item).exists(), f"deploy/Dockerfile copies {item}, which does not exist"
    samba = (ROOT / "deploy/samba/Dockerfile").read_text()
    for item in re.findall(r"^COPY (\S+) ", samba, re.M):
        assert (ROOT / "deploy/samba" / item).is_file(), item


def test_host_ports_do_not_collide(compose: dict[str, Any]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for name, svc in compose["services"].items():
        for spec in svc.get("ports", []):
            parts = str(spec).split(":")
            assert len(parts) == 3 and parts[0] == "127.0.0.1", f"{name}: {spec} should be loopback-only"
            key = (parts[0], int(parts[1]))
            assert key not in seen, f"{name} and {seen[key]} both publish {key}"
            seen[key] = name


def test_dependencies_are_consistent(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], (
                    f"{name} waits for {dep} to be healthy; it has no healthcheck"
                )

    def reaches(a: str, b: str, seen: frozenset[str] = frozenset()) -> bool:
        deps = services[a].get("depends_on") or {}
        return b in deps or any(reaches(d, b, seen | {a}) for d in deps if d not in seen)

    for name in services:
        assert not reaches(name, name), f"dependency cycle through {name}"
    for node in ("idsync-a", "idsync-b"):
        for dep in ("zk1", "zk2", "zk3", "postgres", "samba", "graph-emulator"):
            assert reaches(node, dep), f"{node} must start after {dep}"
    assert reaches("prometheus", "alertmanager")
    for node in ("idsync-a", "idsync-b"):  # the nodes start on a tenant that preflight --fix prepared
        assert services[node]["depends_on"]["idsync-preflight"] == {
            "condition": "service_completed_successfully"
        }


def idsync_config(compose: dict[str, Any], node: str) -> tuple[Path, dict[str, Any]]:
    svc = compose["services"][node]
    command = svc["command"]
    path = in_container(svc, command[command.index("--config") + 1])
    return path, tomllib.loads(path.read_text())


@pytest.mark.parametrize("node", ["idsync-a", "idsync-b"])
def test_idsync_configs_pass_check_config(compose: dict[str, Any], node: str) -> None:
    path, _ = idsync_config(compose, node)
    res = subprocess.run(
        [str(Path(sys.executable).parent / "idsync"), "check-config", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{path}: OK" in res.stdout and "warning" not in res.stdout


def port_of(svc: dict[str, Any], default: int) -> set[int]:
    """Ports the service listens on inside the network: published container ports and --listen."""
    out = {int(str(p).split(":")[-1]) for p in svc.get("ports", [])}
    for arg in svc.get("command") or []:
        if str(arg).startswith("--listen="):
            out.add(int(str(arg).rsplit(":", 1)[1]))
    return out or {default}


def test_idsync_configs_point_at_the_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    schemas, names = set(), set()
    for node in ("idsync-a", "idsync-b"):
        _, cfg = idsync_config(compose, node)
        names.add(cfg["node"]["name"])
        schemas.add(cfg["store"]["schema"])
        for hostport in cfg["ha"]["zookeeper"]["hosts"].split(","):
            host, port = hostport.split(":")
            assert host in services and int(port) in port_of(services[host], 2181), hostport
        for url in cfg["source"]["ldap"]["urls"]:
            u = urlsplit(url)
            assert u.hostname in services and (u.port or 389) in port_of(services[u.hostname], 389), url
        graph = urlsplit(cfg["target"]["graph"]["graph_endpoint"])
        assert graph.hostname in services and graph.port in port_of(services[graph.hostname], 443)
        dsn_file = ROOT / "deploy/compose" / cfg["store"]["dsn_file"]
        dsn = urlsplit(dsn_file.read_text().strip())
        assert dsn.hostname in services and dsn.port in port_of(services[dsn.hostname], 5432)
        pg_env = services["postgres"]["environment"]
        assert dsn.username == pg_env["POSTGRES_USER"] and dsn.path == f"/{pg_env['POSTGRES_DB']}"
        assert dsn.password == (ROOT / compose["secrets"]["postgres-password"]["file"]).read_text().strip()
        ldap_pw = (ROOT / "deploy/compose" / cfg["source"]["ldap"]["password_file"]).read_text()
        assert ldap_pw == (ROOT / compose["secrets"]["samba-admin-password"]["file"]).read_text()
        assert cfg["node"]["cluster"] == "demo"
    assert names == {"idsync-a", "idsync-b"} and len(schemas) == 2  # nodes share nothing


def test_prometheus_scrapes_both_nodes_with_their_token(compose: dict[str, Any]) -> None:
    svc = compose["services"]["prometheus"]
    conf_arg = next(a for a in svc["command"] if a.startswith("--config.file="))
    conf_path = in_container(svc, conf_arg.split("=", 1)[1])
    assert conf_path == ROOT / "deploy/prometheus/prometheus.yml"
    prom = load_yaml(conf_path)
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "idsync")
    targets = job["static_configs"][0]["targets"]
    assert job["static_configs"][0]["labels"]["cluster"] == "demo"
    token_in_container = str(
        PurePosixPath("/etc/prometheus/idsync") / job["authorization"]["credentials_file"]
    )
    token = in_container(svc, str(PurePosixPath(token_in_container)).replace("/idsync/../", "/"))
    for node in ("idsync-a", "idsync-b"):
        _, cfg = idsync_config(compose, node)
        port = cfg["admin"]["listen"].rsplit(":", 1)[1]
        assert f"{node}:{port}" in targets
        assert (ROOT / "deploy/compose" / cfg["admin"]["token_file"]).read_text() == token.read_text()
    am = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0]
    assert am.split(":")[0] in compose["services"]
    am_svc = compose["services"]["alertmanager"]
    am_conf = next(a for a in am_svc["command"] if a.startswith("--config.file=")).split("=", 1)[1]
    assert in_container(am_svc, am_conf) == ROOT / "deploy/alertmanager/alertmanager.yml"


def test_graph_emulator_files_and_identity(compose: dict[str, Any]) -> None:
    from idsync.emulator.config import EmulatorConfig

    svc = compose["services"]["graph-emulator"]
    args = dict(str(a).split("=", 1) for a in svc["command"] if str(a).startswith("--"))
    for opt in ("--tls-cert", "--tls-key", "--client-secret-file"):
        assert in_container(svc, args[opt]).is_file(), opt
    for node in ("idsync-a", "idsync-b"):
        _, cfg = idsync_config(compose, node)
        graph = cfg["target"]["graph"]
        assert graph["tenant_id"] == args["--tenant"] and graph["client_id"] == args["--client-id"]
        secret = (ROOT / "deploy/compose" / graph["client_secret_file"]).read_text()
        assert secret == in_container(svc, args["--client-secret-file"]).read_text()
        # A new tenant: nothing pre-registered; the preflight service registers the group anchor
        # with this same app's config.
        assert not any(str(a).startswith("--preregister-extension") for a in svc["command"])
        assert not EmulatorConfig().preregister_extensions
        assert graph["anchor_extension_attribute"].startswith(
            f"extension_{args['--client-id'].replace('-', '')}_"
        )
    preflight = compose["services"]["idsync-preflight"]
    script = preflight["entrypoint"][-1]
    assert "preflight --fix" in script and "/etc/idsync/idsync-a.toml" in script
    assert in_container(preflight, "/etc/idsync/idsync-a.toml").is_file()
    ca = ROOT / "deploy/compose/secrets/demo-ca.pem"
    cert = in_container(svc, args["--tls-cert"])
    openssl = shutil.which("openssl")
    if openssl:
        res = subprocess.run(
            [openssl, "verify", "-CAfile", str(ca), "-verify_hostname", "graph-emulator", str(cert)],
            capture_output=True,
            text=True,
        )
        assert res.returncode == 0, res.stdout + res.stderr


def test_sample_data_loads_into_samba(samba: LdapEndpoint, samba_ou: str, tmp_path: Path) -> None:
    """The Samba image's LDIF, loaded over LDAP into the test DC: users enabled, groups with members."""
    ldapadd = shutil.which("ldapadd")
    if ldapadd is None:
        pytest.fail("ldapadd not found: deploy/local/install-deps.sh installs ldap-utils")
    sys.path.insert(0, str(ROOT / "deploy/samba"))
    try:
        import sample_data  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    ldif = tmp_path / "sample.ldif"
    ldif.write_text(sample_data.ldif(samba_ou, "test.idsync.lan", users=12, groups=3, ou="demo"))
    res = subprocess.run(
        [ldapadd, "-x", "-H", samba.url, "-D", samba.bind_dn, "-w", samba.password, "-f", str(ldif)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    conn = Connection(Server(samba.url), samba.bind_dn, samba.password, auto_bind=True)
    conn.search(
        samba_ou,
        "(&(objectCategory=person)(objectClass=user))",
        SUBTREE,
        attributes=["userAccountControl", "userPrincipalName"],
    )
    users = list(conn.entries)
    assert len(users) == 12
    assert all(int(u.userAccountControl.value) & 2 == 0 for u in users)  # enabled
    assert str(users[0].userPrincipalName).endswith("@test.idsync.lan")
    conn.search(samba_ou, "(objectClass=group)", SUBTREE, attributes=["member"])
    assert len(conn.entries) == 3 and all(len(g.member.values) >= 5 for g in conn.entries)
    conn.unbind()
    again = sample_data.ldif(samba_ou, "test.idsync.lan", users=12, groups=3, ou="demo")
    assert again == ldif.read_text()  # deterministic


async def test_idsync_healthcheck_probes_the_admin_api(compose: dict[str, Any], tmp_path: Path) -> None:
    """The container healthcheck, run against a real admin server with the stack's token."""
    import asyncio

    from idsync.config.service import AdminSettings
    from idsync.runtime.admin import AdminServer
    from tests.harness.ports import free_port
    from tests.ops.test_admin import LEADER, FixedState

    svc = compose["services"]["idsync-a"]
    test = svc["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    token_path = re.search(r"open\('([^']+)'\)", test[3])
    assert token_path is not None
    token = in_container(svc, token_path.group(1))
    port = free_port()
    server = AdminServer(FixedState(LEADER), AdminSettings(listen=f"0.0.0.0:{port}", token_file=token))
    await server.start()
    try:
        for token_file, expect_ok in ((token, True), (tmp_path / "wrong", False)):
            (tmp_path / "wrong").write_text("not-the-token")
            code = test[3].replace(token_path.group(1), str(token_file)).replace(":9470/", f":{port}/")
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
            assert (await proc.wait() == 0) is expect_ok, token_file
    finally:
        await server.stop()
