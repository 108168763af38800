"""One connection pool per instance address, for the transport's default inner
transport: :class:`Pools`.

Why per instance: httpcore's pool looks at every connection it holds on each
request (twice: when the request comes in and when its response is closed),
polling each idle socket to see whether the server closed it.  One pool shared by
every instance of every service makes each request pay for the connections of all
the others: with 3 instances, three times the polls of plain httpx to one host,
and with 8 callers up to 24 connections scanned per request.  A pool per address
costs what plain httpx to that host costs; it is what Finagle and Envoy keep (a
pool per host) and what Go's ``http.Transport`` keys its idle connections by.

Lifetime: the instance endpoints of every service :meth:`Pools.acquire` the pool
of their address when made and :meth:`Pools.release` it when their instance
leaves (the Endpointer closes them), so two services on one address share it and
an instance that flaps back keeps its warm connections.  A pool nobody holds is
*retired*, not closed: a response may still be streaming from it.
:meth:`Pools.sweep` (run by the transport at most once a second, on its request
path, and at close) hands back the retired pools whose connections are all idle,
for the driver to close outside the lock.  Nothing here does I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Pools", "idle"]

T = TypeVar("T")


class _Entry(Generic[T]):
    __slots__ = ("holders", "transport")

    def __init__(self, transport: T) -> None:
        self.transport = transport
        self.holders = 0


class Pools(Generic[T]):
    """Inner transports (``httpx.HTTPTransport`` / ``AsyncHTTPTransport``), one per
    instance address, made by ``make()`` on first use.  ``idle(transport)`` tells
    whether no response is open on it.  Thread-safe."""

    def __init__(self, make: Callable[[], T], idle: Callable[[T], bool]) -> None:
        self._make = make
        self._idle = idle
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry[T]] = {}
        self._retired: dict[str, _Entry[T]] = {}
        self._closed = False

    def acquire(self, instance: str) -> T:
        """The transport of ``instance``'s pool, held until :meth:`release`."""
        with self._lock:
            entry = self._entries.get(instance)
            if entry is None:
                entry = self._retired.pop(instance, None)  # back before it was closed
                if entry is None:
                    entry = _Entry(self._make())
                self._entries[instance] = entry
            entry.holders += 1
            return entry.transport

    def release(self, instance: str) -> None:
        """One holder of ``instance``'s pool let it go (its endpoint was closed)."""
        with self._lock:
            entry = self._entries.get(instance)
            if entry is None:
                return
            entry.holders -= 1
            if entry.holders <= 0:
                del self._entries[instance]
                if not self._closed:
                    self._retired[instance] = entry

    def sweep(self) -> list[T]:
        """The retired transports with every connection idle, forgotten: the caller
        closes them."""
        with self._lock:
            if not self._retired:
                return []
            done = [name for name, entry in self._retired.items()
                    if self._idle(entry.transport)]
            return [self._retired.pop(name).transport for name in done]

    def take_all(self) -> list[T]:
        """Every transport, held or retired, forgotten (the transport is closing)."""
        with self._lock:
            self._closed = True
            everything = [entry.transport for entry in
                          (*self._entries.values(), *self._retired.values())]
            self._entries.clear()
            self._retired.clear()
        return everything

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries) + len(self._retired)

    def addresses(self) -> list[str]:
        """The addresses with a pool held (for inspection and tests)."""
        with self._lock:
            return sorted(self._entries)


def idle(transport: Any) -> bool:
    """Whether no connection of an httpx transport's pool is busy (httpcore's public
    ``connections`` view; the pool itself is httpx's ``_pool``, as in
    :mod:`sd.http._deadline`)."""
    pool = getattr(transport, "_pool", None)
    connections = getattr(pool, "connections", None)
    if connections is None:
        return True
    return all(each.is_idle() or each.is_closed() for each in connections)
