"""The retry budget: :class:`RetryBudget` (Finagle's ``RetryBudget``).

A thin, thread-safe driver over the pure :class:`lb.retry_budget_policy.BudgetWindow`: it
holds the lock and reads the clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from kitsd.core import validate
from kitsd.core.observe import HUB, BudgetRefused, current_service, emit
from kitsd.lb.retry_budget_policy import BudgetWindow

__all__ = ["RetryBudget"]


class RetryBudget:
    """Retries allowed as ``percent`` of the requests of the last ``window`` seconds,
    plus ``min_per_second`` retries per second whatever the traffic.

    Give one to :func:`lb.retry` / :func:`lb.retry_async` as ``budget=``: each call
    deposits one request; each retry (and each hedge, see :class:`lb.Hedge`)
    withdraws one, and when none is left the call gives up with the errors so far
    (an :class:`lb.RetryError` whose final error says "retry budget exhausted").
    Under a total outage the backend then sees about ``1 + percent/100`` times
    the normal load, not ``max_attempts`` times; a single failing instance among
    many still gets its calls retried.  Share one budget among the retry stacks
    that call the same backend.  Thread-safe and usable from asyncio (its lock is
    held only for a few arithmetic steps).  ``clock`` is for tests.

    Raises ``TypeError``/:class:`sd.MisuseError` naming a bad setting.
    """

    __slots__ = ("_clock", "_lock", "_window", "min_per_second", "percent", "window")

    def __init__(
        self,
        percent: float = 20.0,
        min_per_second: float = 10.0,
        window: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        validate.number("percent", percent, minimum=0)
        validate.number("min_per_second", min_per_second, minimum=0)
        validate.seconds("window", window)
        if not callable(clock):
            raise TypeError(f"clock must be callable() -> seconds, got {clock!r}")
        self.percent = float(percent)
        self.min_per_second = float(min_per_second)
        self.window = float(window)
        self._clock = clock
        self._lock = threading.Lock()
        self._window = BudgetWindow(self.percent, self.min_per_second, self.window)

    def deposit(self) -> None:
        """Count one request."""
        now = self._clock()
        with self._lock:
            self._window.deposit(now)

    def try_withdraw(self) -> bool:
        """Take one retry; ``False`` when the budget is exhausted (then observers hear
        :class:`kitsd.core.observe.BudgetRefused` naming the calling stack)."""
        now = self._clock()
        with self._lock:
            allowed = self._window.try_withdraw(now)
        if not allowed and HUB.observers:  # kitsd.observe
            emit(BudgetRefused(current_service()))
        return allowed

    def balance(self) -> float:
        """Retries allowed now (for tests and diagnostics)."""
        now = self._clock()
        with self._lock:
            return self._window.balance(now)

    def __repr__(self) -> str:
        return (f"RetryBudget(percent={self.percent:g}, min_per_second={self.min_per_second:g}, "
                f"window={self.window:g})")
