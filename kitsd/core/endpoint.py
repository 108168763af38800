"""Endpoints and middlewares: the types, and helpers shared by every wrapper.

An *endpoint* is ``endpoint(request) -> response`` (raising on failure) or its
async twin ``async endpoint(request) -> response``.  A *middleware* takes an
endpoint and returns one of the same kind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeAlias

__all__ = [
    "AsyncEndpoint",
    "Endpoint",
    "Factory",
    "Middleware",
    "Pending",
    "SyncEndpoint",
    "close_endpoint",
    "is_async",
]

logger = logging.getLogger(__name__)

SyncEndpoint: TypeAlias = Callable[[Any], Any]
AsyncEndpoint: TypeAlias = Callable[[Any], Coroutine[Any, Any, Any]]
#: Either kind; kitsd checks which with :func:`is_async`.
Endpoint: TypeAlias = Callable[[Any], Any]
Middleware: TypeAlias = Callable[[Endpoint], Endpoint]
#: ``factory(instance) -> endpoint``.
Factory: TypeAlias = Callable[[str], Endpoint]
#: A close still under way: a task on this loop, or a future from another loop.
Pending: TypeAlias = "asyncio.Future[None] | concurrent.futures.Future[None]"


def is_async(endpoint: object) -> bool:
    """Whether ``endpoint`` is an async endpoint (a coroutine function, or an object
    whose ``__call__`` is one)."""
    if inspect.iscoroutinefunction(endpoint):
        return True
    call = getattr(type(endpoint), "__call__", None)  # noqa: B004 - we want the class attribute
    return call is not None and inspect.iscoroutinefunction(call)


def close_endpoint(
    endpoint: object,
    loop: asyncio.AbstractEventLoop | None = None,
    *,
    run: Callable[[Coroutine[Any, Any, None]], Pending] | None = None,
) -> Pending | None:
    """Close ``endpoint`` if it has ``close()`` or ``aclose()``; errors are logged.

    A sync ``close()`` runs here.  An ``aclose()`` coroutine is scheduled on the
    running loop, else on ``loop`` if that loop is running in another thread, else
    handed to ``run`` (which must not wait for it: :class:`sd.Endpointer` passes its
    closer thread), else run to completion here on a fresh loop.  Returns what to
    wait for, if anything: a task on the running loop or a future.  Never raises.
    """
    close = getattr(endpoint, "close", None)
    try:
        if callable(close):
            result = close()
            if not inspect.isawaitable(result):
                return None
            coroutine: Awaitable[None] = result
        else:
            aclose = getattr(endpoint, "aclose", None)
            if not callable(aclose):
                return None
            coroutine = aclose()
        return _schedule(coroutine, loop, endpoint, run)
    except Exception:
        logger.exception("closing endpoint %r failed", endpoint)
        return None


async def _logged(coroutine: Awaitable[None], endpoint: object) -> None:
    try:
        await coroutine
    except Exception:
        logger.exception("closing endpoint %r failed", endpoint)


def _schedule(
    coroutine: Awaitable[None],
    loop: asyncio.AbstractEventLoop | None,
    endpoint: object,
    run: Callable[[Coroutine[Any, Any, None]], Pending] | None,
) -> Pending | None:
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    wrapped = _logged(coroutine, endpoint)
    if running is not None:
        return running.create_task(wrapped)
    if loop is not None and loop.is_running() and not loop.is_closed():
        return asyncio.run_coroutine_threadsafe(wrapped, loop)
    if run is not None:
        return run(wrapped)
    asyncio.run(wrapped)
    return None
