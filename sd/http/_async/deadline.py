"""Network backends that end every socket wait by the retry deadline
(:mod:`sd.http._deadline` says why and how), written once, for asyncio; the sync
twin is generated from this module by ``.ci/unasync.py`` (see its ``PAIRS``)."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from kitsd.core.deadline import current_deadline

__all__ = ["AsyncDeadlineBackend", "AsyncDeadlineStream", "install_async"]

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


class AsyncDeadlineStream(httpcore.AsyncNetworkStream):
    """A stream (``httpcore.AsyncNetworkStream``) whose reads and writes end by the
    deadline."""

    __slots__ = ("_stream",)

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:  # h11 hands over empty writes too (a body's end): nothing to wait for
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
    """Wraps a backend (``httpcore.AsyncNetworkBackend``) so that connects and streams
    end by the deadline."""

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


def install_async(transport: httpx.AsyncHTTPTransport) -> bool:
    """Make ``transport`` (an ``httpx.AsyncHTTPTransport``, fresh: no connection made
    yet) end its I/O by the deadline; returns whether it could (see
    :mod:`sd.http._deadline`: if httpx's layout changed, a warning is logged once and
    the transport is left as it is)."""
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(pool, httpcore.AsyncConnectionPool) or not isinstance(
        backend, httpcore.AsyncNetworkBackend
    ):
        _layout_changed(transport)
        return False
    pool._network_backend = AsyncDeadlineBackend(backend)
    return True
