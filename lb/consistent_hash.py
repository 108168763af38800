"""Affinity balancing: :class:`ConsistentHash` (ring hash with virtual nodes).

How the key reaches the balancer
--------------------------------
:class:`lb.Balancer`'s ``endpoint()`` takes no request, so a keyed balancer
needs one more method: ``pick_for(request, exclude=())``.  :func:`lb.retry`,
:func:`lb.retry_async` (and the hedging in them) call ``pick_for`` on any
balancer that has it, passing the request they were called with, so the
user's ``key(request)`` picks the instance, and each retry or hedge passes the
instances already tried as ``exclude``, which walks the ring to the next
distinct instance.  No context variable, nothing process-wide.

Outside a retry, ``endpoint()`` hands out a routing endpoint that calls
``pick_for`` with each request it is given; ``pick(exclude)`` without a
request raises ``TypeError`` (there is no key to go by).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, Unpack, cast

from kitsd.core import validate
from kitsd.lb.balancer import E, EndpointSource, Pick
from kitsd.lb.consistent_hash_policy import Ring, key_hash
from kitsd.lb.errors import NoEndpointsError
from kitsd.lb.outlier_detection import OutlierDetection
from kitsd.lb.pool import DEFAULT_OUTLIER_DETECTION, Pool
from kitsd.lb.shaping import BalancingOptions

__all__ = ["ConsistentHash"]

#: ``key(request) -> str | bytes``
KeyFunction = Callable[[Any], "str | bytes"]


class ConsistentHash(Pool[E]):
    """Requests with the same key go to the same instance: ``key(request) -> str | bytes``.

    Choose it for affinity: per-user caches, sharded in-memory state, sticky
    sessions — whenever an instance serves a key better the second time.  When
    one of ``N`` instances leaves only the keys it owned move (about ``1/N``);
    when one arrives it takes about ``1/(N+1)`` of the keys from the others.
    Load follows the keys, so a hot key makes a hot instance: for plain
    spreading prefer :class:`lb.RoundRobin` or :class:`lb.PeakEWMA`.

    Through :func:`lb.retry`/:func:`lb.retry_async` the key comes from each call's
    request (see the module docstring); a retry or hedge goes to the next
    distinct instance on the ring, as do calls whose instance is ejected (under
    ``outlier_detection``), so a key moves only while its instance is out.
    ``vnodes`` sets the virtual nodes per instance (default: 160 for small sets,
    fewer for large ones, see :mod:`lb.consistent_hash_policy`).  A pick costs a hash and a binary
    search, O(log N); the ring is built on the first pick after the set
    changes, outside the lock.  Raises :class:`lb.NoEndpointsError` on an
    empty set, lets the source's error through, and ``TypeError`` for a key that
    is neither ``str`` nor ``bytes``.  Thread-safe and asyncio-safe.
    """

    def __init__(
        self,
        endpointer: EndpointSource[E],
        key: KeyFunction,
        *,
        vnodes: int | None = None,
        outlier_detection: OutlierDetection | None = DEFAULT_OUTLIER_DETECTION,
        **options: Unpack[BalancingOptions],
    ) -> None:
        if not callable(key):
            raise TypeError(f"key must be callable(request) -> str | bytes, got {key!r}")
        validate.optional_integer("vnodes", vnodes, minimum=1)
        super().__init__(endpointer, outlier_detection=outlier_detection,
                         **options)
        self._key = key
        self._vnodes = vnodes
        self._ring: tuple[Sequence[str], Ring] = ((), Ring(()))

    def endpoint(self) -> E:
        """A routing endpoint: each call picks by its request's key (of the same kind
        as the endpoints: an async one awaits as they do)."""

        def routed(request: Any) -> Any:
            return self.pick_for(request).endpoint(request)

        return cast(E, routed)

    def pick(self, exclude: Collection[str] = ()) -> Pick:
        """Not available without a request: raises ``TypeError`` (use :meth:`pick_for`)."""
        raise TypeError("lb.ConsistentHash picks by request: call pick_for(request, exclude)")

    def pick_for(self, request: Any, exclude: Collection[str] = ()) -> Pick:
        """The instance owning ``key(request)``, or the next one on the ring that is
        not in ``exclude`` and not ejected (while any remains).  Thread-safe."""
        keys, endpoints = self._read()
        if not endpoints:
            raise NoEndpointsError
        position = key_hash(self._key(request))
        ring = self._ring_of(keys)
        shaping = self._shaping
        if shaping is not None and self._shaping_on and self._shaped_now():
            now = time.monotonic()
            with self._lock:
                shape = shaping.current(self, keys, now)
                index = shaping.hashed(self, shape, lambda: ring.walk(position), position,
                                       exclude, now)
            if index < 0:
                index = self._walk(ring, position, keys, exclude)
        elif not exclude and not self._records:
            index = ring.owner(position)
        else:
            index = self._walk(ring, position, keys, exclude)
        return Pick(keys[index], endpoints[index])

    def _ring_of(self, keys: Sequence[str]) -> Ring:
        owner, ring = self._ring
        if owner is not keys:
            if self._snapshot is None:  # a list source: its names are new objects each read
                names = tuple(keys)
                if names == owner:
                    return ring
                keys = names
            ring = Ring(keys, self._vnodes)  # built outside the lock; a race builds twice
            self._ring = (keys, ring)
        return ring

    def _walk(self, ring: Ring, position: int, keys: Sequence[str],
              exclude: Collection[str]) -> int:
        ejections = self._ejections
        now = time.monotonic()
        with self._lock:
            if ejections and ejections.panicking(now, len(keys)):
                ejections = None
            first_allowed = -1
            for index in ring.walk(position):
                if keys[index] in exclude:
                    continue
                if ejections and ejections.is_ejected(keys[index], now):
                    if first_allowed < 0:
                        first_allowed = index
                    continue
                return index
        if first_allowed >= 0:
            return first_allowed  # every one left is ejected: ejection is advice
        return ring.owner(position)  # everyone excluded: back to the key's own instance

    def _next_index(self, size: int) -> int:
        return self._rng.randrange(size)

    def __repr__(self) -> str:
        return f"ConsistentHash({self._source!r})"
