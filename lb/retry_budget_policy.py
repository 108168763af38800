"""Retry budget accounting, free of I/O: :class:`BudgetWindow`.

Theory of operation
-------------------
Finagle's retry budget: retries are allowed as a share of recent requests plus
a small floor, so that a backend in trouble sees at most ``1 + percent/100``
times its normal load, not ``max_attempts`` times it.

Time is cut into ``buckets`` slices of ``window / buckets`` seconds.  Each
request *deposits* one into the current slice; each retry *withdraws* one.  A
retry is allowed when, counting the slices of the last ``window`` seconds,

    withdrawals + 1 <= percent / 100 * deposits + min_per_second * window

Slices older than the window are cleared as time passes (at most ``buckets``
of them per step, so every operation is O(1) amortised).  A clock that goes
backwards is treated as standing still.  Nothing here locks or reads a clock:
:class:`lb.RetryBudget` does both.
"""

from __future__ import annotations

import math

__all__ = ["BudgetWindow"]


class BudgetWindow:
    """The counts behind one retry budget (see the module docstring)."""

    __slots__ = ("_allowance", "_deposits", "_epoch", "_percent", "_slices", "_width",
                 "_withdrawals", "deposits", "withdrawals")

    def __init__(self, percent: float, min_per_second: float, window: float,
                 buckets: int = 10) -> None:
        self._percent = percent / 100.0
        self._allowance = min_per_second * window
        self._width = window / buckets
        self._slices = buckets
        self._deposits = [0] * buckets
        self._withdrawals = [0] * buckets
        self._epoch: int | None = None
        #: Requests and retries within the window (as of the last operation).
        self.deposits = 0
        self.withdrawals = 0

    def _advance(self, now: float) -> int:
        """Clear the slices that left the window; returns the current slice's index."""
        slot = math.floor(now / self._width)
        epoch = self._epoch
        if epoch is None:
            self._epoch = slot
            return slot % self._slices
        if slot <= epoch:  # the same slice, or a clock that went backwards
            return epoch % self._slices
        for step in range(1, min(slot - epoch, self._slices) + 1):
            index = (epoch + step) % self._slices
            self.deposits -= self._deposits[index]
            self.withdrawals -= self._withdrawals[index]
            self._deposits[index] = self._withdrawals[index] = 0
        self._epoch = slot
        return slot % self._slices

    def deposit(self, now: float) -> None:
        """One request started at ``now``."""
        index = self._advance(now)
        self._deposits[index] += 1
        self.deposits += 1

    def balance(self, now: float) -> float:
        """Retries allowed at ``now`` before the budget runs out."""
        self._advance(now)
        return self._percent * self.deposits + self._allowance - self.withdrawals

    def try_withdraw(self, now: float) -> bool:
        """Take one retry from the budget at ``now``; ``False``: none is left."""
        index = self._advance(now)
        if self._percent * self.deposits + self._allowance - self.withdrawals < 1.0 - 1e-9:
            return False
        self._withdrawals[index] += 1
        self.withdrawals += 1
        return True

