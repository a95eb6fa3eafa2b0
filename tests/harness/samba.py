"""A Samba AD DC, provisioned fresh in a temp directory, LDAP on 127.0.0.1:389 (fixed by Samba)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .ldap import LdapEndpoint, bind_ok
from .ports import port_open
from .process import ServiceStartError, pid_cmdline
from .service import Service

REALM = "TEST.IDSYNC.LAN"
DOMAIN = "IDSYNC"
BASE_DN = "DC=test,DC=idsync,DC=lan"
ADMIN_DN = f"CN=Administrator,CN=Users,{BASE_DN}"
# Must meet AD's complexity rules or provisioning fails.
ADMIN_PW = "Idsync-Test-Passw0rd1"
LDAP_PORT = 389  # Samba has no option for it; hence one Samba per machine (or network namespace)


def port_holder(port: int) -> str:
    """Which process listens on `port` ("pid N: cmdline"), or "" if `ss` cannot tell."""
    ss = shutil.which("ss")
    if ss is None:
        return ""
    out = subprocess.run([ss, "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    m = re.search(r"pid=(\d+)", out)
    return f"pid {m.group(1)}: {pid_cmdline(int(m.group(1)))}" if m else ""


class Samba(Service):
    """Samba 4 AD DC (ldap, cldap, kdc, rpc services only) with simple binds allowed over plain LDAP."""

    name = "samba"
    ready_timeout = 60.0

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)

    @property
    def endpoint(self) -> LdapEndpoint:
        """URL, the domain's base DN, and the domain Administrator's DN and password."""
        return LdapEndpoint(f"ldap://127.0.0.1:{LDAP_PORT}", BASE_DN, ADMIN_DN, ADMIN_PW)

    @property
    def smb_conf(self) -> Path:
        """The smb.conf written by provisioning plus our overrides."""
        return self.workdir / "etc" / "smb.conf"

    def params(self) -> dict[str, Any]:
        return {}

    def prepare(self) -> None:
        d = self.workdir
        for sub in ("etc", "run", "log", "ncalrpc", "winbindd"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        # An empty base config: otherwise provision copies settings from the system /etc/samba/smb.conf.
        empty = d / "etc" / "provision-base.conf"
        empty.write_text("")
        cmd = [
            shutil.which("samba-tool") or "/usr/bin/samba-tool",
            "domain",
            "provision",
            f"--configfile={empty}",
            f"--realm={REALM}",
            f"--domain={DOMAIN}",
            f"--adminpass={ADMIN_PW}",
            "--server-role=dc",
            "--use-rfc2307",
            "--dns-backend=NONE",
            "--host-name=dc1",
            f"--targetdir={d}",
            "--option=interfaces = lo",
            "--option=bind interfaces only = yes",
            f"--option=pid directory = {d / 'run'}",
            f"--option=ncalrpc dir = {d / 'ncalrpc'}",
            f"--option=winbindd socket directory = {d / 'winbindd'}",
            # Keep sysvol's NT ACLs in a tdb, not in security.* xattrs: provisioning then works on
            # any filesystem and in unprivileged containers (as PSOpenAD's CI does).
            "--option=vfs objects = dfs_samba4 acl_xattr xattr_tdb",
        ]
        with self.log.open("ab") as out:
            res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        if res.returncode != 0:
            raise ServiceStartError(
                self.name, f"samba-tool domain provision failed (exit {res.returncode})", self.log
            )
        # Provision does not write these (observed): append them; a later [global] value wins.
        with self.smb_conf.open("a") as f:
            f.write(
                "\n[global]\n"
                "\tldap server require strong auth = no\n"
                "\tinterfaces = lo\n"
                "\tbind interfaces only = yes\n"
                "\tserver services = ldap, cldap, kdc, rpc\n"
                f"\tpid directory = {d / 'run'}\n"
                f"\tlock directory = {d}\n"
                f"\tlog file = {d / 'log' / 'samba.log'}\n"
                "\tlog level = 1\n"
            )

    def check_can_start(self) -> None:
        if port_open(LDAP_PORT):
            holder = port_holder(LDAP_PORT) or "unknown process"
            raise ServiceStartError(
                self.name,
                f"127.0.0.1:{LDAP_PORT} is already in use by {holder}. Samba's LDAP port is fixed, so only "
                "one Samba AD DC can run per machine: stop that process, or share one stack with "
                "`python -m tests.harness up` (pytest reuses .stack/).",
            )

    def command(self) -> list[str]:
        samba = shutil.which("samba") or "/usr/sbin/samba"
        # `-i` would exit on stdin EOF; this is the daemon-less foreground mode.
        return [
            samba,
            "--foreground",
            "--no-process-group",
            "--debug-stdout",
            "-M",
            "single",
            "-s",
            str(self.smb_conf),
        ]

    def probe(self) -> bool:
        return bind_ok(self.endpoint)

    def describe(self) -> str:
        ep = self.endpoint
        return f"url={ep.url} base={ep.base_dn} bind={ep.bind_dn} pw={ep.password}"
