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

from sd.event import Delta, Event, diff, same_error, splice
from sd.instance import normalize_instance
from sd.observe import HUB, DiscoveryFailed, DiscoveryUpdated, emit

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


class Broadcaster:
    """Current snapshot plus subscribers; safe to use from any thread.

    Deliveries happen under one re-entrant lock so every subscriber sees the
    snapshots in the order they were published; a callback may subscribe,
    unsubscribe or publish from inside a delivery (a snapshot it publishes is
    delivered once every subscriber has the current one).  A callback that
    raises is logged and kept.

    Each change costs O(changed) plus one copy of the instance tuple: the
    broadcaster keeps its members as a set, compares a published full list with
    them (set operations, in C), splices the sorted tuple instead of sorting it,
    and hands subscribers events carrying a :class:`~sd.event.Delta` relative to
    the previous snapshot.  A publisher that already knows what changed passes
    ``Event(instances, delta=Delta(broadcaster.state.instances, added, removed))``
    and skips the comparison too (see :meth:`publish`).
    """

    def __init__(
        self, initial: Event | None = None, *, kind: str = "custom", service: str = ""
    ) -> None:
        #: kitsd.observe: the registry kind and service named in discovery observations.
        self.kind = kind
        self.service = service
        self._lock = threading.RLock()
        start = initial if initial is not None else Event()
        self._members: set[str] = set(start.instances)
        ordered = tuple(sorted(self._members))
        instances = start.instances if ordered == start.instances else ordered
        self._state = Event(instances, start.error)
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
        """Make ``event`` the current snapshot and deliver it; ``False`` if nothing changed.

        ``event.instances`` may come in any order and with duplicates.  If
        ``event.delta`` is given and its ``base`` is the current
        ``state.instances`` (the same object), it is trusted after an O(changed)
        plausibility check: ``instances`` must then be sorted and de-duplicated.
        """
        with self._lock:
            next_event = self._next(event)
            if next_event is None:
                return False
            self._state = next_event
            if HUB.observers:  # kitsd.observe
                self._observe(next_event)
            self._queue.append(next_event)
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

    def _next(self, event: Event) -> Event | None:
        """The canonical event to deliver after ``event``, or ``None`` if nothing changed.
        Caller holds the lock."""
        state = self._state
        base = state.instances
        delta = event.delta
        if event.instances is base:
            pass
        elif delta is not None and delta.base is base and self._plausible(event, delta):
            if delta.added or delta.removed:
                self._members.difference_update(delta.removed)
                self._members.update(delta.added)
                return event
        else:
            self._members, added, removed = diff(self._members, event.instances)
            if added or removed:
                instances = splice(base, added, removed)
                return Event(instances, event.error,
                             delta=Delta(base, tuple(added), tuple(removed)))
        # The instances did not change: news only if the error did.
        if same_error(event.error, state.error):
            return None
        return Event(base, event.error)

    def _plausible(self, event: Event, delta: Delta) -> bool:
        members = self._members
        return (
            len(event.instances) == len(delta.base) + len(delta.added) - len(delta.removed)
            and all(instance not in members for instance in delta.added)
            and all(instance in members for instance in delta.removed)
        )

    def apply(self, added: Iterable[str] = (), removed: Iterable[str] = ()) -> bool:
        """Publish a change given as the instances that joined and left, in O(changed)
        plus one copy of the tuple: for a watch that sees changes one by one (an etcd
        put or delete).  ``False`` if nothing changed.

        Instances must be canonical (:func:`sd.instance.normalize_instance`).  Removals
        apply first: an instance both removed and added stays; adding a member or
        removing a non-member changes nothing.  The event has no error.
        """
        with self._lock:
            members = self._members
            gone = {instance for instance in removed if instance in members}
            new = {instance for instance in added if instance not in members or instance in gone}
            kept = gone & new
            gone -= kept
            new -= kept
            if not gone and not new and self._state.error is None:
                return False
            base = self._state.instances
            plus, minus = tuple(sorted(new)), tuple(sorted(gone))
            return self.publish(Event(splice(base, plus, minus), delta=Delta(base, plus, minus)))

    def publish_error(self, error: BaseException) -> bool:
        """Publish ``error`` while keeping the last known instances."""
        with self._lock:
            published = self.publish(Event(self._state.instances, error))
            if not published and HUB.observers:  # kitsd.observe: count every failure
                self._observe(Event(self._state.instances, error))
            return published

    def _observe(self, event: Event) -> None:
        """kitsd.observe: report a published state (caller holds the lock)."""
        if event.error is None:
            emit(DiscoveryUpdated(self.kind, self.service, len(event.instances)))
        else:
            emit(DiscoveryFailed(self.kind, self.service, len(event.instances), event.error))

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
        super().__init__(Broadcaster(Event(normalized), kind="static"))

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
        self, key: Hashable, start: Callable[[Broadcaster], W], *, kind: str = "custom",
        service: str = "",
    ) -> tuple[Broadcaster, W, Callable[[], None]]:
        """Take a share of the watch for ``key``, starting it with ``start(broadcaster)``
        if none runs; returns the shared broadcaster, the watch, and an idempotent
        ``release`` that gives the share back (the last release stops the watch).
        Driver instancers pass the broadcaster and ``release`` to
        :class:`InstancerHandle`.  ``kind`` and ``service`` label the broadcaster's
        observations (:mod:`sd.observe`)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                broadcaster = Broadcaster(kind=kind, service=service)
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
