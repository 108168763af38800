"""Round-robin balancing (go-kit's ``lb.NewRoundRobin``)."""

from __future__ import annotations

from typing import Unpack

from kitsd.lb.balancer import E, EndpointSource
from kitsd.lb.outlier_detection import OutlierDetection
from kitsd.lb.pool import DEFAULT_OUTLIER_DETECTION, Pool
from kitsd.lb.shaping import BalancingOptions

__all__ = ["RoundRobin"]


class RoundRobin(Pool[E]):
    """Cycles through the endpoints; the first pick is index 0.

    ``endpointer`` is an :class:`sd.Endpointer` (or anything with ``endpoints()``).
    Skips instances excluded by the caller (:func:`lb.retry` excludes those that
    failed earlier in the call) and instances ejected under ``outlier_detection``
    (``None`` disables ejection); a skipped slot is passed over, so the others
    keep sharing calls evenly.  Raises :class:`lb.NoEndpointsError` on an empty
    set and lets the source's error through unchanged.  Thread-safe: under many
    threads every endpoint is picked equally often.  ``TypeError`` if
    ``endpointer`` is not a source.
    """

    def __init__(
        self,
        endpointer: EndpointSource[E],
        *,
        outlier_detection: OutlierDetection | None = DEFAULT_OUTLIER_DETECTION,
        **options: Unpack[BalancingOptions],
    ) -> None:
        super().__init__(endpointer, outlier_detection=outlier_detection,
                         **options)
        self._next = 0

    def _next_index(self, size: int) -> int:
        index = self._next
        self._next = index + 1
        return index % size

    def __repr__(self) -> str:
        return f"RoundRobin({self._source!r})"
