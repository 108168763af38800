"""The :class:`Endpointer`: one live endpoint per instance (go-kit's ``sd.Endpointer``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from sd.endpoint import Endpoint, Pending, close_endpoint
from sd.endpoint_cache import EndpointCache
from sd.endpoint_set import EndpointSet
from sd.event import Event
from sd.instancer import Instancer

__all__ = ["Endpointer"]


class Endpointer:
    """Turns an instancer's snapshots into endpoints, one per distinct instance.

    ``factory(instance)`` builds an endpoint the first time an instance appears;
    the endpoint's ``close()`` (or ``aclose()``) is called exactly once, when the
    instance leaves or this Endpointer closes.  On an event with an error the last
    endpoints keep serving; with ``invalidate_on_error=T``, once ``T`` seconds
    have passed in the error state, :meth:`endpoints` closes them all and raises
    the first stored error until a good event arrives.

    Thread-safe.  ``aclose()`` endpoints are closed on the event loop that was
    running when the Endpointer was made (or the one running at close time);
    ``await endpointer.aclose()`` waits for them.  ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        instancer: Instancer,
        factory: Callable[[str], Endpoint],
        *,
        invalidate_on_error: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache: EndpointCache[Endpoint] = EndpointCache(factory, invalidate_on_error)
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self._pending: list[Pending] = []
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._instancer = instancer
        instancer.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        with self._lock:
            if self._closed:
                return
            to_close = self._cache.update(event, self._clock())
        self._close_all(to_close)

    def endpoints(self) -> list[Endpoint]:
        """The endpoints, in sorted instance order.

        Raises the first stored discovery error when ``invalidate_on_error`` has
        run out; raises ``RuntimeError`` after :meth:`close`.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("endpointer is closed")
            read = self._cache.read(self._clock())
        if read.to_close:
            self._close_all(read.to_close)
        if read.error is not None:
            raise read.error.with_traceback(None)
        return list(read.endpoints)

    def snapshot(self) -> EndpointSet:
        """The endpoints and their instances as one immutable :class:`~sd.EndpointSet`;
        the same object until the set changes, so reading it is O(1).

        Raises like :meth:`endpoints`.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("endpointer is closed")
            read = self._cache.read(self._clock())
        if read.to_close:
            self._close_all(read.to_close)
        if read.error is not None:
            raise read.error.with_traceback(None)
        return read.set

    @property
    def instances(self) -> tuple[str, ...]:
        """The instances that currently have an endpoint, sorted."""
        with self._lock:
            return self._cache.instances

    def close(self) -> None:
        """Unsubscribe and close every endpoint; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            to_close = self._cache.close()
        self._instancer.unsubscribe(self._on_event)
        self._close_all(to_close)

    async def aclose(self) -> None:
        """:meth:`close`, then wait for async endpoint closes to finish."""
        self.close()
        with self._lock:
            pending, self._pending = self._pending, []
        for item in pending:
            if isinstance(item, concurrent.futures.Future):
                await asyncio.wrap_future(item)
            else:
                await item

    def _close_all(self, endpoints: list[Endpoint]) -> None:
        for endpoint in endpoints:
            pending = close_endpoint(endpoint, self._loop)
            if pending is not None:
                with self._lock:
                    self._pending = [p for p in self._pending if not p.done()]
                    self._pending.append(pending)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()
