"""The embedded default registry: in-process, no server needed."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter

from sd.errors import MisuseError, shown_value
from sd.event import Delta, Event
from sd.instance import normalize_instance
from sd.instancer import Broadcaster, InstancerHandle
from sd.registrar import RegistrarContext

__all__ = ["MemoryRegistrar", "MemoryRegistry"]


class MemoryRegistry:
    """An in-process service registry: the embedded default.

    ``registrar(service, instance)`` registers instances; ``instancer(service)``
    watches them.  Every instancer of one service shares one snapshot.  An
    instance registered by two registrars stays until both deregister.
    Thread-safe.
    """

    def __init__(self) -> None:
        # Re-entrant: changes are published under it, and a subscriber may call back in.
        self._lock = threading.RLock()
        self._services: dict[str, Counter[str]] = {}
        # Each service's instances, sorted: as a list kept in step with the counts, and
        # as the tuple last published (the base of the next change's Delta).
        self._ordered: dict[str, list[str]] = {}
        self._published: dict[str, tuple[str, ...]] = {}
        self._broadcasters: dict[str, Broadcaster] = {}

    def _broadcaster(self, service: str) -> Broadcaster:
        # callers hold self._lock
        broadcaster = self._broadcasters.get(service)
        if broadcaster is None:
            broadcaster = Broadcaster(kind="memory", service=service)  # kitsd.observe labels
            self._broadcasters[service] = broadcaster
        return broadcaster

    def instancer(self, service: str) -> InstancerHandle:
        """A new :class:`~sd.instancer.Instancer` on ``service``'s instances."""
        _check_service(service)
        with self._lock:
            return InstancerHandle(self._broadcaster(service))

    def registrar(self, service: str, instance: str) -> MemoryRegistrar:
        """A :class:`~sd.registrar.Registrar` for ``instance`` in ``service``.

        Raises ``ValueError`` for an empty service or an invalid instance string.
        """
        _check_service(service)
        return MemoryRegistrar(self, service, normalize_instance(instance))

    def instances(self, service: str) -> tuple[str, ...]:
        """The instances registered now for ``service``, sorted."""
        with self._lock:
            return self._published.get(service, ())

    def _change(self, service: str, instance: str, step: int) -> None:
        with self._lock:
            counts = self._services.setdefault(service, Counter())
            before = counts[instance]
            counts[instance] += step
            if counts[instance] <= 0:
                del counts[instance]
            present = instance in counts
            if present == (before > 0):
                return  # a second registrar of the same instance: nothing to publish
            # The sorted list is kept in step (bisect, a memmove) and copied once into
            # the tuple to publish: O(changed) work plus one copy, no sort.
            ordered = self._ordered.setdefault(service, [])
            index = bisect_left(ordered, instance)
            added: tuple[str, ...]
            removed: tuple[str, ...]
            if present:
                ordered.insert(index, instance)
                added, removed = (instance,), ()
            else:
                del ordered[index]
                added, removed = (), (instance,)
            base = self._published.get(service, ())
            instances = tuple(ordered)
            self._published[service] = instances
            broadcaster = self._broadcaster(service)
            # Published under our lock so two changes cannot be delivered out of order.
            # The delta is used only if the broadcaster's state is still ``base``.
            broadcaster.publish(Event(instances, delta=Delta(base, added, removed)))


class MemoryRegistrar(RegistrarContext):
    """Registers one instance in a :class:`MemoryRegistry`; idempotent."""

    def __init__(self, registry: MemoryRegistry, service: str, instance: str) -> None:
        self._registry = registry
        self.service = service
        self.instance = instance
        self._lock = threading.Lock()
        self._registered = False

    def register(self) -> None:
        """Add the instance (no-op if this registrar already did)."""
        with self._lock:
            if self._registered:
                return
            self._registered = True
            self._registry._change(self.service, self.instance, +1)

    def deregister(self) -> None:
        """Remove the instance (no-op if not registered by this registrar)."""
        with self._lock:
            if not self._registered:
                return
            self._registered = False
            self._registry._change(self.service, self.instance, -1)

    def __repr__(self) -> str:
        return f"MemoryRegistrar(service={self.service!r}, instance={self.instance!r})"


def _check_service(service: str) -> None:
    if not isinstance(service, str) or not service.strip():
        raise MisuseError(f"service name must be a non-empty string, got {shown_value(service)}")
