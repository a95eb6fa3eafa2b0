"""A controllable TCP proxy on loopback, to cut one client off from a server (e.g. ZooKeeper)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from types import TracebackType


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target`; cut() simulates a network partition, restore() heals it.

    cut() (the default, `reset=False`) stops moving bytes but keeps connections open, as a real
    partition does: the client notices only through its own timeouts, and bytes held back are
    delivered after restore(), as TCP retransmission would. cut(reset=True) instead closes every
    connection and refuses new ones until restore(), like a peer that is gone.
    """

    def __init__(self, target_host: str, target_port: int, *, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", listen_port))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._refusing = False
        self._closed = False
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"proxy-{self.port}", daemon=True
        )
        self._accept_thread.start()

    @property
    def address(self) -> str:
        """host:port to give the client instead of the server's."""
        return f"127.0.0.1:{self.port}"

    def cut(self, *, reset: bool = False) -> None:
        """Partition: hold all traffic, or with `reset` drop all connections and refuse new ones."""
        self._flowing.clear()
        if reset:
            self._refusing = True
            self._close_all()

    def restore(self) -> None:
        """Heal the partition: traffic flows again and new connections are accepted."""
        self._refusing = False
        self._flowing.set()

    def close(self) -> None:
        """Stop the proxy and drop every connection."""
        self._closed = True
        self._flowing.set()
        # close() alone does not wake a thread blocked in accept(); shutdown() does (Linux).
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        self._close_all()
        self._accept_thread.join(timeout=2)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------------

    def _close_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, set()
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing:
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._conns.add(client)
        # During a partition a new connection gets no further than the proxy.
        while not self._flowing.wait(0.1):
            if self._closed or client not in self._conns:
                return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._conns.add(upstream)
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._closed:
                # While cut, leave bytes in the kernel's buffers: they flow again on restore().
                if not self._flowing.wait(0.1):
                    continue
                ready, _, _ = select.select([src], [], [], 0.1)
                if not ready:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._conns.discard(src)
            with contextlib.suppress(OSError):
                src.close()
