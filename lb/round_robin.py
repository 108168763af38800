"""Round-robin balancing (go-kit's ``lb.NewRoundRobin``)."""

from __future__ import annotations

import threading

from lb.balancer import EndpointSource
from lb.pick import candidates
from sd.endpoint import Endpoint

__all__ = ["RoundRobin"]


class RoundRobin:
    """Cycles through the endpoints; the first pick is index 0.

    Skips endpoints that failed earlier in the same retry call and passively
    ejected ones (see :mod:`lb.pick`).  Raises :class:`NoEndpointsError` on an empty
    set and lets the source's error through unchanged.  Thread-safe: under many
    threads every endpoint is picked equally often.
    """

    def __init__(self, endpointer: EndpointSource) -> None:
        self._source = endpointer
        self._lock = threading.Lock()
        self._next = 0

    def endpoint(self) -> Endpoint:
        choices = candidates(self._source)
        with self._lock:
            index = self._next
            self._next = index + 1
        return choices[index % len(choices)]

    def __repr__(self) -> str:
        return f"RoundRobin({self._source!r})"
