"""The embedded default registry: in-process, no server needed."""

from __future__ import annotations

import threading
from collections import Counter

from sd.event import Event
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
        self._broadcasters: dict[str, Broadcaster] = {}

    def _broadcaster(self, service: str) -> Broadcaster:
        # callers hold self._lock
        broadcaster = self._broadcasters.get(service)
        if broadcaster is None:
            broadcaster = Broadcaster()
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
            return tuple(sorted(self._services.get(service, ())))

    def _change(self, service: str, instance: str, delta: int) -> None:
        with self._lock:
            counts = self._services.setdefault(service, Counter())
            counts[instance] += delta
            if counts[instance] <= 0:
                del counts[instance]
            snapshot = Event(tuple(sorted(counts)))
            broadcaster = self._broadcaster(service)
            # Published under our lock so two changes cannot be delivered out of order.
            broadcaster.publish(snapshot)


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
        raise ValueError(f"service name must be a non-empty string, got {service!r}")
