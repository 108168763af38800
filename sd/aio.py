"""asyncio adapters that work with every instancer and registrar.

The registry drivers run their watches on threads (the client libraries are
synchronous) and deliver to callbacks, which already suits asyncio code: an
:class:`~sd.Endpointer` may be used from a loop as it is.  For code that wants
to *await* discovery, two thin adapters keep sync and async in step for every
driver at once, rather than an async copy of each:

* :class:`EventStream` — ``async for event in EventStream(instancer)``: the
  instancer's snapshots delivered onto the loop, in order.
* :class:`AsyncRegistrar` — ``async with AsyncRegistrar(registrar)``: the
  registrar's blocking ``register()`` / ``deregister()`` run in a worker thread,
  so the loop is never blocked on the registry's network round trip.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from kitsd.sd.event import Event
from kitsd.sd.instancer import Instancer
from kitsd.sd.registrar import Registrar

__all__ = ["AsyncClosable", "AsyncRegistrar", "EventStream"]


class AsyncClosable:
    """``async with`` for an object closed by ``await aclose()``: entering returns
    it, leaving closes it (the asyncio instancers, :class:`EventStream`,
    ``kitsd.serve.Service``)."""

    async def aclose(self) -> None:
        """Close; idempotent."""
        raise NotImplementedError  # pragma: no cover - each class closes its own way

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class EventStream(AsyncClosable):
    """The snapshots of ``instancer`` as an async iterator, on the running loop.

    Subscribes at once (so the first item is the current state); ``aclose()`` (or
    leaving ``async with``) unsubscribes and ends the iteration.  It does not stop
    the instancer, which the caller owns.  Snapshots are queued, never dropped.
    Must be created inside a running loop; the instancer may call back from any thread.
    """

    def __init__(self, instancer: Instancer) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._instancer = instancer
        self._closed = False
        instancer.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if self._closed:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:  # called back on the loop's own thread
            self._queue.put_nowait(event)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        """Unsubscribe and end the iteration; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._instancer.unsubscribe(self._on_event)
        self._queue.put_nowait(None)


class AsyncRegistrar:
    """Awaitable ``register()`` / ``deregister()`` for any :class:`~sd.Registrar`.

    The blocking calls run in a worker thread (``asyncio.to_thread``); as an async
    context manager it registers on enter and deregisters on exit.  The wrapped
    registrar's own background work (heartbeats, lease keep-alive) is unchanged.
    """

    def __init__(self, registrar: Registrar) -> None:
        self.registrar = registrar

    async def register(self) -> None:
        """Register without blocking the loop."""
        await asyncio.to_thread(self.registrar.register)

    async def deregister(self) -> None:
        """Deregister without blocking the loop."""
        await asyncio.to_thread(self.registrar.deregister)

    async def __aenter__(self) -> Self:
        await self.register()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.deregister()

    def __repr__(self) -> str:
        return f"AsyncRegistrar({self.registrar!r})"
