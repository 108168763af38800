"""In-process grpcio servers speaking bytes: ``/test.Echo/Call`` answers
``b"<port>:<request>"``; a request of ``b"fail:<CODE>"`` aborts with that status
and ``b"hang"`` waits until the server stops."""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any

import grpc

METHOD = "/test.Echo/Call"


class GRPCInstance:
    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = futures.ThreadPoolExecutor(max_workers=8)
        self.server = grpc.server(self._pool)
        handler = grpc.method_handlers_generic_handler(
            "test.Echo", {"Call": grpc.unary_unary_rpc_method_handler(self._call)})
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"
        self.server.start()
        self._alive = True

    def _call(self, request: bytes, context: Any) -> bytes:
        with self._lock:
            self.calls += 1
        if request.startswith(b"fail:"):
            context.abort(getattr(grpc.StatusCode, request[5:].decode()), "told to fail")
        if request == b"hang":
            self._stop.wait(30)
        return f"{self.port}:".encode() + request

    def kill(self) -> None:
        if self._alive:
            self._alive = False
            self._stop.set()
            self.server.stop(grace=None).wait(5)
            self._pool.shutdown(wait=True)


class SilentInstance:
    """A TCP listener that accepts connections and never says a word: no HTTP/2."""

    def __init__(self) -> None:
        import socket

        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.accepted: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-grpc", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for connection in self.accepted:
            connection.close()
        self._listener.close()
