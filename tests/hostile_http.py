"""A hostile HTTP peer on a real loopback socket, for the tests that attack kitsd's HTTP
clients (kitsd.auth's token requests, sd.k8s's API requests): it answers each request
with whatever its ``answer(sock, request_head)`` writes -- junk, HTML, an endless
chunked body, one byte every 0.1 s, nothing at all -- and closes the connection.

``HostilePeer(answer)`` serves on ``.url`` until ``close()`` (a context manager),
counting ``.requests``; every thread it starts ends by ``close()``.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

Answer = Callable[[socket.socket, bytes], None]


def reply(status: int, body: bytes, content_type: bytes = b"application/json") -> Answer:
    """An answer: ``status`` with ``body``."""

    def answer(sock: socket.socket, head: bytes) -> None:
        sock.sendall(b"HTTP/1.1 %d X\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
                     b"connection: close\r\n\r\n" % (status, content_type, len(body)) + body)

    return answer


def endless(status: int = 200, fill: bytes = b" ") -> Answer:
    """A chunked body that never ends (64 KiB chunks of ``fill``, as fast as read)."""
    chunk = b"10000\r\n" + fill * 0x10000 + b"\r\n"

    def answer(sock: socket.socket, head: bytes) -> None:
        sock.sendall(b"HTTP/1.1 %d X\r\ntransfer-encoding: chunked\r\n\r\n" % status)
        while True:
            sock.sendall(chunk)

    return answer


def trickle(data: bytes, every: float = 0.1) -> Answer:
    """``data`` (a whole response, or only its start) one byte every ``every`` seconds."""

    def answer(sock: socket.socket, head: bytes) -> None:
        for byte in data:
            sock.sendall(bytes([byte]))
            time.sleep(every)

    return answer


def silent(sock: socket.socket, head: bytes) -> None:
    """Accept, read the request, never answer (until the peer is closed)."""
    while sock.recv(65536):  # ends when the client or close() ends the connection
        pass


class HostilePeer:
    """Serves ``answer`` to every request (see the module docstring)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._accepter = threading.Thread(target=self._accept, name="hostile-peer",
                                          daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._closed:
                    sock.close()
                    return
                self._connections.append(sock)
                thread = threading.Thread(target=self._serve, args=(sock,),
                                          name="hostile-peer-conn", daemon=True)
                self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                data = sock.recv(65536)
                if not data:
                    return
                head += data
            head, _, body = head.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            missing = int(length.group(1)) - len(body) if length else 0
            while missing > 0:  # read the whole request: closing on unread bytes resets
                data = sock.recv(65536)
                if not data:
                    return
                missing -= len(data)
            with self._lock:
                self.requests += 1
            self.answer(sock, head)
        except OSError:
            pass
        finally:
            sock.close()

    def close(self) -> None:
        """Stop serving; end every connection and thread."""
        with self._lock:
            self._closed = True
            connections = list(self._connections)
            threads = list(self._threads)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in its thread
        self._listener.close()
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._accepter.join(5)
        for thread in threads:
            thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
