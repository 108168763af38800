"""The circuit-breaker middleware (go-kit's ``circuitbreaker.Gobreaker``, over pybreaker).

``circuit_breaker(cb)(endpoint)`` guards ``endpoint`` with the pybreaker
breaker ``cb``.  The bookkeeping is :mod:`breaker.guard`'s (read its header for
why pybreaker's own ``cb.call`` is not used, the one-trial rule of a half-open
breaker, and what happens to outcomes of calls that outlive a transition); this
module only drives it around a sync or an async call.

Outcomes:

- the endpoint returns: a success;
- it raises: a failure, unless the breaker's ``exclude`` matches the error
  (then a success, as pybreaker); the error is re-raised, or replaced by
  ``CircuitBreakerError`` (``__cause__`` = the error) when this failure trips a
  breaker that has ``throw_new_error_on_trip``;
- it is cancelled or interrupted (``asyncio.CancelledError``,
  ``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``): neither — a retry
  timeout cancelling an attempt is not the instance's fault.  Nothing is
  recorded, a half-open trial slot is released, the exception propagates.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from pybreaker import CircuitBreaker

from breaker import guard
from sd.endpoint import Endpoint, is_async

__all__ = ["AsyncBreakerEndpoint", "BreakerEndpoint", "SyncBreakerEndpoint", "circuit_breaker"]

# Ends of a call that say nothing about the instance's health.
_NEUTRAL: tuple[type[BaseException], ...] = (
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
)


class _Attempt:
    """Settles one admitted call from ``__exit__``; works in sync and async code
    alike because settling never awaits."""

    __slots__ = ("_ticket",)

    def __init__(self, ticket: guard.Ticket) -> None:
        self._ticket = ticket

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            guard.succeed(self._ticket)
        elif isinstance(exc, _NEUTRAL):
            guard.abandon(self._ticket)
        else:
            error = guard.fail(self._ticket, exc)
            if error is not exc:
                raise error from exc


class BreakerEndpoint(ABC):
    """An endpoint guarded by a circuit breaker (made by :func:`circuit_breaker`).

    ``.breaker`` is the pybreaker breaker, for inspection.  ``close`` and
    ``aclose`` are the wrapped endpoint's own, present exactly when it has them,
    so an :class:`~sd.Endpointer` closes the underlying endpoint when its
    instance leaves.  Calling raises ``CircuitBreakerError`` without calling the
    wrapped endpoint while the breaker is open (or half-open with its trial in
    flight), else whatever the wrapped endpoint raises (see the module doc).
    Safe to call from many threads or tasks at once; calls are not serialised.
    """

    __slots__ = ("__weakref__", "__wrapped__", "_breaker")

    def __init__(self, endpoint: Endpoint, cb: CircuitBreaker) -> None:
        self.__wrapped__ = endpoint
        self._breaker = cb

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

    def _attempt(self, request: Any) -> _Attempt:
        return _Attempt(
            guard.admit(self._breaker, self.__wrapped__, request, now=datetime.now(UTC))
        )

    @abstractmethod
    def __call__(self, request: Any) -> Any:
        """Call the wrapped endpoint through the breaker."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} breaker={self._breaker.name!r} of {self.__wrapped__!r}>"


class SyncBreakerEndpoint(BreakerEndpoint):
    """A sync endpoint guarded by a circuit breaker; see :class:`BreakerEndpoint`."""

    __slots__ = ()

    def __call__(self, request: Any) -> Any:
        """Call the wrapped endpoint through the breaker."""
        with self._attempt(request):
            return self.__wrapped__(request)


class AsyncBreakerEndpoint(BreakerEndpoint):
    """An async endpoint guarded by a circuit breaker; see :class:`BreakerEndpoint`.

    The breaker's lock is taken only briefly, never across an ``await``.
    """

    __slots__ = ()

    async def __call__(self, request: Any) -> Any:
        """Call the wrapped endpoint through the breaker."""
        with self._attempt(request):
            return await self.__wrapped__(request)


def circuit_breaker(cb: CircuitBreaker) -> Callable[[Endpoint], BreakerEndpoint]:
    """Middleware guarding an endpoint with the pybreaker breaker ``cb``.

    An open breaker raises ``pybreaker.CircuitBreakerError`` without calling the
    endpoint; every error the endpoint raises counts as a failure unless ``cb``'s
    ``exclude`` says otherwise; ``cb``'s listeners fire as under pybreaker.  The
    result is async exactly when the endpoint is (:func:`sd.endpoint.is_async`),
    forwards ``close``/``aclose`` and exposes ``.breaker``.  Wrapping several
    endpoints with one ``cb`` makes them share the breaker; for one breaker per
    instance use :func:`breaker.per_instance`.  Raises ``TypeError`` if ``cb`` is
    not a ``pybreaker.CircuitBreaker``.
    """
    if not isinstance(cb, CircuitBreaker):
        raise TypeError(f"expected a pybreaker.CircuitBreaker, got {type(cb).__name__}")

    def middleware(endpoint: Endpoint) -> BreakerEndpoint:
        if is_async(endpoint):
            return AsyncBreakerEndpoint(endpoint, cb)
        return SyncBreakerEndpoint(endpoint, cb)

    return middleware
