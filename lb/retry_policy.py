"""The retry decisions, free of I/O: one :class:`RetryCall` per call.

Theory of operation
-------------------
A driver (:func:`lb.retry` on threads, :func:`lb.retry_async` on asyncio)
makes attempts; after each failure it asks :meth:`RetryCall.failed` what next,
passing the error and the current time.  The answer is either
:class:`Retry` (wait ``delay`` seconds, then attempt again) or :class:`GiveUp`
(raise ``error``).

* Every error is kept, in order, for :class:`lb.RetryError` / :class:`lb.RetryTimeout`.
* The callback ``(attempt, error) -> (keep_trying, replacement)`` decides; the
  default keeps trying while ``attempt < max_attempts``.  On stopping, the
  replacement (if any) becomes the final error.
* A retry budget, if given (``allow() -> bool``, asked only when a retry would
  otherwise happen), may refuse: the call gives up with a :class:`RetryError`
  whose final error is :class:`lb.errors.RetryBudgetExhausted`.
* The deadline wins: past it, or when the wait before the next attempt would
  reach it, the call gives up at once with :class:`lb.RetryTimeout` (there is no
  point sleeping into a deadline that leaves no time to try).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kitsd.core import validate as check
from kitsd.lb.errors import RetryBudgetExhausted, RetryError, RetryTimeout

__all__ = ["Callback", "GiveUp", "Retry", "RetryCall", "WaitFunction", "validate"]

#: ``callback(attempt, error) -> (keep_trying, replacement)``
Callback = Callable[[int, BaseException], tuple[bool, BaseException | None]]
#: ``wait(attempt, error, seconds_since_start) -> seconds`` before the next attempt
WaitFunction = Callable[[int, BaseException, float], float]


@dataclass(frozen=True, slots=True)
class Retry:
    """Attempt again after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop and raise ``error`` (a :class:`RetryError` or :class:`RetryTimeout`)."""

    error: RetryError | RetryTimeout


def validate(max_attempts: int, timeout: float) -> None:
    """Raise ``TypeError`` / :class:`sd.MisuseError` (a ``ValueError``) for unusable
    retry settings."""
    check.integer("max_attempts", max_attempts, minimum=1)
    # An infinite timeout would overflow every clock and socket timeout it reaches
    # (time.sleep, lb.remaining() in sd.http).
    check.seconds("timeout", timeout)


class RetryCall:
    """The state of one retried call: attempts made, errors seen, the deadline
    (``timeout``: the seconds this call has, its endpoint's or a shorter
    :func:`lb.deadline`)."""

    __slots__ = ("_allow", "_callback", "_max_attempts", "_timeout", "_wait", "deadline",
                 "errors", "start")

    def __init__(
        self,
        *,
        max_attempts: int,
        timeout: float,
        start: float,
        callback: Callback | None = None,
        wait: WaitFunction | None = None,
        allow: Callable[[], bool] | None = None,
    ) -> None:
        self._allow = allow
        self._max_attempts = max_attempts
        self._timeout = timeout
        self._callback = callback
        self._wait = wait
        self.start = start
        self.deadline = start + timeout
        self.errors: list[BaseException] = []

    @property
    def attempt(self) -> int:
        """Attempts that have failed so far."""
        return len(self.errors)

    def timed_out(self) -> RetryTimeout:
        """The timeout error carrying the errors seen so far."""
        return RetryTimeout(self._timeout, self.errors)

    def failed(self, error: BaseException, now: float) -> Retry | GiveUp:
        """Record a failed attempt and decide what to do next."""
        self.errors.append(error)
        attempt = len(self.errors)
        if now >= self.deadline:
            return GiveUp(self.timed_out())
        if self._callback is None:
            keep_trying, replacement = attempt < self._max_attempts, None
        else:
            keep_trying, replacement = self._callback(attempt, error)
        if not keep_trying:
            final = replacement if replacement is not None else error
            return GiveUp(RetryError(self.errors, final))
        delay = 0.0 if self._wait is None else self._wait(attempt, error, now - self.start)
        delay = max(0.0, delay)
        if now + delay >= self.deadline:
            return GiveUp(self.timed_out())
        if self._allow is not None and not self._allow():
            return GiveUp(RetryError(self.errors, RetryBudgetExhausted(error)))
        return Retry(delay)
