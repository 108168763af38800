"""kitsd.compose.proxy.BlackHoleProxy keeps no socket of a connection that ended (it
kept both of every finished connection until it closed: a chaos run through it
counted them as the client's file descriptors)."""

from __future__ import annotations

import os
import socket
import threading

from kitsd.compose.proxy import BlackHoleProxy
from tests.helpers import wait_for


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_finished_connections_leave_no_socket_behind() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(conn.recv(16))  # echo, then close

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with BlackHoleProxy("127.0.0.1", server.getsockname()[1]) as proxy:
            before = _fds()
            for _ in range(20):
                with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as conn:
                    conn.sendall(b"ping")
                    assert conn.recv(16) == b"ping"
            wait_for(lambda: not proxy._sockets, timeout=5, what="the proxy to drop them")
            wait_for(lambda: _fds() <= before, timeout=5, what="no file descriptor left")
    finally:
        stop.set()
        thread.join(5)
        server.close()
