"""What a breaker-guarded endpoint is (:class:`BreakerEndpoint`) and how a call that
raised is settled; the sync and asyncio endpoints that call through it are
``breaker/_async/endpoint.py`` (written by hand) and its generated twin
``breaker/_sync/endpoint.py`` (``.ci/unasync.py``).  See :mod:`breaker.middleware`
for the outcomes.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from pybreaker import CircuitBreaker

from kitsd.breaker.driver import Driver, Ticket
from kitsd.core.errors import Leaving

__all__ = [
    "AsyncGuarded",
    "BreakerEndpoint",
    "Guarded",
    "R",
    "Req",
    "Resp",
    "settle_error",
]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
#: What a call of the endpoint returns: the response, or for an async endpoint the
#: coroutine that gives it.
R = TypeVar("R")

# Ends of a call that say nothing about the instance's health.
_NEUTRAL: tuple[type, ...] = (  # the last is a marker (an ABC), not an exception class
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
    Leaving,
)


def settle_error(
    driver: Driver, cb: CircuitBreaker, ticket: Ticket, exc: BaseException
) -> BaseException:
    """Settle a call that raised ``exc`` (see the module doc); return what to raise.

    The one piece of outcome logic the sync and async endpoints share (with the
    driver); they differ only in awaiting the endpoint.  Not a context manager:
    entering and leaving one would cost more than the rest of a closed
    breaker's bookkeeping.
    """
    if isinstance(exc, _NEUTRAL):
        driver.abandon(cb, ticket)
        return exc
    return driver.fail(cb, ticket, exc)


class BreakerEndpoint(ABC, Generic[Req, R]):
    """An endpoint guarded by a circuit breaker (made by :func:`circuit_breaker`).

    ``.breaker`` is the pybreaker breaker, for inspection.  ``close`` and
    ``aclose`` are the wrapped endpoint's own, present exactly when it has them,
    so an :class:`~sd.Endpointer` closes the underlying endpoint when its
    instance leaves.  Calling raises ``CircuitBreakerError`` without calling the
    wrapped endpoint while the breaker is open (or half-open with its trial in
    flight), else whatever the wrapped endpoint raises (see the module doc).
    Safe to call from many threads or tasks at once; calls are not serialised.
    """

    __slots__ = ("__weakref__", "__wrapped__", "_breaker", "_driver")

    def __init__(self, endpoint: Callable[[Req], Any], cb: CircuitBreaker,
                 driver: Driver) -> None:
        self.__wrapped__ = endpoint
        self._breaker = cb
        self._driver = driver

    @property
    def breaker(self) -> CircuitBreaker:
        """The pybreaker breaker guarding this endpoint."""
        return self._breaker

    @property
    def close(self) -> Callable[[], Any]:
        """The wrapped endpoint's ``close``; ``AttributeError`` when it has none."""
        close: Callable[[], Any] | None = getattr(self.__wrapped__, "close", None)
        if close is None:
            raise AttributeError(f"{self.__wrapped__!r} has no close()")
        return close

    @property
    def aclose(self) -> Callable[[], Any]:
        """The wrapped endpoint's ``aclose``; ``AttributeError`` when it has none."""
        aclose: Callable[[], Any] | None = getattr(self.__wrapped__, "aclose", None)
        if aclose is None:
            raise AttributeError(f"{self.__wrapped__!r} has no aclose()")
        return aclose

    @abstractmethod
    def __call__(self, request: Req) -> R:
        """Call the wrapped endpoint through the breaker."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} breaker={self._breaker.name!r} of {self.__wrapped__!r}>"


class Guarded(BreakerEndpoint[Req, Resp]):
    """What the sync endpoint is to the type checker: a call returns the response."""

    __slots__ = ()


class AsyncGuarded(BreakerEndpoint[Req, Coroutine[Any, Any, Resp]]):
    """What the async endpoint is to the type checker: a call returns the coroutine
    giving the response."""

    __slots__ = ()
