"""Network backends that cap every socket wait at the retry deadline.

httpx's timeouts bound each phase of a request (connect, each read, each write),
not the whole exchange: a server trickling its body one byte per second keeps a
request alive for as long as it likes, each read well inside the read timeout.
The fix sits where the waiting happens.  httpcore, under httpx, does all its
network I/O through a small public interface (``httpcore.NetworkBackend`` /
``NetworkStream`` and their async twins).  :class:`DeadlineBackend` wraps the
default backend: before each connect, read or write it reads the deadline of the
current retry attempt (:func:`kitsd.core.deadline.current_deadline`, a context variable;
httpcore does its I/O in the caller's thread or task, so the variable is the
caller's) and shortens the wait to the time left, or raises httpcore's timeout
for that phase when none is left.  Outside a retry it passes everything through.

The only vendor internal: ``httpx.HTTPTransport`` takes no ``network_backend``
argument, although the httpcore pool it builds does.  :func:`install` swaps the
pool's backend after construction (``transport._pool._network_backend``), before
any connection exists.  If httpx's layout changes it logs a warning once and
leaves the transport as it is (then only the per-phase caps bound a request);
``tests/sd/test_http_deadline.py`` fails loudly on such a change.
"""

# httpcore's async network interface takes timeout= arguments: its signature, not ours.
# ruff: noqa: ASYNC109

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from kitsd.core.deadline import current_deadline

__all__ = ["AsyncDeadlineBackend", "DeadlineBackend", "install", "install_async"]

logger = logging.getLogger(__name__)

_warned = False  # the layout warning is worth one line per process, not one per client


def _left(timeout: float | None, error: type[httpcore.TimeoutException]) -> float | None:
    """``timeout`` shortened to the time left before the deadline; raises ``error`` if none."""
    deadline = current_deadline()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("deadline passed")
    return left if timeout is None or timeout > left else timeout


class DeadlineStream(httpcore.NetworkStream):
    """A ``NetworkStream`` whose reads and writes end by the deadline."""

    __slots__ = ("_stream",)

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _left(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """Wraps a ``NetworkBackend`` so that connects and streams end by the deadline."""

    __slots__ = ("_backend",)

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _left(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(
            self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        )

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _left(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class AsyncDeadlineStream(httpcore.AsyncNetworkStream):
    """The async twin of :class:`DeadlineStream`."""

    __slots__ = ("_stream",)

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, _left(timeout, httpcore.WriteTimeout))

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        timeout = _left(timeout, httpcore.ConnectTimeout)
        stream = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        return AsyncDeadlineStream(stream)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class AsyncDeadlineBackend(httpcore.AsyncNetworkBackend):
    """The async twin of :class:`DeadlineBackend`."""

    __slots__ = ("_backend",)

    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        timeout = _left(timeout, httpcore.ConnectTimeout)
        stream = await self._backend.connect_tcp(
            host, port, timeout, local_address, socket_options
        )
        return AsyncDeadlineStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        timeout = _left(timeout, httpcore.ConnectTimeout)
        stream = await self._backend.connect_unix_socket(path, timeout, socket_options)
        return AsyncDeadlineStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def _layout_changed(transport: object) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning(
            "httpx %s / httpcore %s: %s no longer keeps an httpcore pool with a network "
            "backend where kitsd expects it; sd.http requests are bounded by the retry "
            "deadline per phase only",
            httpx.__version__, httpcore.__version__, type(transport).__name__,
        )


def install(transport: httpx.HTTPTransport) -> bool:
    """Make ``transport`` (fresh, no connection made yet) cap its I/O at the deadline.

    Returns whether it could; see the module docstring.
    """
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(pool, httpcore.ConnectionPool) or not isinstance(
        backend, httpcore.NetworkBackend
    ):
        _layout_changed(transport)
        return False
    pool._network_backend = DeadlineBackend(backend)
    return True


def install_async(transport: httpx.AsyncHTTPTransport) -> bool:
    """The async twin of :func:`install`."""
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(pool, httpcore.AsyncConnectionPool) or not isinstance(
        backend, httpcore.AsyncNetworkBackend
    ):
        _layout_changed(transport)
        return False
    pool._network_backend = AsyncDeadlineBackend(backend)
    return True
