"""promtool (from Debian's prometheus package): located, not run as a service."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .process import ServiceStartError


@dataclass(frozen=True)
class Promtool:
    """Path and version of promtool, for tests of alert and recording rules."""

    path: Path
    version: str

    @classmethod
    def locate(cls) -> Promtool:
        """Find promtool on PATH (or /usr/bin) and read its version."""
        found = shutil.which("promtool") or (
            "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
        )
        if found is None:
            raise ServiceStartError("promtool", "not found on PATH (apt-get install prometheus)")
        res = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30)
        # promtool prints its version to stdout in 2.42 but older ones used stderr.
        first = (res.stdout or res.stderr).splitlines()[0] if (res.stdout or res.stderr) else "unknown"
        return cls(Path(found), first.strip())
