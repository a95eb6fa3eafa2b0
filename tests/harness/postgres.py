"""PostgreSQL: the machine's own on 127.0.0.1:5432 if it lets us in, else a private cluster."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg

from .ports import free_port
from .process import ServiceStartError, spawn, terminate
from .service import Service

SYSTEM_PORT = 5432
PG_USER = "postgres"


def dsn_for(port: int) -> str:
    """The DSN of database `postgres` as superuser `postgres` on 127.0.0.1:`port` (trust auth)."""
    return f"postgresql://{PG_USER}@127.0.0.1:{port}/postgres"


def answers(dsn: str, timeout: int = 2) -> bool:
    """True if `select 1` succeeds on `dsn`."""
    try:
        with psycopg.connect(dsn, connect_timeout=timeout, autocommit=True) as conn:
            return conn.execute("select 1").fetchone() == (1,)
    except psycopg.Error:
        return False


def pg_bindir() -> Path:
    """The newest /usr/lib/postgresql/N/bin, or the directory of `postgres` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("postgres")
    if which:
        return Path(which).parent
    raise ServiceStartError("postgres", "no PostgreSQL server binaries (apt-get install postgresql)")


class Postgres(Service):
    """Either the external server on 5432 (`external`: used, never controlled) or a private cluster."""

    name = "postgres"
    ready_timeout = 60.0

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        external: bool = False,
        datadir: str | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(workdir)
        self.external = external
        self.port = port or (SYSTEM_PORT if external else free_port())
        self.datadir = Path(datadir) if datadir else None
        # Server settings of a private cluster, over the test defaults below (bench_scale runs a
        # cluster configured as docs/operations.md "Sizing PostgreSQL" recommends).
        self.settings = dict(settings or {})

    @classmethod
    def system(cls, workdir: Path) -> Postgres | None:
        """The machine's PostgreSQL on 127.0.0.1:5432, if it answers `select 1` for user postgres."""
        if answers(dsn_for(SYSTEM_PORT)):
            return cls(workdir, SYSTEM_PORT, external=True)
        return None

    @property
    def dsn(self) -> str:
        """libpq URL of database `postgres` as superuser."""
        return dsn_for(self.port)

    def params(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "external": self.external,
            "datadir": str(self.datadir or "") or None,
            "settings": self.settings or None,
        }

    # postgres refuses to run as root: as root, run it as the `postgres` user.
    def _user(self) -> str | None:
        return PG_USER if os.geteuid() == 0 else None

    def prepare(self) -> None:
        if self.external:
            return
        if self._user():
            # The data directory must be reachable by `postgres`; the workdir may sit under /root.
            self.datadir = Path(tempfile.mkdtemp(prefix="idsync-pg-"))
            pw = pwd.getpwnam(PG_USER)
            os.chown(self.datadir, pw.pw_uid, pw.pw_gid)
        else:
            self.datadir = self.workdir / "data"
            self.datadir.mkdir(parents=True, exist_ok=True)
        self.datadir.chmod(0o700)
        cmd = [str(pg_bindir() / "initdb"), "-D", str(self.datadir), "-U", PG_USER, "--auth=trust"]
        cmd += ["-E", "UTF8", "--locale=C", "--no-sync"]
        with self.log.open("ab") as out:
            res = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, user=self._user(), cwd=self.datadir
            )
        if res.returncode != 0:
            raise ServiceStartError(self.name, f"initdb failed (exit {res.returncode})", self.log)

    def command(self) -> list[str]:
        assert self.datadir is not None
        # Run the postmaster itself in the foreground (not via pg_ctl's fork) so that its pid leads
        # the process group: stop/pause then reach every backend too.
        return [
            str(pg_bindir() / "postgres"),
            "-D",
            str(self.datadir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.datadir}",
            # Test data is disposable: trade durability for speed.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
            *(arg for k, v in self.settings.items() for arg in ("-c", f"{k}={v}")),
        ]

    def launch(self) -> None:
        self._proc = spawn(self.command(), self.log, cwd=self.datadir, user=self._user())
        self.pid = self._proc.pid

    def start(self) -> float:
        if not self.external:
            return super().start()
        t0 = time.monotonic()
        if not answers(self.dsn):
            raise ServiceStartError(self.name, f"the PostgreSQL on 127.0.0.1:{self.port} does not answer")
        self.startup_seconds = time.monotonic() - t0
        return self.startup_seconds

    def running(self) -> bool:
        return answers(self.dsn) if self.external else super().running()

    def probe(self) -> bool:
        return answers(self.dsn, timeout=1)

    def stop(self) -> None:
        self._guard("stop")
        if self.external:
            return  # not ours to stop
        if self.pid is not None:
            # SIGTERM is "smart" shutdown, which waits for every client; SIGINT is "fast".
            terminate(self.pid, sig=signal.SIGINT)
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
        self.pid = None

    def _guard(self, action: str) -> None:
        super()._guard(action)
        if self.external and action != "stop":
            raise RuntimeError(
                f"postgres on 127.0.0.1:{self.port} is the machine's own server; refusing to {action} it. "
                "Use spawn('postgres') for a private cluster."
            )

    def destroy(self) -> None:
        super().destroy()
        if self.datadir is not None and not self.external:
            shutil.rmtree(self.datadir, ignore_errors=True)

    def describe(self) -> str:
        where = "external (machine's server)" if self.external else f"private data={self.datadir}"
        return f"dsn={self.dsn} {where}"
