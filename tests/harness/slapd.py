"""OpenLDAP slapd with back-mdb, syncprov (with a session log) and memberof, in a temp directory."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from ldap3.core.exceptions import LDAPEntryAlreadyExistsResult

from .ldap import LdapEndpoint, bind_ok, connect
from .packages import install_hint
from .ports import free_port
from .process import ServiceStartError
from .service import Service

BASE_DN = "dc=idsync,dc=test"
ROOT_DN = f"cn=admin,{BASE_DN}"
ROOT_PW = "idsync-test"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")


class Slapd(Service):
    """slapd on ldap://127.0.0.1:`port`, suffix dc=idsync,dc=test, rootdn cn=admin."""

    name = "slapd"
    ready_timeout = 30.0

    # The backend and overlays loaded from /usr/lib/ldap (all shipped by Debian's slapd).
    modules: tuple[str, ...] = ("back_mdb", "syncprov", "memberof")

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir)
        self.port = port or free_port()

    @property
    def endpoint(self) -> LdapEndpoint:
        """URL, base DN and root credentials."""
        return LdapEndpoint(f"ldap://127.0.0.1:{self.port}", BASE_DN, ROOT_DN, ROOT_PW)

    def params(self) -> dict[str, Any]:
        return {"port": self.port}

    @property
    def conf(self) -> Path:
        """The generated slapd.conf."""
        return self.workdir / "slapd.conf"

    def prepare(self) -> None:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        includes = "\n".join(f"include /etc/ldap/schema/{s}.schema" for s in SCHEMAS)
        modules = "\n".join(f"moduleload {m}" for m in self.modules)
        self.conf.write_text(
            f"""{includes}
modulepath /usr/lib/ldap
{modules}
pidfile {self.workdir}/slapd.pid
argsfile {self.workdir}/slapd.args
# Tests read whole trees; the default limit of 500 entries applies to non-root binds.
sizelimit unlimited

database mdb
suffix "{BASE_DN}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PW}
directory {data}
maxsize 1073741824
limits * size=unlimited time=unlimited
index objectClass,entryCSN,entryUUID eq
index uid,cn,member eq

# memberof keeps memberOf on users in step with groupOfNames.member.
overlay memberof
memberof-refint TRUE

# RFC 4533 content sync; the session log lets a delta carry deletes without a present phase.
overlay syncprov
syncprov-checkpoint 100 10
syncprov-sessionlog 10000
"""
        )
        slaptest = shutil.which("slaptest") or "/usr/sbin/slaptest"
        res = subprocess.run([slaptest, "-u", "-f", str(self.conf)], capture_output=True, text=True)
        if res.returncode != 0:
            hint = install_hint(res.stderr)
            reason = f"slaptest rejected {self.conf}: {res.stderr.strip()}"
            raise ServiceStartError(self.name, f"{reason} -- {hint}" if hint else reason)

    def command(self) -> list[str]:
        slapd = shutil.which("slapd") or "/usr/sbin/slapd"
        # Any -d keeps slapd in the foreground; "none" (unlike 0) still prints errors to our log.
        return [slapd, "-f", str(self.conf), "-h", f"ldap://127.0.0.1:{self.port}/", "-d", "none"]

    def probe(self) -> bool:
        return bind_ok(self.endpoint)

    def after_ready(self) -> None:
        conn = connect(self.endpoint)
        try:
            conn.add(BASE_DN, ["top", "dcObject", "organization"], {"dc": "idsync", "o": "idsync tests"})
        except LDAPEntryAlreadyExistsResult:
            pass  # a restart keeps its data
        finally:
            conn.unbind()

    def describe(self) -> str:
        ep = self.endpoint
        return f"url={ep.url} base={ep.base_dn} bind={ep.bind_dn} pw={ep.password}"
