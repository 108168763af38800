"""The adaptive concurrency limit of one stack: :class:`ConcurrencyLimiter`.

A thin, thread-safe driver over the pure :class:`lb.concurrency_limit_policy.Admission`:
it holds the lock and reads the clock.  The algorithms (:class:`lb.GradientLimit`,
:class:`lb.AIMDLimit`) and the theory are in :mod:`lb.concurrency_limit_policy`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kitsd.lb.concurrency_limit_policy import (
    Admission,
    AIMDLimit,
    GradientLimit,
    LimitPolicy,
    Outcome,
    outcome_of,
)
from kitsd.lb.errors import LimitExceeded

__all__ = ["ConcurrencyLimiter", "LimitPolicy", "check_limit"]


def check_limit(limit: object, name: str = "limit") -> LimitPolicy | None:
    """``limit`` if it is ``None``, an :class:`lb.GradientLimit` or an :class:`lb.AIMDLimit`;
    else ``TypeError`` naming ``name``."""
    if limit is None or isinstance(limit, GradientLimit | AIMDLimit):
        return limit
    raise TypeError(f"{name} must be an lb.GradientLimit, an lb.AIMDLimit or None, "
                    f"not {type(limit).__name__}")


class ConcurrencyLimiter:
    """Calls in flight under one adaptive limit: one per stack (a retrying endpoint, one
    service of a transport), never shared between stacks.

    :meth:`acquire` admits a call or raises :class:`lb.LimitExceeded` at once;
    :meth:`release` books how the call ended (an error, or ``None``), which moves the
    limit.  ``scale() -> float`` (optional) lowers the limit for a moment (slow
    start passes the warmth of a fleet whose every instance is new).  ``clock`` is
    for tests.  Thread-safe and asyncio-safe (the lock is held for a few
    arithmetic steps, never across a call).
    """

    __slots__ = ("_admission", "_clock", "_lock", "_scale", "policy")

    def __init__(self, policy: LimitPolicy, *, scale: Callable[[], float] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        checked = check_limit(policy)
        if checked is None:
            raise TypeError("policy must be an lb.GradientLimit or an lb.AIMDLimit, not None")
        if scale is not None and not callable(scale):
            raise TypeError(f"scale must be callable() -> float, got {scale!r}")
        if not callable(clock):
            raise TypeError(f"clock must be callable() -> seconds, got {clock!r}")
        self.policy = checked
        self._admission = Admission(checked)
        self._scale = scale
        self._clock = clock
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        """The current limit (calls in flight)."""
        return self._admission.limit

    @property
    def in_flight(self) -> int:
        """Calls admitted and not yet released."""
        return self._admission.in_flight

    @property
    def rejected(self) -> int:
        """Calls refused so far."""
        return self._admission.rejected

    def acquire(self) -> float:
        """Admit a call; returns its start time (for :meth:`release`).  Raises
        :class:`lb.LimitExceeded` when the limit is reached."""
        scale = 1.0 if self._scale is None else self._scale()
        now = self._clock()
        with self._lock:
            admitted = self._admission.acquire(now, scale)
        if not admitted:
            raise LimitExceeded(self._admission.limit)
        return now

    def release(self, started: float, error: BaseException | None) -> None:
        """The call admitted at ``started`` ended, with ``error`` (``None``: it succeeded)."""
        self.release_outcome(started, outcome_of(error))

    def release_outcome(self, started: float, outcome: Outcome) -> None:
        """:meth:`release` with the outcome already classified."""
        now = self._clock()
        with self._lock:
            self._admission.release(now, started, outcome)

    def __repr__(self) -> str:
        return (f"ConcurrencyLimiter({self.policy!r}, limit={self.limit}, "
                f"in_flight={self.in_flight})")
