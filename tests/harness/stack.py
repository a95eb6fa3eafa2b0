"""The stack: each service started at most once, on first use, and found again through stack.json."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .locks import MACHINE_LOCK_DIR, file_lock, service_lock
from .postgres import Postgres
from .promtool import Promtool
from .samba import Samba
from .service import Service
from .slapd import Slapd
from .zookeeper import ZooKeeper

SERVICE_TYPES: dict[str, type[Service]] = {
    "postgres": Postgres,
    "zookeeper": ZooKeeper,
    "samba": Samba,
    "slapd": Slapd,
}
SERVICE_NAMES = tuple(SERVICE_TYPES)
REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DIR = Path(os.environ.get("IDSYNC_STACK_DIR", REPO_ROOT / ".stack"))
# Where a persistent stack records its Samba, so that sessions from other clones can share it.
SAMBA_REGISTRY = MACHINE_LOCK_DIR / "shared-samba.json"

S = TypeVar("S", bound=Service)


class Stack:
    """Services for one owner: the shared `.stack/` (persistent) or one pytest session (private).

    A private stack may fall back on a `shared` one: a service the shared stack runs and that
    answers is used from there (and may not be stopped or paused); anything else is started here.
    """

    def __init__(
        self, root: Path | None = None, *, persistent: bool = False, shared: Stack | None = None
    ) -> None:
        self._root = root
        self.persistent = persistent
        self.shared = shared
        self.services: dict[str, Service] = {}
        self.started: list[str] = []  # names this stack started (not reused), in start order
        self._promtool: Promtool | None = None
        self._save_lock = threading.Lock()

    @property
    def root(self) -> Path:
        """The directory holding each started service's directory (created on first need)."""
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="idsync-stack-"))
        self._root.mkdir(parents=True, exist_ok=True)
        # Services may run as other users (postgres); they must be able to traverse to their dirs.
        self._root.chmod(0o755)
        return self._root

    @property
    def state_file(self) -> Path:
        """stack.json: endpoints, pids and directories of the services."""
        return self.root / "stack.json"

    # --- services -----------------------------------------------------------------------------

    def get(self, name: str) -> Service:
        """The running service `name`: already here, reused from the shared stack, or started now."""
        if name in self.services:
            return self.services[name]
        if self.shared is not None:
            theirs = self.shared.services.get(name)
            if theirs is not None and theirs.running() and _probes(theirs):
                theirs.shared = True
                self.services[name] = theirs
                return theirs
        if name == "samba" and not self.persistent and (theirs := _registered_samba()) is not None:
            # Only one Samba fits on a machine; a clone's session shares the one `up` started elsewhere.
            self.services[name] = theirs
            return theirs
        # Machine-wide lock: two sessions must not both try to bind Samba's fixed port 389.
        with file_lock(service_lock(name)):
            svc = self._create(name)
            svc.start()
        self.services[name] = svc
        self.started.append(name)
        if self.persistent:
            self.save()
        return svc

    def _create(self, name: str) -> Service:
        if name == "postgres":
            system = Postgres.system(self.root / name)
            if system is not None:
                return system
        return SERVICE_TYPES[name](self.root / name)

    def _typed(self, name: str, cls: type[S]) -> S:
        svc = self.get(name)
        assert isinstance(svc, cls)
        return svc

    def postgres(self) -> Postgres:
        """PostgreSQL (started or found on first call)."""
        return self._typed("postgres", Postgres)

    def zookeeper(self) -> ZooKeeper:
        """ZooKeeper (started on first call)."""
        return self._typed("zookeeper", ZooKeeper)

    def samba(self) -> Samba:
        """The Samba AD DC (provisioned and started on first call)."""
        return self._typed("samba", Samba)

    def slapd(self) -> Slapd:
        """OpenLDAP slapd (started on first call)."""
        return self._typed("slapd", Slapd)

    def promtool(self) -> Promtool:
        """promtool's path and version."""
        if self._promtool is None:
            self._promtool = Promtool.locate()
        return self._promtool

    def up(self, names: Iterable[str] = SERVICE_NAMES, *, parallel: bool = True) -> dict[str, float]:
        """Start (or reuse) the named services, in parallel; return seconds per service started, 'total'."""
        t0 = time.monotonic()
        names = list(names)
        timings: dict[str, float] = {}

        def one(name: str) -> None:
            t = time.monotonic()
            self.get(name)
            if name in self.started:  # reused services have no bring-up time
                timings[name] = time.monotonic() - t

        if parallel:
            with ThreadPoolExecutor(max_workers=len(names) or 1) as pool:
                for f in [pool.submit(one, n) for n in names]:
                    f.result()
        else:
            for n in names:
                one(n)
        t = time.monotonic()
        self.promtool()
        timings["promtool"] = time.monotonic() - t
        timings["total"] = time.monotonic() - t0
        if self.persistent:
            self.save()
        return timings

    def down(self) -> list[str]:
        """Stop and delete every service this stack started (reused ones are left alone)."""
        stopped = []
        for name in reversed([n for n in SERVICE_NAMES if n in self.services]):
            svc = self.services[name]
            if svc.shared:
                continue
            svc.destroy()
            if not (isinstance(svc, Postgres) and svc.external):  # the machine's server is left running
                stopped.append(name)
            if name == "samba" and self.persistent:
                SAMBA_REGISTRY.unlink(missing_ok=True)
        self.services.clear()
        return stopped

    def remove(self) -> None:
        """down() and delete the stack directory."""
        self.down()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)

    # --- stack.json ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The JSON document written to stack.json."""
        return {
            "root": str(self.root),
            "written_at": time.strftime("%FT%T%z"),
            "written_by_pid": os.getpid(),
            "services": {n: s.state() for n, s in self.services.items() if not s.shared},
            "promtool": {"path": str(self._promtool.path), "version": self._promtool.version}
            if self._promtool
            else None,
        }

    def save(self) -> None:
        """Write stack.json atomically (readers never see half a file)."""
        with self._save_lock:
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state(), indent=2) + "\n")
            tmp.replace(self.state_file)
            samba = self.services.get("samba")
            if self.persistent and samba is not None and not samba.shared:
                SAMBA_REGISTRY.parent.mkdir(parents=True, exist_ok=True)
                SAMBA_REGISTRY.write_text(json.dumps(samba.state()))

    @classmethod
    def load(cls, root: Path = SHARED_DIR) -> Stack | None:
        """The stack described by root/stack.json (services may have died since), or None."""
        path = root / "stack.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        stack = cls(root, persistent=True)
        for name, st in data.get("services", {}).items():
            stack.services[name] = SERVICE_TYPES[name].from_state(st)
        if data.get("promtool"):
            p = data["promtool"]
            stack._promtool = Promtool(Path(p["path"]), p["version"])
        return stack

    def live_services(self) -> dict[str, bool]:
        """{name: answers?} for every service in this stack."""
        return {n: s.running() and _probes(s) for n, s in self.services.items()}

    def table(self) -> str:
        """A readable table: service, state, pid, start-up seconds, endpoint."""
        rows = [("service", "state", "pid", "up in", "endpoint")]
        for name in SERVICE_NAMES:
            svc = self.services.get(name)
            if svc is None:
                rows.append((name, "not started", "-", "-", "-"))
                continue
            state = "up" if svc.running() and _probes(svc) else "DOWN"
            secs = f"{svc.startup_seconds:.2f}s" if svc.startup_seconds is not None else "-"
            rows.append((name, state, str(svc.pid or "-"), secs, svc.describe()))
        pt = self._promtool
        rows.append(
            ("promtool", "found" if pt else "-", "-", "-", f"{pt.path} ({pt.version})" if pt else "-")
        )
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        return "\n".join(
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:4])) + "  " + r[4] for r in rows
        )


def _registered_samba() -> Service | None:
    """The Samba of a persistent stack (`up`, maybe in another clone) if it is alive, marked shared."""
    try:
        svc = Samba.from_state(json.loads(SAMBA_REGISTRY.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (svc.running() and _probes(svc)):
        return None
    svc.shared = True
    return svc


def _probes(svc: Service) -> bool:
    try:
        return svc.probe()
    except Exception:
        return False


def shared_stack_lock(root: Path = SHARED_DIR) -> Path:
    """The lock held by `up`/`down` and briefly by pytest while it reads stack.json."""
    # Outside the stack dir, which `down` deletes, and outside the repo, which must stay clean.
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return service_lock(f"stack-{digest}")
