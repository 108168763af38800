"""Helpers shared by the server launchers: free ports, polling, process teardown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable

__all__ = ["free_ports", "stop_process", "wait_until"]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that were free on ``host`` a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``predicate`` until true; raise ``TimeoutError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001, S110 - a server still starting may fail in any way
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def stop_process(
    process: subprocess.Popen[bytes], *, kill: bool = False, timeout: float = 10.0
) -> None:
    """Stop ``process`` (SIGTERM, or SIGKILL with ``kill=True``) and reap it; idempotent."""
    if process.poll() is not None:
        return
    try:
        os.kill(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
