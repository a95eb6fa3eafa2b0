"""`idsync preflight` with writeback on: the writer binds and may create groups in the OU."""

from __future__ import annotations

import uuid
from pathlib import Path

from idsync.commands.preflight import writeback_check
from idsync.config import load_config
from tests.cluster.directory import AdDirectory as AdFixture
from tests.harness.ldap import LdapEndpoint


def config(tmp_path: Path, samba: LdapEndpoint, bind_dn: str, password: str, ou: str) -> Path:
    (tmp_path / "dsn").write_text("postgresql://x@127.0.0.1/x")
    (tmp_path / "pw").write_text(password)
    path = tmp_path / "idsync.toml"
    path.write_text(
        f"""
[store]
dsn_file = "dsn"
[source]
kind = "ad"
[source.ldap]
urls = ["{samba.url}"]
base_dns = ["{samba.base_dn}"]
[target.graph]
graph_endpoint = "http://127.0.0.1:1"
anonymous = true
[ha.zookeeper]
hosts = "127.0.0.1:2181"
[writeback]
enabled = true
bind_dn = "{bind_dn}"
password_file = "pw"
groups_ou = "{ou}"
"""
    )
    return path


def test_writer_with_rights_passes(tmp_path: Path, samba: LdapEndpoint, samba_ou: str) -> None:
    cfg = load_config(config(tmp_path, samba, samba.bind_dn, samba.password, samba_ou), {})
    check = writeback_check(cfg)
    assert (check.status, check.detail) == (
        "OK",
        f"bound as {samba.bind_dn}; may create groups in {samba_ou}; 0 written back there",
    )


def test_writer_without_rights_or_ou_fails(
    tmp_path: Path, samba: LdapEndpoint, samba_ou: str, ad: AdFixture
) -> None:
    weak = ad.add_user(
        samba_ou, f"pf{uuid.uuid4().hex[:6]}", unicodePwd='"Wb-Passw0rd-123!"'.encode("utf-16-le")
    )
    cfg = load_config(config(tmp_path, samba, weak.dn, "Wb-Passw0rd-123!", samba_ou), {})
    check = writeback_check(cfg)
    assert (check.status, check.detail) == ("FAIL", f"{weak.dn} may not create groups in {samba_ou}")
    assert "Create/Delete Group objects" in check.fix
    missing = f"OU=nowhere,{samba_ou}"
    cfg = load_config(config(tmp_path, samba, samba.bind_dn, samba.password, missing), {})
    check = writeback_check(cfg)
    assert check.status == "FAIL" and missing in check.detail
