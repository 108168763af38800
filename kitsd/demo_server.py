"""Tiny local HTTP instances for ``kitsd demo``: start one, kill it like a crash."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["DemoInstance"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.served = 0
        self.delay = 0.0  # seconds every answer takes
        self.stall_every = 0  # every Nth answer (0: none) takes `stall` seconds instead
        self.stall = 0.0

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.connections_lock:
                self.connections.discard(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server: _Server

    def do_GET(self) -> None:
        host, port = self.server.server_address[:2]
        body = json.dumps({"instance": f"{host!s}:{port}", "path": self.path}).encode()
        with self.server.connections_lock:
            self.server.served += 1
            served = self.server.served
        server = self.server
        if server.stall_every and served % server.stall_every == 0:
            time.sleep(server.stall)
        elif server.delay:
            time.sleep(server.delay)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the demo prints its own summary."""


class DemoInstance:
    """One HTTP instance on a free loopback port, served from a background thread."""

    def __init__(self, host: str = "127.0.0.1", *, delay: float = 0.0, stall_every: int = 0,
                 stall: float = 0.0) -> None:
        """``delay``: seconds each answer takes; every ``stall_every``-th answer (0:
        none) takes ``stall`` seconds instead (for latency demos and benchmarks)."""
        self._server = _Server((host, 0))
        self._server.delay = delay
        self._server.stall_every = stall_every
        self._server.stall = stall
        address = self._server.server_address
        self.instance = f"{address[0]!s}:{address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"demo-{self.instance}", daemon=True
        )
        self._thread.start()
        self.alive = True

    @property
    def served(self) -> int:
        """Requests answered so far."""
        return self._server.served

    def kill(self) -> None:
        """Stop at once, like a crash: stop accepting and cut open keep-alive connections."""
        if not self.alive:
            return
        self.alive = False
        self._server.shutdown()
        with self._server.connections_lock:
            connections = list(self._server.connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already gone
                connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()  # closes the listener and joins the handler threads
        self._thread.join()
