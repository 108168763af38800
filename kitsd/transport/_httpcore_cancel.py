"""The one place kitsd works around httpcore's handling of a cancelled request.

httpcore 1.0 (1.0.9 verified) leaves a connection in its pool for good when the
request that opened it is cancelled after the connection was assigned or
opened and before the request was sent on it (encode/httpcore#1093, #986: the
connection stays ``NEW``/connecting, neither idle nor available, holding a slot
and, once opened, a socket).  A hedge's losing attempt is cancelled, often
right in that window: hundreds of hedged calls then fill the pool and every
later request ends in ``PoolTimeout``.  A cancellation once the request is on the
wire is safe: httpcore closes the connection.

:func:`send` runs the request in a task of its own under ``asyncio.shield``: the
caller's cancellation reaches the caller at once, and reaches the request only
once its headers are being sent (httpcore's ``*.send_request_headers.started``
trace event, through the public ``trace`` request extension, chained with one the
request already has, and handed back to it from then on: httpcore reads the
extension anew for each phase, so the rest of the request is not traced by us).
A request that completes meanwhile has its response closed, so its connection
goes back to the pool.  With an inner transport that
does not emit httpcore's trace events, a cancelled request runs to its end
(bounded by its timeouts) and its response is closed.

``tests/lb/test_hedging_http.py`` proves the pool stays usable, and checks that
the installed httpcore still emits the event this module waits for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

__all__ = ["ON_THE_WIRE", "send"]

#: The end of httpcore trace event names after which cancelling a request is safe.
ON_THE_WIRE = ".send_request_headers.started"

Trace = Callable[[str, dict[str, Any]], Awaitable[None]]


class _Shielded:
    """One request's cancellation state, shared with its trace callback."""

    __slots__ = ("cancel_wanted", "extensions", "on_the_wire", "task", "trace")

    def __init__(self, extensions: dict[str, Any]) -> None:
        self.extensions = extensions
        self.trace: Trace | None = extensions.get("trace")
        self.on_the_wire = False
        self.cancel_wanted = False
        self.task: asyncio.Future[httpx.Response] | None = None

    async def __call__(self, name: str, info: dict[str, Any]) -> None:
        if not self.on_the_wire and name.endswith(ON_THE_WIRE):
            self.on_the_wire = True
            # httpcore looks the extension up anew for each phase: the request's own
            # trace (or none) from here on, so the rest of it costs nothing more
            if self.trace is None:
                self.extensions.pop("trace", None)
            else:
                self.extensions["trace"] = self.trace
            if self.cancel_wanted and self.task is not None:
                self.task.cancel()  # delivered at httpcore's next await: a safe one
        if self.trace is not None:
            await self.trace(name, info)


def _settle(task: asyncio.Future[httpx.Response]) -> None:
    """A request nobody waits for any more: close the response it got, if any."""
    if task.cancelled() or task.exception() is not None:
        return
    response = task.result()
    closing = asyncio.ensure_future(response.aclose())
    closing.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a failed close has nothing left to tell


async def send(inner: httpx.AsyncBaseTransport, request: httpx.Request) -> httpx.Response:
    """``await inner.handle_async_request(request)``, cancellable only once the request
    is on the wire (see the module docstring).  ``request.extensions`` is replaced
    by a copy holding the chained ``trace``."""
    extensions = dict(request.extensions)
    shielded = _Shielded(extensions)
    extensions["trace"] = shielded
    request.extensions = extensions
    task = asyncio.ensure_future(inner.handle_async_request(request))
    shielded.task = task
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if task.done():
            _settle(task)
        else:
            if shielded.on_the_wire:
                task.cancel()
            else:
                shielded.cancel_wanted = True
            task.add_done_callback(_settle)
        raise
