"""Hedged-request settings and the delay they imply, free of I/O: :class:`Hedge`.

Theory of operation
-------------------
A hedged call (Dean and Barroso's "backup request"; Finagle's
``BackupRequestFilter``, gRPC's ``hedgingPolicy``) sends its attempt, and if no
answer has come after a *delay* sends a second one to a different instance,
then takes whichever answers first.  Most calls answer within the delay and
cost nothing extra; the few stuck behind a stall, a GC pause or a slow
instance get a second chance, which cuts the tail.

The delay is fixed (``Hedge(delay=0.05)``) or follows the latencies seen so
far (``Hedge(percentile=95)``: hedge the slowest 5 %, so about 5 % extra
load).  :class:`LatencyWindow` keeps the last ``samples`` latencies of first
answers and recomputes the percentile every ``samples // 10`` of them; until
``samples // 10`` are known, ``initial_delay`` applies.  Nothing here locks or
reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kitsd.core import validate
from kitsd.core.errors import MisuseError

__all__ = ["Hedge", "LatencyWindow"]


@dataclass(frozen=True, slots=True)
class Hedge:
    """When to send a second attempt of an idempotent call: give to ``hedge=`` of
    :func:`lb.retry` / :func:`lb.retry_async` (or the transport).

    Exactly one of ``delay`` (seconds) and ``percentile`` (0-100 exclusive, of the
    latencies observed by that retry endpoint, clamped to ``[min_delay,
    max_delay]``; ``initial_delay`` until enough are known).  ``max_workers``
    bounds the thread pool of a sync hedged endpoint.  A hedge withdraws from the
    ``budget`` of the retry (when there is one) and is skipped when it is
    exhausted.  Only for calls that are safe to make twice.

    Raises ``TypeError``/:class:`sd.MisuseError` naming a bad setting.
    """

    delay: float | None = None
    percentile: float | None = None
    min_delay: float = 0.001
    max_delay: float = 1.0
    initial_delay: float = 0.05
    samples: int = 1000
    max_workers: int = 32

    def __post_init__(self) -> None:
        if (self.delay is None) == (self.percentile is None):
            raise MisuseError("Hedge needs exactly one of delay= and percentile=")
        for name in ("delay", "min_delay", "max_delay", "initial_delay"):
            validate.optional_seconds(name, getattr(self, name), zero=True)
        validate.optional_number("percentile", self.percentile, above=0, below=100)
        if self.max_delay < self.min_delay:
            raise MisuseError(f"max_delay must be >= min_delay, got {self.max_delay!r}")
        validate.integer("samples", self.samples, minimum=10)
        validate.integer("max_workers", self.max_workers, minimum=1)


class LatencyWindow:
    """The hedge delay of one retry endpoint (see the module docstring)."""

    __slots__ = ("_count", "_delay", "_hedge", "_samples")

    def __init__(self, hedge: Hedge) -> None:
        self._hedge = hedge
        self._samples: list[float] = []
        self._count = 0
        self._delay = hedge.delay if hedge.delay is not None else hedge.initial_delay

    def delay(self) -> float:
        """Seconds to wait before hedging now."""
        return self._delay

    def observe(self, latency: float) -> None:
        """A first answer took ``latency`` seconds."""
        hedge = self._hedge
        if hedge.percentile is None:
            return
        samples = self._samples
        if len(samples) < hedge.samples:
            samples.append(latency)
        else:
            samples[self._count % hedge.samples] = latency
        self._count += 1
        if self._count % max(1, hedge.samples // 10) == 0:
            ordered = sorted(samples)
            rank = min(len(ordered) - 1, math.ceil(hedge.percentile / 100 * len(ordered)) - 1)
            self._delay = min(hedge.max_delay, max(hedge.min_delay, ordered[max(rank, 0)]))
