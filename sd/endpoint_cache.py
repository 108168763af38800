"""The endpoint cache behind :class:`sd.Endpointer`: a pure state machine.

Theory of operation
-------------------
The cache maps each live instance to the endpoint the factory built for it.

* A good event (no ``error``) reconciles the map with the event's instances:
  instances already known keep their endpoint, new ones get one from the
  factory (a factory that raises is logged and the instance skipped, to be
  tried again on the next event), and the endpoints of instances that left
  are handed back to the caller to close.  Any stored error is cleared.
* An event with an ``error`` keeps the last endpoints.  With
  ``invalidate_on_error=T`` the *first* such error is stored with a deadline
  ``now + T``; further errors keep the first one and its deadline.
* Reading past that deadline while still in error hands every endpoint back to
  be closed and reports the stored error, until a good event arrives.

Nothing here locks, sleeps, or closes anything: methods take ``now`` and return
what to close, so the driver can close outside its lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from sd.endpoint_set import EMPTY, EndpointSet
from sd.event import Event

__all__ = ["EndpointCache", "Read"]

logger = logging.getLogger(f"kitsd.{__name__}")

E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class Read(Generic[E]):
    """The answer to :meth:`EndpointCache.read`."""

    endpoints: tuple[E, ...]
    error: BaseException | None = None
    to_close: list[E] = field(default_factory=list)
    set: EndpointSet = field(default=EMPTY, compare=False)


class EndpointCache(Generic[E]):
    """Instance → endpoint map with go-kit's error-invalidation rules."""

    def __init__(
        self, factory: Callable[[str], E], invalidate_on_error: float | None = None
    ) -> None:
        if invalidate_on_error is not None and invalidate_on_error < 0:
            raise ValueError(f"invalidate_on_error must be >= 0, got {invalidate_on_error!r}")
        self._factory = factory
        self._timeout = invalidate_on_error
        self._by_instance: dict[str, E] = {}
        self._endpoints: tuple[E, ...] = ()
        self._serving: Read[E] = Read(())  # reused: reads on the hot path allocate nothing
        self._error: BaseException | None = None
        self._deadline = 0.0

    @property
    def instances(self) -> tuple[str, ...]:
        """Instances that currently have an endpoint, sorted."""
        return tuple(self._by_instance)

    def update(self, event: Event, now: float) -> list[E]:
        """Apply ``event``; returns the endpoints to close."""
        if event.error is None:
            self._error = None
            return self._reconcile(event.instances)
        if self._timeout is None or self._error is not None:
            return []
        self._error = event.error
        self._deadline = now + self._timeout
        return []

    def read(self, now: float) -> Read[E]:
        """The endpoints to serve, or the stored error once the deadline has passed."""
        if self._error is None or now < self._deadline:
            return self._serving
        return Read((), self._error, self._reconcile(()))

    def close(self) -> list[E]:
        """Forget every endpoint; returns them to close."""
        return self._reconcile(())

    def _reconcile(self, instances: tuple[str, ...]) -> list[E]:
        old = self._by_instance
        new: dict[str, E] = {}
        for instance in sorted(set(instances)):
            if instance in old:
                new[instance] = old[instance]
                continue
            try:
                new[instance] = self._factory(instance)
            except Exception:
                logger.exception("endpoint factory failed for %s; skipping it until the next event",
                                 instance)
        to_close = [endpoint for instance, endpoint in old.items() if instance not in new]
        self._by_instance = new
        self._endpoints = tuple(new.values())
        endpoint_set = EndpointSet(tuple(new), cast(tuple[Any, ...], self._endpoints))
        self._serving = Read(self._endpoints, set=endpoint_set)
        return to_close
