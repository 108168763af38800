"""Where the sync and asyncio transports genuinely differ, written as hand-made pairs
(httpcore's ``_synchronization.py`` plays this part there; ``lb/_concurrency.py``
here for the retry loops).  ``_async/`` imports the ``async_`` names, its generated
twin in ``_sync/`` the plain ones, with the same interface:

* :func:`async_send` / :func:`send` — send one attempt through the inner
  transport.  asyncio: cancellable only once the request is on the wire
  (httpcore#1093 leaves a connection cancelled before use in the pool for good;
  fenced in :mod:`kitsd.transport._httpcore_cancel`).
* :func:`async_build_stack` / :func:`build_stack` — build a service's stack.
  asyncio: on a worker thread when the discovery may block (a registry client
  connects, a watch waits for its first answer), never on the event loop.
* :func:`async_result` / :func:`result` — the stack another caller is building.
* :func:`async_close_checkers` / :func:`close_checkers` — stop the health probers
  (their threads are joined: asyncio, on a worker thread).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

import httpx

from kitsd.transport import _httpcore_cancel

__all__ = [
    "async_build_stack",
    "async_close_checkers",
    "async_result",
    "async_send",
    "build_stack",
    "close_checkers",
    "result",
    "send",
]

T = TypeVar("T")


async def async_send(inner: httpx.AsyncBaseTransport, request: httpx.Request) -> httpx.Response:
    """Send ``request`` through ``inner`` (see the module docstring)."""
    return await _httpcore_cancel.send(inner, request)


def send(inner: httpx.BaseTransport, request: httpx.Request) -> httpx.Response:
    """Send ``request`` through ``inner``."""
    return inner.handle_request(request)


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


async def async_close_checkers(close: Callable[[], None]) -> None:
    """``close()`` on a worker thread (it joins the probers' threads)."""
    await asyncio.to_thread(close)


def close_checkers(close: Callable[[], None]) -> None:
    """``close()`` here."""
    close()
