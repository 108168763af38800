"""Uniform random balancing (go-kit's ``lb.NewRandom``, with a guarded RNG)."""

from __future__ import annotations

import random
import threading

from lb.balancer import EndpointSource
from lb.pick import candidates
from sd.endpoint import Endpoint

__all__ = ["Random"]


class Random:
    """Picks an endpoint uniformly at random; ``seed`` makes the sequence repeatable.

    The RNG is guarded by a lock (go-kit's is shared unguarded).  Skips endpoints
    that failed earlier in the same retry call and passively ejected ones.  Raises
    :class:`NoEndpointsError` on an empty set and lets the source's error through
    unchanged.  Thread-safe.
    """

    def __init__(self, endpointer: EndpointSource, seed: int | None = None) -> None:
        self._source = endpointer
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def endpoint(self) -> Endpoint:
        choices = candidates(self._source)
        with self._lock:
            index = self._rng.randrange(len(choices))
        return choices[index]

    def __repr__(self) -> str:
        return f"Random({self._source!r})"
