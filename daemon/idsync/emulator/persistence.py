"""Saving and loading the emulator's state file (atomic replace, orjson)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from idsync.emulator.core import Emulator

FORMAT = 1


class StateFileError(Exception):
    """The state file exists but cannot be used; names the file and the reason."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def save(em: Emulator, path: str | os.PathLike[str]) -> None:
    """Write the directory and the token key to `path` atomically."""
    p = Path(path)
    data = {
        "format": FORMAT,
        "tenant": em.cfg.tenant_id,
        "auth_key": em.auth.key.hex(),
        "store": em.store.to_state(),
    }
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(data))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def load(em: Emulator, path: str | os.PathLike[str]) -> bool:
    """Load `path` into `em`; False if it does not exist. A broken file raises StateFileError."""
    p = Path(path)
    if not p.exists():
        return False
    try:
        data = orjson.loads(p.read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise StateFileError(p, f"not a readable state file ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StateFileError(
            p, f"unknown state format {data.get('format') if isinstance(data, dict) else '?'}"
        )
    if data.get("tenant") != em.cfg.tenant_id:
        raise StateFileError(p, f"saved for tenant {data.get('tenant')}, not {em.cfg.tenant_id}")
    try:
        em.store.load_state(data["store"])
        em.auth.key = bytes.fromhex(data["auth_key"])
    except (KeyError, TypeError, ValueError) as e:
        raise StateFileError(p, f"damaged state ({e!r})") from e
    return True
