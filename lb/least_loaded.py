"""Least-loaded balancing by the power of two choices.

Picking the less busy of two random endpoints (Mitzenmacher's "power of two
choices") spreads load almost as well as scanning every endpoint for the least
busy one, without the herd effect of everybody choosing the same "best" endpoint
at once, and it steers away from a slow instance as its requests pile up —
which round-robin and random cannot.

"Busy" is the number of requests this balancer has in flight on the endpoint.
To count them, the balancer hands out a counting wrapper per endpoint; the
wrapper is the same object for as long as its endpoint lives, so retry's
per-call exclusion and passive ejection work with it as with any endpoint.
"""

from __future__ import annotations

import random
import threading
from typing import Any

from lb.balancer import EndpointSource
from lb.errors import NoEndpointsError
from lb.pick import usable
from sd.endpoint import Endpoint, is_async

__all__ = ["LeastLoaded"]


class _Counted:
    __slots__ = ("__wrapped__", "_lock", "in_flight")

    def __init__(self, endpoint: Endpoint, lock: threading.Lock) -> None:
        self.__wrapped__ = endpoint
        self._lock = lock
        self.in_flight = 0

    def __repr__(self) -> str:
        return f"<in flight {self.in_flight}: {self.__wrapped__!r}>"

    def __call__(self, request: Any) -> Any:
        raise NotImplementedError


class _SyncCounted(_Counted):
    __slots__ = ()

    def __call__(self, request: Any) -> Any:
        with self._lock:
            self.in_flight += 1
        try:
            return self.__wrapped__(request)
        finally:
            with self._lock:
                self.in_flight -= 1


class _AsyncCounted(_Counted):
    __slots__ = ()

    async def __call__(self, request: Any) -> Any:
        with self._lock:
            self.in_flight += 1
        try:
            return await self.__wrapped__(request)
        finally:
            with self._lock:
                self.in_flight -= 1


class LeastLoaded:
    """Picks the endpoint with fewer requests in flight out of two chosen at random.

    Works for sync and async endpoints (the wrapper it hands out is of the same
    kind).  ``seed`` makes the random choices repeatable.  Skips endpoints that
    failed earlier in the same retry call and passively ejected ones.  Raises
    :class:`NoEndpointsError` on an empty set and lets the source's error through
    unchanged.  Thread-safe.
    """

    def __init__(self, endpointer: EndpointSource, seed: int | None = None) -> None:
        self._source = endpointer
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._counters = threading.Lock()
        self._wrapped: dict[int, _Counted] = {}
        self._seen: list[Endpoint] = []
        self._wrappers: list[_Counted] = []

    def _wrappers_for(self, endpoints: list[Endpoint]) -> list[_Counted]:
        # Called under self._lock.  The Endpointer returns equal lists until its set
        # changes, so the wrappers are rebuilt only then.
        if endpoints == self._seen:
            return self._wrappers
        wrapped: dict[int, _Counted] = {}
        for endpoint in endpoints:
            counted = self._wrapped.get(id(endpoint))
            if counted is None or counted.__wrapped__ is not endpoint:
                kind = _AsyncCounted if is_async(endpoint) else _SyncCounted
                counted = kind(endpoint, self._counters)
            wrapped[id(endpoint)] = counted
        self._wrapped = wrapped
        self._seen = list(endpoints)
        self._wrappers = list(wrapped.values())
        return self._wrappers

    def endpoint(self) -> Endpoint:
        endpoints = self._source.endpoints()
        if not endpoints:
            raise NoEndpointsError
        with self._lock:
            wrappers = self._wrappers_for(endpoints)
            candidates = usable(wrappers)
            if len(candidates) == 1:
                return candidates[0]
            first, second = self._rng.sample(range(len(candidates)), 2)
        a, b = candidates[first], candidates[second]
        return b if b.in_flight < a.in_flight else a

    def __repr__(self) -> str:
        return f"LeastLoaded({self._source!r})"
