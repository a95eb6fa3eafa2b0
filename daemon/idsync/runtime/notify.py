"""systemd notifications (READY, STATUS, WATCHDOG, STOPPING); silent when not under systemd."""

from __future__ import annotations

import os
import socket


class Notifier:
    """sd_notify over $NOTIFY_SOCKET, written directly (a datagram; no dependency needed)."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, **fields: str) -> None:
        if not self.address:
            return
        msg = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect(addr)
                sock.sendall(msg)
            except OSError:
                pass  # systemd gone (shutdown); nothing useful to do

    def ready(self, status: str) -> None:
        self.send(ready="1", status=status)

    def status(self, status: str) -> None:
        self.send(status=status)

    def stopping(self, status: str = "stopping") -> None:
        self.send(stopping="1", status=status)
