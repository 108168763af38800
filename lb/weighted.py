"""Smooth weighted round robin: :class:`Weighted` (nginx's algorithm, precomputed)."""

from __future__ import annotations

from array import array
from collections.abc import Collection
from typing import Unpack, cast

from kitsd.lb.balancer import E, EndpointSource, Pick
from kitsd.lb.errors import NoEndpointsError
from kitsd.lb.outlier_detection import OutlierDetection
from kitsd.lb.pool import DEFAULT_OUTLIER_DETECTION, Pool
from kitsd.lb.shaping import BalancingOptions, Shape
from kitsd.lb.weighted_policy import smooth_schedule
from kitsd.sd.instance_info import DEFAULT_INFO

__all__ = ["Weighted"]


class Weighted(Pool[E]):
    """Smooth weighted round robin over each instance's ``sd.InstanceInfo.weight``.

    Choose it when instances differ in capacity and the registry says so (Consul
    ``Weights.Passing``, an etcd JSON ``weight``): an instance of weight 3 gets
    three times the calls of one of weight 1, spread out (``a a b a c a a`` for
    5:1:1, never ``a a a a a b c``).  Weight 0 takes an instance out of rotation;
    instances without metadata weigh 1, so with no weights it is round robin.

    A change of weights takes effect with the next endpoint set the source hands
    out (the next event).  The cycle of picks is built once per set (see
    :mod:`lb.weighted_policy`): a pick is O(1) whatever the number of instances; the
    build is O(W log N) on the first pick after a change.  Skips instances
    excluded by the caller and ejected ones, as :class:`lb.RoundRobin`.  Raises
    :class:`lb.NoEndpointsError` on an empty set or when every weight is 0, and
    lets the source's error through.  Thread-safe and asyncio-safe.
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
        self._schedule: array[int] | None = None  # None: every weight is 1 (or unknown)
        self._schedule_size = 0  # the size of the set the schedule indexes
        self._next = 0

    _uses_weights = True

    def weights(self) -> dict[str, int]:
        """The weight in use per instance (for tests and diagnostics)."""
        self._read()
        with self._lock:
            info = self._info
            return {key: info.get(key, DEFAULT_INFO).weight for key in self._instances}

    def endpoint(self) -> E:
        return cast(E, self.pick().endpoint)

    def pick(self, exclude: Collection[str] = ()) -> Pick:
        keys, endpoints = self._read()
        size = len(endpoints)
        if not size or (self._schedule is not None and not self._schedule
                        and self._schedule_size == size):
            raise NoEndpointsError
        if self._shaping_on and self._shaped_now():
            index = self._shaped(keys, size, exclude)
        elif exclude or self._records:
            index = self._steered(keys, size, exclude)
        else:
            with self._lock:
                index = self._next_index(size)
        return Pick(keys[index], endpoints[index])

    def _on_change(self, instances: tuple[str, ...]) -> None:
        info = self._info
        weights = [info.get(key, DEFAULT_INFO).weight for key in instances] if info else []
        if not weights or all(weight == 1 for weight in weights):
            self._schedule = None
        else:
            self._schedule = smooth_schedule(weights)
        self._schedule_size = len(instances)
        self._next = 0

    def _next_index(self, size: int) -> int:
        position = self._next
        self._next = position + 1
        schedule = self._schedule
        if schedule is None or size != self._schedule_size or not schedule:
            return position % size  # plain round robin, or a scan's shorter list
        return schedule[position % len(schedule)]

    def _choose_in(self, shape: Shape, group: int, count: int) -> int:
        schedule = shape.schedule(group)  # the group's own smooth weighted cycle
        if not schedule:  # equal weights: round robin over the group
            position = self._next
            self._next = position + 1
            return position % count
        position = self._next
        self._next = position + 1
        return schedule[position % len(schedule)]

    def _random_index(self, size: int) -> int:
        schedule = self._schedule
        if schedule is None or size != self._schedule_size or not schedule:
            return self._rng.randrange(size)
        return schedule[self._rng.randrange(len(schedule))]

    def _candidates(self, size: int) -> list[int]:
        schedule = self._schedule
        if schedule is None or size != self._schedule_size:
            return list(range(size))
        return sorted(set(schedule))

    def __repr__(self) -> str:
        return f"Weighted({self._source!r})"
