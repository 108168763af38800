"""Which services a transport keeps watching, and which it names in metrics: pure.

Theory of operation
-------------------
Whoever controls a request's URL host (a proxy, a webhook URL, a followed
redirect) names a service, and every service costs a watch, a registry
query or connection, threads and a balancer.  So the set of watched
services is bounded on purpose:

* at most ``capacity`` services are watched at once (``max_services``);
* to admit a new one into a full table, :func:`plan_room` picks what to close:
  first the services past their time (:func:`expired`), then idle services
  whose registry answered "no instances" (oldest first), then the least
  recently used idle ones; a service with a call in flight is never closed.
  When nothing can be closed, the new service is refused (the caller raises
  a clear error);
* a service is *expired* when it is idle (no call in flight) and either no
  call used it for ``idle_timeout`` seconds, or its registry has answered
  "no instances" for ``empty_timeout`` seconds: a name that turns out to be
  nobody's does not keep its watch;
* metric labels (:class:`Labels`): a service is named in metrics only once
  it is *admitted* -- its registry answered with instances, or the user's
  ``services=`` list names it -- and while fewer than ``limit`` names have
  been given out; anything else is labelled ``other``.  Label values are then
  names the registry or the user vouched for, never whatever a request said.
  The service's registry watch is labelled the same way before its first answer
  (:class:`kitsd.core.observe.WatchLabel`): ``other`` until admitted, so the
  discovery series (``kitsd_instances``, ``kitsd_discovery_errors_total``) hold no
  request-derived value either.

Entries are read through :class:`Usage` snapshots taken by the driver under its
lock; nothing here locks, reads a clock or closes anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from kitsd.core.errors import KitsdError

__all__ = ["OTHER", "Labels", "TooManyServicesError", "Usage", "expired", "plan_room"]

#: The metric label of services that are not admitted.
OTHER = "other"


class TooManyServicesError(KitsdError):
    """A request named a new service while the transport already watched
    ``max_services`` services, each with a call in flight (none could be closed to
    make room).  ``.service`` and ``.max_services``."""

    def __init__(self, service: str, max_services: int) -> None:
        super().__init__(
            f"kitsd transport: cannot watch service {service!r}: {max_services} services "
            f"(max_services={max_services}) are watched, each with a call in flight; raise "
            "max_services, or list the services a request may name with services=")
        self.service = service
        self.max_services = max_services


class Usage(NamedTuple):
    """What the table knows of one watched service at one moment."""

    name: str
    last_used: float
    inflight: int
    empty_since: float | None  # when the registry answered "no instances"; None otherwise


def expired(usage: Usage, now: float, idle_timeout: float, empty_timeout: float) -> bool:
    """Whether an idle service should be closed now (see the module docstring)."""
    if usage.inflight:
        return False
    if now - usage.last_used >= idle_timeout:
        return True
    return usage.empty_since is not None and now - usage.empty_since >= empty_timeout


def plan_room(
    usages: Iterable[Usage], capacity: int, now: float, idle_timeout: float,
    empty_timeout: float,
) -> tuple[list[str], bool]:
    """``(names to close, whether a new service fits after closing them)``.

    Every expired service is closed; then, while the table is still full, the
    idle empty ones (oldest answer first) and the least recently used idle ones.
    """
    table = list(usages)
    close = [usage.name for usage in table if expired(usage, now, idle_timeout, empty_timeout)]
    left = len(table) - len(close)
    if left < capacity:
        return close, True
    closing = set(close)
    idle = [usage for usage in table if not usage.inflight and usage.name not in closing]
    # empty ones first (oldest "no instances" first), then least recently used
    idle.sort(key=lambda usage: (usage.empty_since is None,
                                 usage.empty_since or 0.0, usage.last_used))
    for usage in idle:
        if left < capacity:
            break
        close.append(usage.name)
        left -= 1
    return close, left < capacity


class Labels:
    """The metric label of each service (see the module docstring).  Not thread-safe:
    the driver calls it under its lock."""

    __slots__ = ("_given", "_limit")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._given: set[str] = set()

    def label(self, name: str, admitted: bool) -> str:
        """``name`` if it is admitted and there is room (it keeps its label for good),
        else :data:`OTHER`."""
        if name in self._given:
            return name
        if not admitted or len(self._given) >= self._limit:
            return OTHER
        self._given.add(name)
        return name

    def given(self, name: str) -> bool:
        """Whether ``name`` has its own label already."""
        return name in self._given

    def __len__(self) -> int:
        return len(self._given)
