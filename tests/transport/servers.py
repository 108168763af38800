"""Local HTTP instances for the transport tests: each counts what it receives and
behaves as told (answer, fail with a status, hang, drop the connection, stream)."""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Instance:
    """One HTTP instance on 127.0.0.1.  ``mode``: ``"ok"`` (echo), ``"status"``
    (answer ``status`` with ``headers``), ``"hang"`` (read the request, never
    answer), ``"drop"`` (read the request, close without answering), ``"stream"``
    (``stream_bytes`` bytes of body in 64 KiB chunks), ``"slow"`` (answer as ``"ok"``
    after ``delay`` seconds), ``"cut"`` (headers saying ``stream_bytes`` bytes of
    body, then 10 of them, then the connection closes: an instance that died
    between its headers and its body)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.status = 503
        self.headers: dict[str, str] = {}
        self.stream_bytes = 0
        self.delay = 0.0
        self.received: Counter[str] = Counter()
        self.bodies: list[bytes] = []
        self.seen_headers: list[dict[str, str]] = []  # each request's headers, lower-case names
        self.release = threading.Event()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms stall

            def log_message(self, *args: Any) -> None:
                return None

            def handle_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("Transfer-Encoding") == "chunked":
                    body = self._read_chunked()
                with owner._lock:
                    owner.received[self.command] += 1
                    owner.bodies.append(body)
                    owner.seen_headers.append({name.lower(): value
                                               for name, value in self.headers.items()})
                mode = owner.mode
                if mode == "hang":
                    owner.release.wait(30)
                    self.close_connection = True
                    return
                if mode == "slow":
                    owner.release.wait(owner.delay)
                    mode = "ok"
                if mode == "drop":
                    self.close_connection = True
                    return
                if mode == "cut":
                    self.send_response(200)
                    self.send_header("Content-Length", str(owner.stream_bytes))
                    self.end_headers()
                    self.wfile.write(b"x" * 10)
                    self.close_connection = True
                    return
                if mode == "stream":
                    self.send_response(200)
                    self.send_header("Content-Length", str(owner.stream_bytes))
                    self.end_headers()
                    chunk = b"x" * 65536
                    left = owner.stream_bytes
                    while left > 0:
                        self.wfile.write(chunk[: min(left, len(chunk))])
                        left -= len(chunk)
                    return
                status = 200 if mode in ("ok", "slow") else owner.status
                text = (f"{owner.port} {self.command} {self.path} host={self.headers['Host']} "
                        f"body={body.decode(errors='replace')}").encode()
                self.send_response(status)
                for name, value in (owner.headers if mode == "status" else {}).items():
                    self.send_header(name, value.encode().decode("latin-1"))  # UTF-8 bytes
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def _read_chunked(self) -> bytes:
                data = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name=f"test-instance-{self.port}")
        self._thread.start()
        self._alive = True

    def total(self) -> int:
        with self._lock:
            return sum(self.received.values())

    def kill(self) -> None:
        """Stop listening: new connections are refused."""
        if self._alive:
            self._alive = False
            self.release.set()
            self.server.shutdown()
            self.server.server_close()
            self._thread.join(5)

    close = kill
