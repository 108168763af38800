"""Uniform random balancing (go-kit's ``lb.NewRandom``, with a guarded RNG)."""

from __future__ import annotations

from typing import Unpack

from kitsd.lb.balancer import E, EndpointSource
from kitsd.lb.outlier_detection import OutlierDetection
from kitsd.lb.pool import DEFAULT_OUTLIER_DETECTION, Pool
from kitsd.lb.shaping import BalancingOptions

__all__ = ["Random"]


class Random(Pool[E]):
    """Picks an endpoint uniformly at random; ``seed`` makes the sequence repeatable.

    The RNG is guarded by a lock (go-kit's is shared unguarded).  Skips instances
    excluded by the caller and ejected ones, as :class:`lb.RoundRobin`.  Raises
    :class:`lb.NoEndpointsError` on an empty set and lets the source's error
    through unchanged.  Thread-safe.
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

    def _next_index(self, size: int) -> int:
        return self._rng.randrange(size)

    def __repr__(self) -> str:
        return f"Random({self._source!r})"
