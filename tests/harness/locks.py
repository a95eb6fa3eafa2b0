"""File locks so that concurrent pytest sessions and `python -m tests.harness` do not fight."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Machine-wide, because Samba's port 389 is machine-wide: one lock per service name.
MACHINE_LOCK_DIR = Path(os.environ.get("IDSYNC_HARNESS_LOCK_DIR", "/tmp/idsync-harness-locks"))


@contextmanager
def file_lock(path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an flock on `path` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def service_lock(name: str) -> Path:
    """The machine-wide lock file held while a service named `name` is being started."""
    MACHINE_LOCK_DIR.mkdir(mode=0o777, parents=True, exist_ok=True)
    return MACHINE_LOCK_DIR / f"{name}.lock"
