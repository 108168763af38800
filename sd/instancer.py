"""Instancers: sources of :class:`~sd.event.Event` snapshots, and the one place
where subscriber bookkeeping is written.

Theory of operation
-------------------
A *watch* (a Consul blocking query loop, an etcd watch, an in-process registry)
only translates registry answers into whole snapshots and hands them to a
:class:`Broadcaster`.  The broadcaster sorts and de-duplicates the instances,
drops a snapshot that says nothing new, replays the current snapshot to each
new subscriber, and delivers to subscribers in order, one snapshot at a time.

Users never hold a broadcaster: they hold an :class:`InstancerHandle`, which
remembers the callbacks *it* subscribed.  ``stop()`` on a handle removes those
callbacks and releases the handle's share of the watch; :class:`SharedWatches`
stops a watch when its last handle is stopped, so every subscriber to one
(registry, service) pair shares one watch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from types import TracebackType
from typing import Protocol, Self, TypeVar, cast, runtime_checkable

from sd.event import Event
from sd.instance import normalize_instance

__all__ = [
    "Broadcaster",
    "Callback",
    "FixedInstancer",
    "Instancer",
    "InstancerHandle",
    "SharedWatches",
    "Stoppable",
]

logger = logging.getLogger(f"kitsd.{__name__}")

Callback = Callable[[Event], object]
W = TypeVar("W", bound="Stoppable")


@runtime_checkable
class Instancer(Protocol):
    """A source of instance snapshots (go-kit's ``sd.Instancer``).

    ``subscribe(callback)`` calls ``callback(event)`` at once with the current
    state, then on every change; instances arrive sorted and de-duplicated and an
    unchanged state is not re-sent.  ``stop()`` is idempotent and prompt.
    Usable as a context manager that stops on exit.
    """

    def subscribe(self, callback: Callback) -> None: ...

    def unsubscribe(self, callback: Callback) -> None: ...

    def stop(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Stoppable(Protocol):
    """Anything with an idempotent ``stop()``: a running watch."""

    def stop(self) -> None: ...


def _canonical(event: Event) -> Event:
    instances = event.instances
    ordered = tuple(sorted(set(instances)))
    return event if ordered == instances else Event(ordered, event.error)


class Broadcaster:
    """Current snapshot plus subscribers; safe to use from any thread.

    Deliveries happen under one re-entrant lock so every subscriber sees the
    snapshots in the order they were published; a callback may subscribe,
    unsubscribe or publish from inside a delivery (a snapshot it publishes is
    delivered once every subscriber has the current one).  A callback that
    raises is logged and kept.
    """

    def __init__(self, initial: Event | None = None) -> None:
        self._lock = threading.RLock()
        self._state = _canonical(initial) if initial is not None else Event()
        self._subscribers: list[Callback] = []
        # Snapshots published by a callback during a delivery wait in the queue, so
        # later subscribers do not get the newer one before the one being delivered.
        self._queue: deque[Event] = deque()
        self._delivering = False
        self._delivered = self._state  # the snapshot being (or last) delivered

    @property
    def state(self) -> Event:
        """The latest snapshot."""
        return self._state

    def publish(self, event: Event) -> bool:
        """Make ``event`` the current snapshot and deliver it; ``False`` if nothing changed."""
        event = _canonical(event)
        with self._lock:
            if event.same_state(self._state):
                return False
            self._state = event
            self._queue.append(event)
            if self._delivering:  # published from inside a callback: the loop below sends it
                return True
            self._delivering = True
            try:
                while self._queue:
                    self._delivered = self._queue.popleft()
                    for callback in tuple(self._subscribers):
                        _deliver(callback, self._delivered)
            finally:
                self._delivering = False
            return True

    def publish_error(self, error: BaseException) -> bool:
        """Publish ``error`` while keeping the last known instances."""
        with self._lock:
            return self.publish(Event(self._state.instances, error))

    def subscribe(self, callback: Callback) -> None:
        """Add ``callback`` and deliver the current snapshot to it at once."""
        with self._lock:
            self._subscribers.append(callback)
            _deliver(callback, self._delivered)

    def unsubscribe(self, callback: Callback) -> None:
        """Remove one registration of ``callback``; unknown callbacks are ignored."""
        with self._lock, contextlib.suppress(ValueError):
            self._subscribers.remove(callback)


def _deliver(callback: Callback, event: Event) -> None:
    try:
        callback(event)
    except Exception:
        logger.exception("instancer subscriber %r raised; it stays subscribed", callback)


class InstancerHandle:
    """A user's view of a shared :class:`Broadcaster`: implements :class:`Instancer`.

    ``stop()`` unsubscribes the callbacks subscribed through this handle and then
    calls ``release`` once (which stops the watch if this was its last user).
    """

    def __init__(
        self, broadcaster: Broadcaster, release: Callable[[], None] | None = None
    ) -> None:
        self._broadcaster = broadcaster
        self._release = release
        self._lock = threading.Lock()
        self._callbacks: list[Callback] = []
        self._stopped = False

    @property
    def state(self) -> Event:
        """The latest snapshot (handy for polling and debugging)."""
        return self._broadcaster.state

    def subscribe(self, callback: Callback) -> None:
        """Subscribe ``callback``: it receives the current snapshot at once, then every change.

        Raises ``RuntimeError`` after ``stop()``.
        """
        with self._lock:
            if self._stopped:
                raise RuntimeError("instancer is stopped")
        self._broadcaster.subscribe(callback)
        with self._lock:
            # A stop() that ran while we subscribed did not know this registration:
            # take it back ourselves, so nothing stays subscribed after stop().
            raced_stop = self._stopped
            if not raced_stop:
                self._callbacks.append(callback)
        if raced_stop:
            self._broadcaster.unsubscribe(callback)

    def unsubscribe(self, callback: Callback) -> None:
        """Stop delivering to ``callback``; unknown callbacks are ignored."""
        with self._lock:
            try:
                self._callbacks.remove(callback)
            except ValueError:
                return
        self._broadcaster.unsubscribe(callback)

    def stop(self) -> None:
        """Unsubscribe everything subscribed here and release the watch; idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._broadcaster.unsubscribe(callback)
        if self._release is not None:
            self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class FixedInstancer(InstancerHandle):
    """An instancer that never changes (go-kit's ``sd.FixedInstancer``).

    Raises ``ValueError`` (:class:`sd.errors.InvalidInstanceError`) naming the
    first invalid instance string.
    """

    def __init__(self, instances: Iterable[str]) -> None:
        if isinstance(instances, str):
            raise TypeError("FixedInstancer takes an iterable of instances, not one string")
        normalized = tuple(normalize_instance(value) for value in instances)
        super().__init__(Broadcaster(Event(normalized)))

    def __repr__(self) -> str:
        return f"FixedInstancer({list(self.state.instances)!r})"


class SharedWatches:
    """One running watch per key, shared by every handle for that key.

    ``handle(key, start)`` returns a new :class:`InstancerHandle`; the first one for
    ``key`` calls ``start(broadcaster)`` to launch the watch, and the watch is
    stopped when the last handle for ``key`` is stopped.  Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Hashable, tuple[Broadcaster, Stoppable, list[int]]] = {}

    def acquire(
        self, key: Hashable, start: Callable[[Broadcaster], W]
    ) -> tuple[Broadcaster, W, Callable[[], None]]:
        """Take a share of the watch for ``key``, starting it with ``start(broadcaster)``
        if none runs; returns the shared broadcaster, the watch, and an idempotent
        ``release`` that gives the share back (the last release stops the watch).
        Driver instancers pass the broadcaster and ``release`` to
        :class:`InstancerHandle`."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                broadcaster = Broadcaster()
                entry = (broadcaster, start(broadcaster), [0])
                self._entries[key] = entry
            entry[2][0] += 1
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            self._release(key)

        return entry[0], cast(W, entry[1]), release

    def handle(
        self, key: Hashable, start: Callable[[Broadcaster], Stoppable]
    ) -> InstancerHandle:
        """A new handle on the watch for ``key``, starting the watch if needed."""
        broadcaster, _, release = self.acquire(key, start)
        return InstancerHandle(broadcaster, release)

    def _release(self, key: Hashable) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            entry[2][0] -= 1
            if entry[2][0] > 0:
                return
            del self._entries[key]
        entry[1].stop()

    def keys(self) -> list[Hashable]:
        """Keys with a running watch (for tests and debugging)."""
        with self._lock:
            return list(self._entries)
