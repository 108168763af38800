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
* Metadata (``event.info``) rides along: a good event whose metadata differs
  gives a new :class:`~sd.endpoint_set.EndpointSet` (so balancers rebuild their
  per-set schedules) holding the same endpoints -- no endpoint is rebuilt for a
  metadata-only change.  A factory made by :func:`sd.factory_with_info` gets
  the metadata of the instance it builds for.

Nothing here locks, sleeps, or closes anything: methods take ``now`` and return
what to close, so the driver can close outside its lock.

Cost of a change
----------------
O(changed) plus one copy of the endpoint tuple, whatever the number of
instances: an event whose :class:`~sd.event.Delta` is relative to the last good
event applied here is used as it is; otherwise the instances are compared with
the known ones as sets (in C).  The sorted tuples are then spliced (bisect),
never sorted again.  Readers get :attr:`EndpointCache.view`, one immutable
object replaced after each change, so a driver can serve picks without a lock.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from kitsd.core import validate
from kitsd.sd.endpoint_set import EMPTY, EndpointSet
from kitsd.sd.event import Event, same_info
from kitsd.sd.instance_info import DEFAULT_INFO, NO_INFO, InfoFactory, InstanceInfo

__all__ = ["EndpointCache", "Read", "View", "check_timeout"]

logger = logging.getLogger(__name__)

E = TypeVar("E")

# Past this share of changed instances, rebuilding the tuples beats splicing them.
_SPLICE_SHARE = 8


@dataclass(frozen=True, slots=True)
class Read(Generic[E]):
    """The answer to :meth:`EndpointCache.read`."""

    endpoints: tuple[E, ...]
    error: BaseException | None = None
    to_close: list[E] = field(default_factory=list)
    set: EndpointSet = field(default=EMPTY, compare=False)


@dataclass(frozen=True, slots=True)
class View:
    """What a reader needs, as one immutable object (read it once, without a lock).

    ``set`` serves while ``error`` is ``None`` or the clock is before ``deadline``.
    With an ``error`` and a ``deadline`` of ``-inf`` the endpoints have been
    invalidated: raise ``error``.  Otherwise, at or past ``deadline``, call
    :meth:`EndpointCache.read` (under the driver's lock) to invalidate.
    """

    set: EndpointSet = EMPTY
    error: BaseException | None = None
    deadline: float = math.inf


def check_timeout(invalidate_on_error: object) -> float | None:
    """``invalidate_on_error`` as a float, or raise naming it: ``TypeError`` for a
    non-number, :class:`~kitsd.core.errors.MisuseError` for NaN or a negative number.
    ``None`` keeps serving through errors; ``math.inf`` too (it never runs out)."""
    return validate.optional_seconds("invalidate_on_error", invalidate_on_error, zero=True,
                                     infinite=True)


class EndpointCache(Generic[E]):
    """Instance → endpoint map with go-kit's error-invalidation rules."""

    def __init__(
        self, factory: Callable[[str], E], invalidate_on_error: float | None = None
    ) -> None:
        self._factory = factory
        self._build_with_info = factory.build if isinstance(factory, InfoFactory) else None
        self._timeout = check_timeout(invalidate_on_error)
        self._by_instance: dict[str, E] = {}
        self._names: list[str] = []  # the served instances, sorted
        self._items: list[E] = []  # their endpoints, in the same order
        self._failed: set[str] = set()  # in the last good event, but the factory failed
        # The instances of the last good event applied (a Delta's base is matched
        # against it by identity); None when nothing can be assumed.
        self._seen: tuple[str, ...] | None = ()
        self._serving: Read[E] = Read(())  # reused: reads on the hot path allocate nothing
        self._error: BaseException | None = None
        self._deadline = 0.0
        #: The current :class:`View`, replaced (never changed) after every update.
        self.view = View()

    @property
    def instances(self) -> tuple[str, ...]:
        """Instances that currently have an endpoint, sorted."""
        return self._serving.set.instances

    def update(self, event: Event, now: float) -> list[E]:
        """Apply ``event``; returns the endpoints to close."""
        if event.error is None:
            self._error = None
            to_close = self._apply(event)
            self.view = View(self._serving.set)
            return to_close
        if self._timeout is None or self._error is not None:
            return []
        self._error = event.error
        self._deadline = now + self._timeout
        self.view = View(self._serving.set, self._error, self._deadline)
        return []

    def read(self, now: float) -> Read[E]:
        """The endpoints to serve, or the stored error once the deadline has passed."""
        if self._error is None or now < self._deadline:
            return self._serving
        to_close = self._clear()
        self.view = View(EMPTY, self._error, -math.inf)
        return Read((), self._error, to_close)

    def close(self) -> list[E]:
        """Forget every endpoint; returns them to close."""
        to_close = self._clear()
        self.view = View()
        return to_close

    def _clear(self) -> list[E]:
        to_close = list(self._by_instance.values())
        self._by_instance = {}
        self._names, self._items = [], []
        self._failed = set()
        self._seen = None
        self._serving = Read(())
        return to_close

    def _apply(self, event: Event) -> list[E]:
        instances, delta, info = event.instances, event.delta, event.info
        by_instance, failed = self._by_instance, self._failed
        canonical: tuple[str, ...] | None = None  # ``instances``, if known sorted and unique
        added: Sequence[str]
        removed: Sequence[str]
        served = self._serving.set
        # A trusted delta names metadata changes; otherwise compare (identity first: a
        # broadcaster hands out the same mapping while the metadata stays the same).
        trusted = delta is not None and self._seen is not None and delta.base is self._seen
        info_changed = info is not served.info and (trusted or not same_info(info, served.info))
        if instances is self._seen:
            added = removed = ()
        elif trusted and delta is not None:
            added, removed, canonical = delta.added, delta.removed, instances
        else:
            known = by_instance.keys() | failed
            new = set(instances)
            added, removed = sorted(new - known), sorted(known - new)
        self._seen = instances

        to_close: list[E] = []
        gone: list[str] = []
        for instance in removed:
            if instance in failed:
                failed.discard(instance)
            elif instance in by_instance:
                to_close.append(by_instance.pop(instance))
                gone.append(instance)
        # Instances whose factory failed are tried again on every good event.
        build = sorted(failed.union(added)) if failed else added
        made: list[tuple[str, E]] = []
        for instance in build:
            if instance in by_instance:
                continue
            try:
                if self._build_with_info is not None:
                    endpoint = self._build_with_info(instance, info.get(instance, DEFAULT_INFO))
                else:
                    endpoint = self._factory(instance)
            except Exception:
                logger.exception("endpoint factory failed for %s; skipping it until the next event",
                                 instance)
                failed.add(instance)
                continue
            failed.discard(instance)
            by_instance[instance] = endpoint
            made.append((instance, endpoint))
        if gone or made:
            self._splice(gone, made, None if failed else canonical, info)
        elif info_changed:  # metadata only: a new set over the same endpoints
            self._serving = Read(self._serving.endpoints, set=EndpointSet(
                served.instances, served.endpoints, info))
        return to_close

    def _splice(
        self,
        gone: list[str],
        made: list[tuple[str, E]],
        canonical: tuple[str, ...] | None,
        info: Mapping[str, InstanceInfo] = NO_INFO,
    ) -> None:
        # The served set as two aligned lists, changed in place (bisect, a memmove) and
        # copied once into the immutable tuples readers get.
        names, items, by_instance = self._names, self._items, self._by_instance
        if (len(gone) + len(made)) * _SPLICE_SHARE > len(names):
            names[:] = canonical if canonical is not None else sorted(by_instance)
            items[:] = [by_instance[instance] for instance in names]
        else:
            for instance in gone:
                index = bisect_left(names, instance)
                del names[index], items[index]
            for instance, endpoint in made:
                index = bisect_left(names, instance)
                names.insert(index, instance)
                items.insert(index, endpoint)
        # A canonical snapshot (from a Delta) is the instance tuple already.
        use_given = canonical is not None and len(canonical) == len(names)
        instances = canonical if use_given and canonical is not None else tuple(names)
        endpoints = tuple(items)
        # E is the Endpointer's endpoint type; the cache is generic only for its tests.
        self._serving = Read(endpoints, set=EndpointSet(instances, cast(Any, endpoints), info))
