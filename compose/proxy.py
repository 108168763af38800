"""A tiny TCP proxy on 127.0.0.1 that can black-hole its traffic without closing anything.

``BlackHoleProxy(target_host, target_port)`` forwards every connection to the
target (with ``fallbacks=``: to the first of the targets that accepts it).
``stall()`` stops moving bytes in both directions -- connections stay open, new
ones are accepted but get nothing -- as a partition or a dead NAT entry does;
``resume()`` lets the buffered bytes flow again.  ``close()`` ends every thread and
socket it started.

``kitsd chaos`` and the pytest plugin put one between a client and each registry
server to cut the client off its registry ("partition the client") while the
servers and the instances carry on.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Sequence
from types import TracebackType

__all__ = ["BlackHoleProxy"]


class BlackHoleProxy:
    """See the module docstring.  Thread-safe."""

    def __init__(self, target_host: str, target_port: int, *,
                 fallbacks: Sequence[tuple[str, int]] = ()) -> None:
        # a connection goes to the first target that accepts it (``fallbacks`` in order):
        # a load balancer in front of highly available servers
        self._targets = [(target_host, target_port), *fallbacks]
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._start(self._accept, "blackhole-accept")

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:port`` of the proxy."""
        return f"127.0.0.1:{self.port}"

    @property
    def targets(self) -> list[tuple[str, int]]:
        """``(host, port)`` of the servers it forwards to, in the order it tries them."""
        return list(self._targets)

    def stall(self) -> None:
        """Stop forwarding (connections stay open)."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again."""
        self._flowing.set()

    @property
    def stalled(self) -> bool:
        """Whether traffic is black-holed right now."""
        return not self._flowing.is_set()

    def close(self) -> None:
        """Close every socket and join every thread."""
        self._closed.set()
        self._flowing.set()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for thread in threads:
            thread.join(5)
        for sock in [self._listener, *sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> BlackHoleProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _start(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = self._connect()
            if upstream is None:
                client.close()
                continue
            pair = [client, upstream]
            ended = [0]  # pumps of the pair that ended: the second closes both sockets
            with self._lock:
                self._sockets += pair
                self._threads = [thread for thread in self._threads if thread.is_alive()]
            self._start(self._pump, "blackhole-up", client, upstream, pair, ended)
            self._start(self._pump, "blackhole-down", upstream, client, pair, ended)

    def _connect(self) -> socket.socket | None:
        for target in self._targets:
            try:
                return socket.create_connection(target, timeout=2)
            except OSError:
                continue
        return None

    def _pump(self, source: socket.socket, sink: socket.socket, pair: list[socket.socket],
              ended: list[int]) -> None:
        while not self._closed.is_set():
            if not self._flowing.wait(0.05):
                continue  # stalled: leave the bytes in the kernel's buffers
            try:
                readable, _, _ = select.select([source], [], [], 0.05)
                if not readable:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                if not self._flowing.is_set():  # stalled while we read: hold the data
                    self._flowing.wait()
                sink.sendall(data)
            except OSError:
                break
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        with self._lock:
            ended[0] += 1
            if ended[0] < 2 or self._closed.is_set():  # close() closes what is left
                return
            self._sockets = [each for each in self._sockets if each not in pair]
        for each in pair:  # both directions ended: a finished connection keeps no socket
            with contextlib.suppress(OSError):
                each.close()
