"""Where the sync and asyncio transports genuinely differ, written as hand-made pairs
(httpcore's ``_synchronization.py`` plays this part there; ``lb/_concurrency.py``
here for the retry loops).  ``_async/`` imports the ``async_`` names, its generated
twin in ``_sync/`` the plain ones, with the same interface:

* :class:`AsyncSender` / :class:`Sender` — how an instance endpoint sends one
  attempt through its inner transport, and reads a small body within the attempt.
  Threads: the transport's ``handle_request`` itself.  asyncio:
  ``handle_async_request`` in the caller's task, and after a cancellation the pool
  is repaired (httpcore#1093 leaves a connection cancelled at the wrong moment in
  the pool for good; fenced in :mod:`kitsd.transport._httpcore_cancel`), or, for
  an inner transport whose pool cannot be seen, a request cancellable only once
  it is on the wire.
* :func:`async_build_stack` / :func:`build_stack` — build a service's stack.
  asyncio: on a worker thread when the discovery may block (a registry client
  connects, a watch waits for its first answer), never on the event loop.
* :func:`async_result` / :func:`result` — the stack another caller is building.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TypeVar, cast

import httpx

from kitsd.transport import _httpcore_cancel

__all__ = [
    "AsyncSender",
    "Sender",
    "async_build_stack",
    "async_result",
    "build_stack",
    "result",
]

T = TypeVar("T")


class AsyncSender:
    """How an asyncio instance endpoint talks to its inner transport (see the module
    docstring): :meth:`send` one attempt, :meth:`read` a response's body within it."""

    __slots__ = ("_pool", "send")

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        pool = self._pool = _httpcore_cancel.pool_of(inner)
        self.send: Callable[[httpx.Request], Awaitable[httpx.Response]]
        if pool is None:
            self.send = functools.partial(_httpcore_cancel.shielded_send, inner)
            return
        repair = _httpcore_cancel.repair

        async def send(request: httpx.Request) -> httpx.Response:
            try:  # looked up per attempt: an instrumentation may wrap it later
                return await inner.handle_async_request(request)
            except asyncio.CancelledError:
                repair(pool)
                raise

        self.send = send

    async def read(self, response: httpx.Response) -> None:
        """Read ``response``'s body now and close its stream (its connection goes back
        to the pool); the response then serves the body from memory.  httpx's
        errors if the body is cut."""
        stream = cast(httpx.AsyncByteStream, response.stream)
        try:
            try:
                body = b"".join([part async for part in stream])
            finally:
                await stream.aclose()
        except asyncio.CancelledError:
            if self._pool is not None:
                _httpcore_cancel.repair_response(self._pool, response)
            raise
        response.stream = httpx.ByteStream(body)


class Sender:
    """How a thread's instance endpoint talks to its inner transport: :meth:`send`
    is its ``handle_request``."""

    __slots__ = ("send",)

    def __init__(self, inner: httpx.BaseTransport) -> None:
        def send(request: httpx.Request) -> httpx.Response:
            # looked up per attempt, not bound once: an instrumentation (the
            # OpenTelemetry httpx one) may wrap the class's method after this is made
            return inner.handle_request(request)

        self.send: Callable[[httpx.Request], httpx.Response] = send

    @staticmethod
    def read(response: httpx.Response) -> None:
        """Read ``response``'s body now and close its stream (its connection goes back
        to the pool); the response then serves the body from memory.  httpx's
        errors if the body is cut."""
        stream = cast(httpx.SyncByteStream, response.stream)
        try:
            body = b"".join(list(stream))
        finally:
            stream.close()
        response.stream = httpx.ByteStream(body)


async def async_build_stack(blocking: bool, build: Callable[[str], T], name: str) -> T:
    """``build(name)``, on a worker thread when it may block."""
    if blocking:
        return await asyncio.to_thread(build, name)
    return build(name)


def build_stack(blocking: bool, build: Callable[[str], T], name: str) -> T:
    """``build(name)``, here (the calling thread may block)."""
    return build(name)


async def async_result(future: Future[T]) -> T:
    """Wait for ``future`` without blocking the event loop."""
    return await asyncio.wrap_future(future)


def result(future: Future[T]) -> T:
    """Wait for ``future``."""
    return future.result()
