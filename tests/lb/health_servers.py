"""Local instances for the health-check tests: an HTTP instance whose health route and
application routes answer as told, and a gRPC instance with the standard health service.

``kill()`` makes an instance unreachable the way a crash does: the listener closes
*and* every open connection is cut (a plain ``server_close`` leaves keep-alive
connections served, so a pooled health check would keep passing).  ``revive()``
listens again on the same port.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections import Counter
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


class HealthInstance:
    """An HTTP instance on 127.0.0.1: ``/health`` answers ``health_status`` (after
    ``health_delay`` seconds), every other path ``app_status``; ``hits`` counts
    requests by path and ``times`` records when health checks arrived.  With
    ``tls`` (a server ``ssl.SSLContext``) it speaks https."""

    def __init__(self, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls
        self.health_status = 200
        self.app_status = 200
        self.health_delay = 0.0
        self.hits: Counter[str] = Counter()
        self.times: list[float] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._start(port)

    def _start(self, port: int) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def setup(self) -> None:
                super().setup()
                with owner._lock:
                    owner._connections.add(self.connection)
                if isinstance(self.connection, ssl.SSLSocket):
                    try:
                        self.connection.do_handshake()
                    except OSError:  # a refused peer ends here (quietly)
                        with owner._lock:
                            owner._connections.discard(self.connection)
                        raise

            def finish(self) -> None:
                with owner._lock:
                    owner._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def do_GET(self) -> None:
                path = self.path
                with owner._lock:
                    owner.hits[path] += 1
                    if path == "/health":
                        owner.times.append(time.monotonic())
                        owner.headers.append(dict(self.headers))
                if path == "/health":
                    if owner.health_delay:
                        time.sleep(owner.health_delay)
                    status = owner.health_status
                else:
                    status = owner.app_status
                body = f"{owner.port} {path}".encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if self._tls is not None:  # the handshake happens in the handler's thread
            self.server.socket = self._tls.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False)
            self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name=f"test-health-instance-{self.port}")
        self._thread.start()
        self.alive = True

    def health_checks(self) -> int:
        with self._lock:
            return self.hits["/health"]

    def kill(self) -> None:
        """Crash: stop listening and cut every open connection."""
        if not self.alive:
            return
        self.alive = False
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    def revive(self) -> None:
        """Listen again on the same port."""
        if not self.alive:
            self._start(self.port)

    close = kill


class GrpcHealthInstance:
    """A grpcio server with the standard health service (``grpcio-health-checking``)
    and nothing else; ``set(service, serving)`` flips a service's status.  With
    ``credentials`` (``grpc.ssl_server_credentials(...)``) it speaks TLS."""

    def __init__(self, credentials: Any = None) -> None:
        self._pool = futures.ThreadPoolExecutor(max_workers=4)
        self.server = grpc.server(self._pool)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = (self.server.add_insecure_port("127.0.0.1:0") if credentials is None
                     else self.server.add_secure_port("127.0.0.1:0", credentials))
        self.address = f"127.0.0.1:{self.port}"
        self.server.start()
        self.set("", serving=True)

    def set(self, service: str, *, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        self.health.set(service, status)

    def kill(self) -> None:
        self.server.stop(grace=None).wait(5)
        self._pool.shutdown(wait=True)


class BareGrpcInstance:
    """A grpcio server without the health service (a check gets UNIMPLEMENTED)."""

    def __init__(self) -> None:
        self._pool = futures.ThreadPoolExecutor(max_workers=2)
        self.server = grpc.server(self._pool)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"
        self.server.start()

    def kill(self) -> None:
        self.server.stop(grace=None).wait(5)
        self._pool.shutdown(wait=True)
