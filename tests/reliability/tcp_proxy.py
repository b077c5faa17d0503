"""A small threaded TCP proxy on 127.0.0.1 that can pass, drop, stall and reset connections.

Put it between a client (handler or sink) and the broker: the client connects to
``proxy.port``; each accepted connection gets its own upstream socket and two pump
threads. Faults:

- ``drop()``: close both sides of every current connection (FIN: a clean TCP cut);
- ``reset()``: close both sides with SO_LINGER 0 (RST: a crashed peer or middlebox);
- ``stall(seconds)``: stop forwarding for that long (bytes are held, connections stay
  open), like a frozen network; heartbeats then time out on both ends.

New connections are accepted at all times (a stall also holds their bytes).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from urllib.parse import urlsplit, urlunsplit

CHUNK = 65536


class TcpProxy:
    """Forward 127.0.0.1:<port> to ``target``; inject faults on demand."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self.accepted = 0
        self.faults: list[str] = []
        self._thread = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)
        self._thread.start()

    @classmethod
    def for_url(cls, url: str) -> TcpProxy:
        """A proxy to the host and port of an ``amqp://`` URL."""
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5672)

    def url(self, url: str) -> str:
        """``url`` with its host:port replaced by this proxy's."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def connections(self) -> int:
        """Connections currently proxied."""
        with self._lock:
            return len(self._pairs)

    # ---- faults ----------------------------------------------------------------

    def drop(self) -> int:
        """Close both sides of every current connection; returns how many were cut."""
        self.faults.append("drop")
        return self._close_all(linger0=False)

    def reset(self) -> int:
        """RST both sides of every current connection (SO_LINGER 0); returns how many."""
        self.faults.append("reset")
        return self._close_all(linger0=True)

    def stall(self, seconds: float) -> None:
        """Stop forwarding for ``seconds`` (blocks the caller that long), then flow again."""
        self.faults.append(f"stall {seconds:g}s")
        self._flowing.clear()
        try:
            time.sleep(seconds)
        finally:
            self._flowing.set()

    def close(self) -> None:
        """Stop accepting and close every connection."""
        self._closed.set()
        self._flowing.set()
        with contextlib.suppress(OSError):
            # close() alone does not wake a thread blocked in accept() on Linux: the
            # join below then waited its full 5 s on every test.
            self._listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._listener.close()
        self._close_all(linger0=False)
        self._thread.join(5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- machinery -----------------------------------------------------------------

    def _close_all(self, *, linger0: bool) -> int:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                _close(sock, linger0=linger0)
        return len(pairs)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client, linger0=True)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(src, dst, (client, upstream)), daemon=True
                ).start()

    def _pump(
        self, src: socket.socket, dst: socket.socket, pair: tuple[socket.socket, socket.socket]
    ) -> None:
        try:
            while not self._closed.is_set():
                ready, _, _ = select.select([src], [], [], 0.2)
                if not ready:
                    continue
                data = src.recv(CHUNK)
                if not data:
                    break
                while not self._flowing.wait(0.2):
                    if self._closed.is_set():
                        return
                dst.sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                if pair in self._pairs:
                    self._pairs.remove(pair)
            for sock in pair:
                _close(sock, linger0=False)


def _close(sock: socket.socket, *, linger0: bool) -> None:
    with contextlib.suppress(OSError):
        if linger0:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
