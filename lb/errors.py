"""Errors raised by balancers and retry; they join the tree drawn in :mod:`kitsd.core.errors`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kitsd.core.errors import KitsdError, NoEndpoints, Rejected

__all__ = [
    "LimitExceeded",
    "NoEndpointsError",
    "RetryBudgetExhausted",
    "RetryError",
    "RetryTimeout",
]


class NoEndpointsError(KitsdError, NoEndpoints):
    """The balancer had no endpoint to pick (go-kit's ``ErrNoEndpoints``); carries the
    :class:`kitsd.core.errors.NoEndpoints` marker (outcome ``no_endpoints``)."""

    def __init__(self, message: str = "no endpoints available") -> None:
        super().__init__(message)


class RetryError(KitsdError):
    """Every attempt failed.

    ``.errors`` holds every raw error in order; ``.final`` the error the retry gave
    up on (the callback's replacement, if it gave one).  ``str()`` is ``final``
    alone for one error, else ``"<final> (previously: e1; e2)"`` as go-kit.
    """

    def __init__(self, errors: Sequence[BaseException], final: BaseException) -> None:
        self.errors: list[BaseException] = list(errors)
        self.final = final
        super().__init__(self._describe())

    def _describe(self) -> str:
        if len(self.errors) <= 1:
            return str(self.final)
        previous = "; ".join(str(error) for error in self.errors[:-1])
        return f"{self.final} (previously: {previous})"

    def __str__(self) -> str:
        return self._describe()

    def __reduce__(self) -> tuple[Any, ...]:
        # ``args`` holds only the message, so the default would call __init__ wrongly
        # on unpickling/copying; rebuild from the real constructor arguments.
        return type(self), (self.errors, self.final), self.__dict__


class RetryBudgetExhausted(KitsdError, Rejected):
    """A retry was refused by the :class:`lb.RetryBudget`: the final error of the
    :class:`RetryError` raised then; ``.last`` is the attempt error it followed.
    Carries the :class:`kitsd.core.errors.Rejected` marker (outcome ``rejected``)."""

    def __init__(self, last: BaseException) -> None:
        self.last = last
        super().__init__(f"retry budget exhausted after: {last}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.last,), self.__dict__


class RetryTimeout(KitsdError, TimeoutError):
    """The retry's timeout passed before an attempt succeeded.

    ``.errors`` holds the errors seen so far (go-kit drops them); ``.timeout`` the
    seconds the call had (its endpoint's ``timeout``, or less under an earlier
    :func:`lb.deadline`).
    """

    def __init__(self, timeout: float, errors: Sequence[BaseException]) -> None:
        self.timeout = timeout
        self.errors: list[BaseException] = list(errors)
        super().__init__(self._describe())

    def _describe(self) -> str:
        text = f"retry timed out after {self.timeout:g}s"
        if not self.errors:
            return text
        return f"{text} (errors so far: {'; '.join(str(error) for error in self.errors)})"

    def __str__(self) -> str:
        return self._describe()

    def __reduce__(self) -> tuple[Any, ...]:
        # See RetryError.__reduce__.
        return type(self), (self.timeout, self.errors), self.__dict__


class LimitExceeded(KitsdError, Rejected):
    """The stack's adaptive concurrency limit (``limit=``, :class:`lb.GradientLimit` /
    :class:`lb.AIMDLimit`) refused the call: ``.limit`` calls were in flight.  Raised
    at once, before any attempt; carries the :class:`kitsd.core.errors.Rejected`
    marker (outcome ``rejected``).  The service is at capacity: back off, shed or
    degrade rather than retry at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"concurrency limit reached ({limit} calls in flight)")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.limit,), self.__dict__
