"""Capped exponential backoff with full jitter: a pure function and a tiny state.

Used by the registry watchers: 10 ms doubling to 60 s, as go-kit's Consul
instancer.  Jitter keeps many clients from hammering a registry in step when it
comes back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff", "backoff_delay"]


def backoff_delay(
    failures: int, *, initial: float = 0.01, maximum: float = 60.0, rand: float = 1.0
) -> float:
    """Delay after ``failures`` consecutive failures (``failures >= 1``).

    The ceiling is ``initial * 2**(failures-1)`` capped at ``maximum``; ``rand``
    in ``[0, 1]`` picks a point in its upper half, so the delay is never below
    half the ceiling (a flapping registry is not hammered) and never above it.
    """
    if failures < 1:
        return 0.0
    ceiling = min(maximum, initial * 2.0 ** min(failures - 1, 64))
    return ceiling / 2.0 + ceiling / 2.0 * rand


@dataclass
class Backoff:
    """Counts consecutive failures and hands out the next delay."""

    initial: float = 0.01
    maximum: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before the next try."""
        self.failures += 1
        return backoff_delay(
            self.failures, initial=self.initial, maximum=self.maximum, rand=self.rng.random()
        )

    def reset(self) -> None:
        """Forget the failures after a success."""
        self.failures = 0
