"""Least-loaded balancing by the power of two choices.

Picking the less busy of two random endpoints (Mitzenmacher's "power of two
choices") spreads load almost as well as scanning every endpoint for the least
busy one, without the herd effect of everybody choosing the same "best" endpoint
at once, and it steers away from a slow instance as its requests pile up —
which round-robin and random cannot.

"Busy" is the number of requests this balancer has in flight on the instance.
Each pick hands out a small counting wrapper; the counts live in a map keyed by
instance that only holds instances with requests in flight, so it needs no
pruning and pins no endpoint.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Collection, Sequence
from types import FunctionType, MethodType
from typing import Unpack, cast

from kitsd.core.endpoint import Endpoint, is_async
from kitsd.lb._async.measured import AsyncCounted
from kitsd.lb._measured import Counted
from kitsd.lb._sync.measured import SyncCounted
from kitsd.lb.balancer import E, EndpointSource, Pick
from kitsd.lb.errors import NoEndpointsError
from kitsd.lb.outlier_detection import OutlierDetection
from kitsd.lb.pool import DEFAULT_OUTLIER_DETECTION, Pool
from kitsd.lb.shaping import BalancingOptions

__all__ = ["LeastLoaded"]


class _InFlight:
    """Requests in flight per instance; an instance with none has no entry."""

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def enter(self, instance: str) -> None:
        with self._lock:
            self._counts[instance] = self._counts.get(instance, 0) + 1

    def leave(self, instance: str) -> None:
        with self._lock:
            left = self._counts[instance] - 1
            if left:
                self._counts[instance] = left
            else:
                del self._counts[instance]

    def get(self, instance: str) -> int:
        return self._counts.get(instance, 0)

    def __bool__(self) -> bool:
        return bool(self._counts)


def _decides_kind(endpoint: Endpoint) -> object:
    """What decides whether ``endpoint`` is async, as a cache key (``None``: look
    each time): a function's or method's code object, else the type, whose
    ``__call__`` decides for instances of classes."""
    if isinstance(endpoint, FunctionType):
        return endpoint.__code__
    if isinstance(endpoint, MethodType):
        return getattr(endpoint.__func__, "__code__", None)
    if isinstance(endpoint, functools.partial):
        return None  # decided by what it wraps
    return type(endpoint)


class LeastLoaded(Pool[E]):
    """Picks the instance with fewer requests in flight out of two chosen at random.

    Works for sync and async endpoints (the wrapper it hands out is of the same
    kind).  ``seed`` makes the random choices repeatable.  Skips instances excluded
    by the caller and ejected ones, as :class:`lb.RoundRobin`.  Raises
    :class:`NoEndpointsError` on an empty set and lets the source's error through
    unchanged.  Thread-safe.
    """

    def __init__(
        self,
        endpointer: EndpointSource[E],
        seed: int | None = None,
        *,
        outlier_detection: OutlierDetection | None = DEFAULT_OUTLIER_DETECTION,
        **options: Unpack[BalancingOptions],
    ) -> None:
        super().__init__(endpointer, outlier_detection=outlier_detection, seed=seed,
                         **options)
        self._in_flight = _InFlight()
        # Which wrapper an endpoint needs, by what decides it: the code object of a
        # function or method, else the type.  A handful of entries, whatever the
        # number of instances, so the lookup stays in cache at 10,000 instances.
        self._kinds: dict[object, type[Counted]] = {}

    def in_flight(self, instance: str) -> int:
        """Requests this balancer has in flight on ``instance``."""
        return self._in_flight.get(instance)

    def endpoint(self) -> E:
        return cast(E, self.pick().endpoint)

    def pick(self, exclude: Collection[str] = ()) -> Pick:
        keys, endpoints = self._read()
        size = len(endpoints)
        if not size:
            raise NoEndpointsError
        if size == 1:
            return self._hand_out(keys, endpoints, 0)
        if self._shaping_on and self._shaped_now():
            in_flight = self._in_flight

            def less_loaded(first: int, second: int) -> int:
                return (second if in_flight.get(keys[second]) < in_flight.get(keys[first])
                        else first)

            return self._hand_out(keys, endpoints,
                                  self._shaped_pair(keys, size, exclude, less_loaded))
        if exclude or self._records:
            now = time.monotonic() if self._records else 0.0
            with self._lock:
                first = self._find(keys, size, exclude, now)
                second = self._find(keys, size, exclude, now, avoid=first)
                if not self._second_usable(keys, first, second, exclude, now):
                    second = first  # never trade a usable instance for an excluded one
        else:
            with self._lock:
                first = self._rng.randrange(size)
                second = self._rng.randrange(size - 1)
            second += second >= first
        in_flight = self._in_flight
        if (in_flight and second != first
                and in_flight.get(keys[second]) < in_flight.get(keys[first])):
            first = second
        return self._hand_out(keys, endpoints, first)

    def _next_index(self, size: int) -> int:
        return self._rng.randrange(size)

    def _tag(self, endpoint: Endpoint) -> object:
        return super()._tag(endpoint.__wrapped__ if isinstance(endpoint, Counted) else endpoint)

    def _hand_out(self, keys: Sequence[str], endpoints: Sequence[Endpoint], index: int) -> Pick:
        endpoint = endpoints[index]
        decides = _decides_kind(endpoint)
        kind = self._kinds.get(decides)
        if kind is None:
            kind = AsyncCounted if is_async(endpoint) else SyncCounted
            if decides is not None:
                self._kinds[decides] = kind
        instance = keys[index]
        return Pick(instance, kind(endpoint, instance, self._in_flight))

    def __repr__(self) -> str:
        return f"LeastLoaded({self._source!r})"
