"""Latency-aware balancing: :class:`PeakEWMA` (Finagle's ``p2cPeakEwma``, Linkerd's default).

Two instances are drawn at random and the cheaper one is picked, where cost is
a peak-sensitive moving average of its latency times its requests in flight
(:mod:`lb.peak_ewma_policy` holds the arithmetic).  Round robin and random send a slow
instance its full share; least-loaded only notices it once requests pile up;
PeakEWMA notices the first slow answer.  The two random choices keep the herd
from piling onto the single "best" instance at once.

Each pick hands out a small wrapper that times the call with the balancer's
clock and books the result, so latency is learnt on every call — through
:func:`lb.retry`, through a plain :meth:`~PeakEWMA.endpoint`, sync or async.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import Unpack, cast

from kitsd.core import validate
from kitsd.core.endpoint import Endpoint, is_async
from kitsd.lb._async.measured import AsyncTimed
from kitsd.lb._measured import Timed
from kitsd.lb._sync.measured import SyncTimed
from kitsd.lb.balancer import E, EndpointSource, Pick
from kitsd.lb.errors import NoEndpointsError
from kitsd.lb.least_loaded import _decides_kind
from kitsd.lb.outlier_detection import OutlierDetection
from kitsd.lb.peak_ewma_policy import LatencyTable
from kitsd.lb.pool import DEFAULT_OUTLIER_DETECTION, Pool
from kitsd.lb.shaping import BalancingOptions

__all__ = ["PeakEWMA"]


class PeakEWMA(Pool[E]):
    """Power of two random choices scored by peak-EWMA latency x (requests in flight + 1).

    Choose it when instances differ in speed (mixed hardware, a noisy neighbour,
    one instance garbage-collecting): it sends a slow instance a small share of
    calls without any configuration, and still spreads load because it compares
    two random instances, not all of them.

    * ``decay`` (seconds, default 2): the time constant with which the average
      forgives a slow spell; an avoided instance's cost decays too, so it is
      probed again (a 20x slower one about every ``decay * ln(20)`` seconds).
      Finagle uses 10 s; a Python client sees its own stalls (GIL, GC, a busy
      host) as latency of whatever it had in flight, and with a 10 s memory one
      stall weighs on every instance for many seconds, hiding the slow one.
    * ``initial`` (seconds, default ``None``): the cost an instance starts with;
      ``None`` is the median of the costs known (zero before any is known), so a
      newcomer is neither flooded nor starved.
    * ``seed`` makes the random choices repeatable; ``clock`` (a monotonic
      ``() -> seconds``) is for tests.

    Works for sync and async endpoints (the timing wrapper it hands out is of
    the same kind).  A failed call never makes an instance look faster: a fast
    failure makes it look slower than the slowest answer known, and each further
    one doubles its cost (:mod:`lb.peak_ewma_policy`).  Skips instances excluded
    by the caller and ejected ones, as :class:`lb.RoundRobin`.  Raises
    :class:`lb.NoEndpointsError` on an empty set and lets the source's error
    through.  Thread-safe and asyncio-safe; a pick is O(1) in the number of
    instances.  ``TypeError``/:class:`sd.MisuseError` for bad settings.
    """

    def __init__(
        self,
        endpointer: EndpointSource[E],
        *,
        seed: int | None = None,
        decay: float = 2.0,
        initial: float | None = None,
        outlier_detection: OutlierDetection | None = DEFAULT_OUTLIER_DETECTION,
        clock: Callable[[], float] = time.monotonic,
        **options: Unpack[BalancingOptions],
    ) -> None:
        validate.seconds("decay", decay)
        validate.optional_seconds("initial", initial, zero=True)
        if not callable(clock):
            raise TypeError(f"clock must be callable() -> seconds, got {clock!r}")
        super().__init__(endpointer, outlier_detection=outlier_detection, seed=seed,
                         **options)
        self._clock = clock
        # guarded by the pool's lock, like the rest of the balancer's state
        self._table = LatencyTable(float(decay), None if initial is None else float(initial))
        self._kinds: dict[object, type[Timed]] = {}

    def cost(self, instance: str) -> float:
        """``instance``'s current latency estimate in seconds (for tests and diagnostics)."""
        now = self._clock()
        with self._lock:
            index = self._table.index_of(instance)
            return self._table.neutral() if index < 0 else self._table.cost(index, now)

    def in_flight(self, instance: str) -> int:
        """Requests this balancer has in flight on ``instance``."""
        with self._lock:
            index = self._table.index_of(instance)
            return 0 if index < 0 else self._table.in_flight(index)

    def endpoint(self) -> E:
        return cast(E, self.pick().endpoint)

    def pick(self, exclude: Collection[str] = ()) -> Pick:
        keys, endpoints = self._read()
        size = len(endpoints)
        if not size:
            raise NoEndpointsError
        if size == 1:
            with self._lock:
                return self._hand_out(keys, endpoints, 0)
        now = self._clock()
        if self._shaping_on and self._shaped_now():

            def cheaper(first: int, second: int) -> int:  # under the lock
                return self._cheaper(keys, first, second, now)

            index = self._shaped_pair(keys, size, exclude, cheaper)
            with self._lock:
                return self._hand_out(keys, endpoints, index)
        if exclude or self._records:
            ejection_now = time.monotonic() if self._records else 0.0
            with self._lock:
                first = self._find(keys, size, exclude, ejection_now)
                second = self._find(keys, size, exclude, ejection_now, avoid=first)
                if self._second_usable(keys, first, second, exclude, ejection_now):
                    first = self._cheaper(keys, first, second, now)
                return self._hand_out(keys, endpoints, first)
        with self._lock:
            first = self._rng.randrange(size)
            second = self._rng.randrange(size - 1)
            second += second >= first
            first = self._cheaper(keys, first, second, now)
            return self._hand_out(keys, endpoints, first)

    def _cheaper(self, keys: Sequence[str], first: int, second: int, now: float) -> int:
        """The index of the cheaper of two (under the lock)."""
        table = self._table
        if table.instances is not keys:  # a list source, or a race with a set change
            self._index_table(keys)
            a, b = table.index_of(keys[first]), table.index_of(keys[second])
            if a < 0 or b < 0:
                return first
            return second if table.score(b, now) < table.score(a, now) else first
        return second if table.score(second, now) < table.score(first, now) else first

    def _index_table(self, keys: Sequence[str]) -> None:
        """For a source without snapshots: index the table by its list (O(n), as its
        reading is).  Under the lock."""
        if self._snapshot is None:
            names = tuple(keys)
            if names != self._table.instances:
                self._table.retain(names, self._clock())

    def _next_index(self, size: int) -> int:
        return self._rng.randrange(size)

    def _on_change(self, instances: tuple[str, ...]) -> None:
        self._table.retain(instances, self._clock())  # under the pool's lock

    def _resolve(self, timed: Timed) -> int:
        """Where ``timed``'s instance is in the table now, or -1 (under the lock)."""
        table = self._table
        if table.instances is timed._set:
            return timed._index
        return table.index_of(timed._instance)

    def _started(self, timed: Timed) -> float:
        now = self._clock()
        with self._lock:
            index = self._resolve(timed)
            if index >= 0:
                self._table.started(index)
        return now

    def _finished(self, timed: Timed, start: float, failed: bool | None) -> None:
        now = self._clock()
        with self._lock:
            index = self._resolve(timed)
            if index >= 0:
                self._table.finished(index, now, now - start, failed)

    def _tag(self, endpoint: Endpoint) -> object:
        return super()._tag(endpoint.__wrapped__ if isinstance(endpoint, Timed) else endpoint)

    def _hand_out(self, keys: Sequence[str], endpoints: Sequence[Endpoint], index: int) -> Pick:
        """The timing wrapper of ``endpoints[index]`` (under the lock)."""
        endpoint = endpoints[index]
        decides = _decides_kind(endpoint)
        kind = self._kinds.get(decides)
        if kind is None:
            kind = AsyncTimed if is_async(endpoint) else SyncTimed
            if decides is not None:
                self._kinds[decides] = kind
        instance = keys[index]
        table = self._table
        if table.instances is not keys:
            self._index_table(keys)
            index = table.index_of(instance)
        return Pick(instance, kind(endpoint, instance, index, table.instances, self))

    def __repr__(self) -> str:
        return f"PeakEWMA({self._source!r})"
