"""The passive-ejection policy: :class:`OutlierDetection`.

A plain, frozen settings object; the state it drives lives in :mod:`lb.ejection`,
owned by the balancer it is given to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sd.errors import ConnectionFailure, MisuseError

__all__ = ["OutlierDetection"]


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """When a balancer takes an instance out of rotation, and for how long.

    * ``consecutive_failures`` counted failures in a row eject an instance (default
      1: at once).  Counted today: connection-level failures
      (:class:`sd.ConnectionFailure`); other errors neither count nor reset the count.
    * The first ejection lasts ``base_ejection_time`` seconds; each further ejection
      of the same instance doubles it, up to ``max_ejection_time``.  A success
      forgets the instance's history; so does its leaving the endpoint set.
    * At most ``max_ejected_percent`` of the instances (rounded down) are out at
      once, and never all of them: ejection is advice, not a verdict.

    Give it to a balancer (``lb.RoundRobin(endpointer, outlier_detection=...)``);
    ``outlier_detection=None`` disables ejection.  Raises :class:`TypeError` or
    :class:`sd.MisuseError` (a ``ValueError``) naming a bad setting.
    """

    consecutive_failures: int = 1
    base_ejection_time: float = 1.0
    max_ejection_time: float = 30.0
    max_ejected_percent: float = 50.0

    def __post_init__(self) -> None:
        count = self.consecutive_failures
        if isinstance(count, bool) or not isinstance(count, int):
            raise TypeError(f"consecutive_failures must be an int, got {count!r}")
        if count < 1:
            raise MisuseError(f"consecutive_failures must be >= 1, got {count}")
        for name in ("base_ejection_time", "max_ejection_time", "max_ejected_percent"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise MisuseError(f"{name} must be finite, got {value!r}")
        if self.base_ejection_time <= 0:
            raise MisuseError(f"base_ejection_time must be > 0, got {self.base_ejection_time!r}")
        if self.max_ejection_time < self.base_ejection_time:
            raise MisuseError(
                f"max_ejection_time must be >= base_ejection_time, got {self.max_ejection_time!r}"
            )
        if not 0 <= self.max_ejected_percent <= 100:
            raise MisuseError(
                f"max_ejected_percent must be in [0, 100], got {self.max_ejected_percent!r}"
            )

    def counts(self, error: BaseException) -> bool:
        """Whether ``error`` counts towards ejecting the instance that raised it."""
        return isinstance(error, ConnectionFailure)

    def ejection_time(self, ejections: int) -> float:
        """Seconds the ``ejections``-th ejection (from 1) of one instance lasts."""
        return min(self.max_ejection_time, self.base_ejection_time * 2.0 ** min(ejections - 1, 64))

    def max_ejected(self, instances: int) -> int:
        """How many of ``instances`` may be out of rotation at once (never all)."""
        # the epsilon keeps 100 * 29% from rounding down to 28
        allowed = int(instances * self.max_ejected_percent / 100.0 + 1e-9)
        return max(0, min(allowed, instances - 1))
