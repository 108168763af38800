"""The embedded default registry: in-process, no server needed."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Mapping
from types import MappingProxyType

from kitsd.core.errors import MisuseError, shown_value
from kitsd.sd.event import Delta, Event
from kitsd.sd.instance import normalize_instance
from kitsd.sd.instance_info import DEFAULT_INFO, NO_INFO, InstanceInfo, copy_info
from kitsd.sd.instancer import Broadcaster, InstancerHandle
from kitsd.sd.registrar import RegistrarContext

__all__ = ["MemoryRegistrar", "MemoryRegistry"]


class MemoryRegistry:
    """An in-process service registry: the embedded default.

    ``registrar(service, instance, info=...)`` registers instances (with optional
    metadata); ``instancer(service)`` watches them.  Every instancer of one service
    shares one snapshot.  An instance registered by two registrars stays until both
    deregister; its metadata is that of the latest registration still in effect.
    Thread-safe.  It holds nothing for a service that has neither an instance
    registered nor an instancer running: asking about a million names (as a
    transport whose request hosts come from outside does) leaves nothing behind.
    """

    def __init__(self) -> None:
        # Re-entrant: changes are published under it, and a subscriber may call back in.
        self._lock = threading.RLock()
        # service -> instance -> the registrations in effect, oldest first
        self._services: dict[str, dict[str, list[MemoryRegistrar]]] = {}
        # Each service's instances, sorted: as a list kept in step with the registrations,
        # and as the tuple last published (the base of the next change's Delta).
        self._ordered: dict[str, list[str]] = {}
        self._published: dict[str, tuple[str, ...]] = {}
        # Each service's non-default metadata, as last published (read-only).
        self._info: dict[str, Mapping[str, InstanceInfo]] = {}
        # service -> (its broadcaster, how many instancers hold it): only while one does
        self._broadcasters: dict[str, tuple[Broadcaster, list[int]]] = {}

    def instancer(self, service: str) -> InstancerHandle:
        """A new :class:`~sd.instancer.Instancer` on ``service``'s instances."""
        _check_service(service)
        with self._lock:
            entry = self._broadcasters.get(service)
            if entry is None:
                current = Event(self._published.get(service, ()),
                                info=self._info.get(service, NO_INFO))
                entry = (Broadcaster(current, kind="memory", service=service),  # observe labels
                         [0])
                self._broadcasters[service] = entry
            entry[1][0] += 1
            released = [False]

            def release() -> None:
                with self._lock:
                    if released[0]:
                        return
                    released[0] = True
                    entry[1][0] -= 1
                    if entry[1][0] == 0 and self._broadcasters.get(service) is entry:
                        del self._broadcasters[service]
                        entry[0].stopped()  # kitsd.observe: nobody watches it any more

            return InstancerHandle(entry[0], release)

    def registrar(
        self, service: str, instance: str, *, info: InstanceInfo | None = None
    ) -> MemoryRegistrar:
        """A :class:`~sd.registrar.Registrar` for ``instance`` in ``service``, publishing
        ``info`` (an :class:`~sd.InstanceInfo`; default: none) while registered.

        Raises ``ValueError`` for an empty service or an invalid instance string and
        ``TypeError`` for an ``info`` that is not an ``InstanceInfo``.
        """
        _check_service(service)
        if info is not None and not isinstance(info, InstanceInfo):
            raise TypeError(f"info must be an sd.InstanceInfo or None, got {shown_value(info)}")
        return MemoryRegistrar(self, service, normalize_instance(instance), info=info)

    def instances(self, service: str) -> tuple[str, ...]:
        """The instances registered now for ``service``, sorted."""
        with self._lock:
            return self._published.get(service, ())

    def info(self, service: str) -> Mapping[str, InstanceInfo]:
        """The non-default metadata of ``service``'s instances now, read-only."""
        with self._lock:
            return self._info.get(service, NO_INFO)

    def _change(self, service: str, registrar: MemoryRegistrar, *, joining: bool) -> None:
        instance = registrar.instance
        with self._lock:
            holders = self._services.setdefault(service, {})
            registrations = holders.setdefault(instance, [])
            was_present = bool(registrations)
            before = _info_of(registrations)
            if joining:
                registrations.append(registrar)
            else:
                registrations.remove(registrar)
                if not registrations:
                    del holders[instance]
                if not holders:
                    del self._services[service]
            present = bool(registrations)
            after = _info_of(registrations)
            old_info = self._info.get(service, NO_INFO)
            info: Mapping[str, InstanceInfo] = old_info
            changed: Mapping[str, InstanceInfo] = NO_INFO
            if present and after != before:
                table = copy_info(old_info)  # one copy, only when metadata changes
                if after.is_default:
                    table.pop(instance, None)
                else:
                    table[instance] = after
                info = MappingProxyType(table) if table else NO_INFO
                if was_present or not after.is_default:
                    changed = MappingProxyType({instance: after})
            elif not present and instance in old_info:
                table = copy_info(old_info)
                del table[instance]
                info = MappingProxyType(table) if table else NO_INFO
            if present == was_present and info is old_info:
                return  # another registration of the same instance and metadata: no news
            if info:
                self._info[service] = info
            else:
                self._info.pop(service, None)
            base = instances = self._published.get(service, ())
            added: tuple[str, ...] = ()
            removed: tuple[str, ...] = ()
            if present != was_present:
                # The sorted list is kept in step (bisect, a memmove) and copied once into
                # the tuple to publish: O(changed) work plus one copy, no sort.
                ordered = self._ordered.setdefault(service, [])
                index = bisect_left(ordered, instance)
                if present:
                    ordered.insert(index, instance)
                    added = (instance,)
                else:
                    del ordered[index]
                    removed = (instance,)
                instances = tuple(ordered)
                if instances:
                    self._published[service] = instances
                else:  # nothing left of the service: forget it
                    self._published.pop(service, None)
                    self._ordered.pop(service, None)
            entry = self._broadcasters.get(service)
            if entry is None:
                return  # nobody watches: the next instancer starts from the tables
            # Published under our lock so two changes cannot be delivered out of order.
            # The delta is used only if the broadcaster's state is still ``base``.
            entry[0].publish(
                Event(instances, info=info, delta=Delta(base, added, removed, changed)))


class MemoryRegistrar(RegistrarContext):
    """Registers one instance (with its metadata, ``info``) in a :class:`MemoryRegistry`;
    idempotent."""

    def __init__(
        self,
        registry: MemoryRegistry,
        service: str,
        instance: str,
        *,
        info: InstanceInfo | None = None,
    ) -> None:
        self._registry = registry
        self.service = service
        self.instance = instance
        self.info = info if info is not None else DEFAULT_INFO
        self._lock = threading.Lock()
        self._registered = False

    def register(self) -> None:
        """Add the instance (no-op if this registrar already did)."""
        with self._lock:
            if self._registered:
                return
            self._registered = True
            self._registry._change(self.service, self, joining=True)

    def deregister(self) -> None:
        """Remove the instance (no-op if not registered by this registrar)."""
        with self._lock:
            if not self._registered:
                return
            self._registered = False
            self._registry._change(self.service, self, joining=False)

    def __repr__(self) -> str:
        shown = "" if self.info.is_default else f", info={self.info!r}"
        return f"MemoryRegistrar(service={self.service!r}, instance={self.instance!r}{shown})"


def _info_of(registrations: list[MemoryRegistrar]) -> InstanceInfo:
    """The metadata an instance shows: its latest registration's."""
    return registrations[-1].info if registrations else DEFAULT_INFO


def _check_service(service: str) -> None:
    if not isinstance(service, str) or not service.strip():
        raise MisuseError(f"service name must be a non-empty string, got {shown_value(service)}")
