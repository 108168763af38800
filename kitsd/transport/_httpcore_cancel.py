"""The one place kitsd works around httpcore's handling of a cancelled request.

httpcore 1.0 (1.0.9 verified) can leave a connection in its pool for good when
the task sending a request is cancelled at the wrong moment (encode/httpcore#1093,
#986), holding a slot and, once opened, a socket; with ``max_connections`` slots
gone every later request ends in ``PoolTimeout``.  Two windows are known, both
replayed by ``tests/transport/test_cancel_fence.py`` against plain httpx:

* between the pool assigning a new connection to the request and the request
  being sent on it: the connection stays ``NEW`` (or connecting), neither idle nor
  available, and no request holds it any more;
* while the response is being closed (a pending cancellation delivered inside
  httpcore's ``_response_closed``): the request stays in the pool's queue with its
  connection ``ACTIVE``, although its stream says it is closed.

kitsd cancels requests of its own (a hedge's losing attempt, the call's deadline
in ``lb.retry_async``), so it must not leak them.  The remedy costs nothing on
the path of a request that is not cancelled: the request runs in the caller's
task as with plain httpx, and only when a cancellation comes out of it does
:func:`repair` look at the pool (a plain, synchronous pass: nothing else runs
meanwhile) and take out what no live request holds and that can never become
idle: an HTTP/1.1 connection ``NEW`` or ``ACTIVE`` without a request, a connection
never opened that nobody is opening.  Those are closed in a task of their own
(they have no request left to disturb); queued requests are then given the
freed slots, as httpcore does when a request ends.  :func:`repair_response`
also settles the second window for a response kitsd itself was closing.

That needs the httpcore pool behind the inner transport: :func:`pool_of` finds
it in an ``httpx.AsyncHTTPTransport`` (``transport._pool``, the same internal
:mod:`sd.http._deadline` uses).  An inner transport whose pool cannot be seen (a
wrapper of your own) gets :func:`shielded_send` instead: the request runs in a
task of its own under ``asyncio.shield`` and is cancelled only once it is on the
wire (httpcore's ``*.send_request_headers.started`` trace event), which closes
the first window at the price of a task per attempt.

The vendor internals read here (``AsyncConnectionPool._connections``,
``._requests``, ``_assign_requests_to_connections``, ``AsyncHTTPConnection.
_connection`` / ``._connect_failed``, ``AsyncHTTP11Connection._state``,
``PoolByteStream._closed`` / ``._pool_request``, ``AsyncResponseStream.
_httpcore_stream``) are checked by :func:`layout_known`, which the tests assert:
if httpcore changes them, :func:`pool_of` finds no pool (so the shielded path is
taken) and the contract test fails loudly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpcore
import httpx

__all__ = [
    "ON_THE_WIRE",
    "layout_known",
    "pool_of",
    "repair",
    "repair_response",
    "shielded_send",
]

logger = logging.getLogger(__name__)

#: The end of httpcore trace event names after which cancelling a request is safe
#: (for :func:`shielded_send`).
ON_THE_WIRE = ".send_request_headers.started"

Trace = Callable[[str, dict[str, Any]], Awaitable[None]]

# Closes under way (a task nobody awaits must be referenced until it ends).
_closing: set[asyncio.Future[Any]] = set()


def layout_known() -> bool:
    """Whether the installed httpcore keeps its pool the way :func:`repair` reads it."""
    try:
        from httpcore._async.connection import AsyncHTTPConnection
        from httpcore._async.connection_pool import AsyncPoolRequest, PoolByteStream
        from httpcore._async.http11 import AsyncHTTP11Connection, HTTPConnectionState
    except ImportError:
        return False
    pool = httpcore.AsyncConnectionPool()
    request = AsyncPoolRequest(httpcore.Request("GET", "http://a/"))
    connection = AsyncHTTPConnection(httpcore.Origin(b"http", b"a", 80))
    stream = PoolByteStream(iter(()), request, pool)  # type: ignore[arg-type]
    return (isinstance(getattr(pool, "_connections", None), list)
            and isinstance(getattr(pool, "_requests", None), list)
            and callable(getattr(pool, "_assign_requests_to_connections", None))
            and hasattr(request, "connection")
            and getattr(connection, "_connection", 0) is None
            and getattr(connection, "_connect_failed", None) is False
            and {"NEW", "ACTIVE", "IDLE"} <= set(HTTPConnectionState.__members__)
            and hasattr(AsyncHTTP11Connection, "_response_closed")
            and getattr(stream, "_closed", None) is False
            and getattr(stream, "_pool_request", None) is request
            and hasattr(httpx._transports.default.AsyncResponseStream(stream),
                        "_httpcore_stream"))


def pool_of(transport: object) -> httpcore.AsyncConnectionPool | None:
    """The httpcore pool of an ``httpx.AsyncHTTPTransport`` (not a proxy's: their
    connections differ), or ``None`` when it cannot be seen or read."""
    pool = getattr(transport, "_pool", None)
    if type(pool) is not httpcore.AsyncConnectionPool or not _LAYOUT:
        return None
    return pool


def repair(pool: httpcore.AsyncConnectionPool) -> int:
    """After a cancellation came out of a request on ``pool``: take out (and close
    in the background) every connection no request holds that can never be used
    again, then give queued requests the freed slots.  Returns how many were
    taken out.  Synchronous: call it on the pool's event loop."""
    from httpcore._async.connection import AsyncHTTPConnection
    from httpcore._async.http11 import AsyncHTTP11Connection, HTTPConnectionState

    held = {id(request.connection) for request in pool._requests
            if request.connection is not None}
    stuck = (HTTPConnectionState.NEW, HTTPConnectionState.ACTIVE)
    abandoned = []
    for connection in pool._connections:
        if id(connection) in held or type(connection) is not AsyncHTTPConnection:
            continue
        inner = connection._connection
        if (inner is None and not connection._connect_failed) or (
                type(inner) is AsyncHTTP11Connection and inner._state in stuck):
            abandoned.append(connection)
    if not abandoned:
        return 0
    for connection in abandoned:
        pool._connections.remove(connection)
    closing = pool._assign_requests_to_connections()  # queued requests get the slots
    _close_later([*abandoned, *closing])
    return len(abandoned)


def repair_response(pool: httpcore.AsyncConnectionPool, response: httpx.Response) -> int:
    """:func:`repair`, after a cancellation came out of closing ``response`` (kitsd's
    own, from ``pool``): a stream that says it is closed while its request still
    holds a connection in the pool gives that connection up (closed)."""
    stream = getattr(response.stream, "_httpcore_stream", None)
    request = getattr(stream, "_pool_request", None)
    taken = 0
    if getattr(stream, "_closed", False) and request is not None and request in pool._requests:
        pool._requests.remove(request)
        connection = request.connection
        if connection is not None and connection in pool._connections:
            pool._connections.remove(connection)
            _close_later([connection])
            taken = 1
    return taken + repair(pool)


def _close_later(connections: list[Any]) -> None:
    for connection in connections:
        closing = asyncio.ensure_future(connection.aclose())
        _closing.add(closing)
        closing.add_done_callback(_closed)


def _closed(task: asyncio.Future[Any]) -> None:
    _closing.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.debug("closing an abandoned connection failed", exc_info=task.exception())


# --- the shielded path, for inner transports whose pool cannot be seen ----------------


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
    _close_later([task.result()])


async def shielded_send(
    inner: httpx.AsyncBaseTransport, request: httpx.Request
) -> httpx.Response:
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


_LAYOUT = layout_known()
