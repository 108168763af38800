"""The connection pool of one instance, as plain decisions.

Theory of operation.  A Thrift connection carries one call at a time, so the pool
is a stack of idle connections.  A call *takes* the most recently returned one
(or, when there is none, opens its own), and *gives* it back once the reply is
whole; a connection whose call failed in any way is never given back (its state
is unknown), the driver closes it.  The stack keeps at most ``max_idle``
connections; one given back to a full or closed pool is handed back to be closed.
Connections idle longer than ``idle_timeout`` are handed out for closing by the
next ``take``, oldest first, before a server or a middlebox drops them silently.

Every method decides under the driver's lock and returns what to close; the
driver closes it after releasing the lock (no I/O here, no clock: ``now`` is an
argument).  After :meth:`Pool.close` a ``take`` raises :class:`PoolClosed` and
every connection given back is returned for closing, so one a call was still
opening when the instance left is closed by that call.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

__all__ = ["Pool", "PoolClosed"]

C = TypeVar("C")


class PoolClosed(Exception):  # internal; the drivers raise ThriftConnectError
    """The pool is closed: its instance left or its endpoint was closed."""


class Pool(Generic[C]):
    """Idle connections of one instance (see the module docstring).  Not
    thread-safe by itself: the driver calls it under its lock."""

    __slots__ = ("_idle", "_idle_timeout", "_max_idle", "closed")

    def __init__(self, max_idle: int, idle_timeout: float | None) -> None:
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self._idle: deque[tuple[C, float]] = deque()
        self.closed = False

    def __len__(self) -> int:
        return len(self._idle)

    def take(self, now: float) -> tuple[C | None, list[C]]:
        """The idle connection to use (``None``: open a new one) and the expired ones
        to close.  Raises :class:`PoolClosed` once closed."""
        if self.closed:
            raise PoolClosed
        idle = self._idle
        expired: list[C] = []
        if self._idle_timeout is not None:
            oldest = now - self._idle_timeout
            while idle and idle[0][1] <= oldest:
                expired.append(idle.popleft()[0])
        return (idle.pop()[0] if idle else None), expired

    def give(self, connection: C, now: float) -> C | None:
        """Keep ``connection`` (its call ended cleanly); returns it when it must be
        closed instead: the pool is closed or full."""
        if self.closed or len(self._idle) >= self._max_idle:
            return connection
        self._idle.append((connection, now))
        return None

    def close(self) -> list[C]:
        """Close the pool; returns every idle connection, to be closed.  Idempotent."""
        self.closed = True
        idle = [connection for connection, _ in self._idle]
        self._idle.clear()
        return idle
