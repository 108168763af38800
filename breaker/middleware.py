"""The circuit-breaker middleware (go-kit's ``circuitbreaker.Gobreaker``, over pybreaker).

``circuit_breaker(cb)(endpoint)`` guards ``endpoint`` with the pybreaker breaker
``cb``; ``per_instance(factory, new_breaker)`` gives each instance of an
:class:`sd.Endpointer` a breaker of its own.  The rules are :mod:`breaker.guard`'s
(read its header for why pybreaker's own ``cb.call`` is not used, the one-trial
rule of a half-open breaker, and what happens to outcomes of calls that outlive
a transition), applied by :mod:`breaker.driver`; this module only runs them
around a sync or an async call.

Outcomes:

- the endpoint returns: a success;
- it raises: a failure, unless the breaker's ``exclude`` matches the error
  (then a success, as pybreaker); the error is re-raised, or replaced by
  ``CircuitBreakerError`` (``__cause__`` = the error) when this failure trips a
  breaker that has ``throw_new_error_on_trip``;
- it is cancelled or interrupted (``asyncio.CancelledError``,
  ``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``), or the instance said it
  is leaving (an error carrying :class:`kitsd.core.errors.Leaving`): neither — a retry
  timeout cancelling an attempt, or a draining instance, is not the instance's fault.  Nothing is
  recorded, a half-open trial slot is released, the exception propagates.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from pybreaker import CircuitBreaker

from kitsd.breaker.driver import Driver, Ticket, driver_for
from kitsd.core.endpoint import Endpoint, close_endpoint, is_async
from kitsd.core.errors import Leaving

__all__ = [
    "AsyncBreakerEndpoint",
    "BreakerEndpoint",
    "SyncBreakerEndpoint",
    "circuit_breaker",
    "per_instance",
]

# Ends of a call that say nothing about the instance's health.
_NEUTRAL: tuple[type, ...] = (  # the last is a marker (an ABC), not an exception class
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
    Leaving,
)


def _settle_error(
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

    __slots__ = ("__weakref__", "__wrapped__", "_breaker", "_driver")

    def __init__(self, endpoint: Endpoint, cb: CircuitBreaker, driver: Driver) -> None:
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
    def __call__(self, request: Any) -> Any:
        """Call the wrapped endpoint through the breaker."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} breaker={self._breaker.name!r} of {self.__wrapped__!r}>"


class SyncBreakerEndpoint(BreakerEndpoint):
    """A sync endpoint guarded by a circuit breaker; see :class:`BreakerEndpoint`."""

    __slots__ = ()

    def __call__(self, request: Any) -> Any:
        """Call the wrapped endpoint through the breaker."""
        cb, driver, endpoint = self._breaker, self._driver, self.__wrapped__
        ticket = driver.admit(cb, endpoint, request)
        try:
            result = endpoint(request)
        except BaseException as exc:
            error = _settle_error(driver, cb, ticket, exc)
            if error is exc:
                raise
            raise error from exc
        driver.succeed(cb, ticket)
        return result


class AsyncBreakerEndpoint(BreakerEndpoint):
    """An async endpoint guarded by a circuit breaker; see :class:`BreakerEndpoint`.

    The driver's lock is taken only briefly, never across an ``await``.
    """

    __slots__ = ()

    async def __call__(self, request: Any) -> Any:
        """Call the wrapped endpoint through the breaker."""
        cb, driver, endpoint = self._breaker, self._driver, self.__wrapped__
        ticket = driver.admit(cb, endpoint, request)
        try:
            result = await endpoint(request)
        except BaseException as exc:
            error = _settle_error(driver, cb, ticket, exc)
            if error is exc:
                raise
            raise error from exc
        driver.succeed(cb, ticket)
        return result


def circuit_breaker(cb: CircuitBreaker) -> Callable[[Endpoint], BreakerEndpoint]:
    """Middleware guarding an endpoint with the pybreaker breaker ``cb``.

    An open breaker raises :class:`breaker.CircuitOpenError` (a
    ``pybreaker.CircuitBreakerError``) without calling the endpoint; every error
    the endpoint raises counts as a failure unless ``cb``'s ``exclude`` says
    otherwise; ``cb``'s listeners fire as under pybreaker, and
    its state (``cb.current_state``, ``cb.fail_counter``, ``cb.open()`` …) stays
    the one to watch and to steer.  The result is async exactly when the
    endpoint is (:func:`kitsd.core.endpoint.is_async`), forwards ``close``/``aclose``
    and exposes ``.breaker``.  Wrapping several endpoints with one ``cb`` makes
    them share the breaker; for one breaker per instance use
    :func:`per_instance`.

    Raises ``TypeError`` if ``cb`` is not a ``pybreaker.CircuitBreaker``, and the
    middleware raises ``TypeError`` if the endpoint is not callable.
    """
    if not isinstance(cb, CircuitBreaker):
        raise TypeError(
            f"circuit_breaker: cb must be a pybreaker.CircuitBreaker, got {type(cb).__name__}"
        )
    driver = driver_for(cb)

    def middleware(endpoint: Endpoint) -> BreakerEndpoint:
        if not callable(endpoint):
            raise TypeError(
                f"circuit_breaker(cb)(endpoint): endpoint must be callable, "
                f"got {type(endpoint).__name__}"
            )
        if is_async(endpoint):
            return AsyncBreakerEndpoint(endpoint, cb, driver)
        return SyncBreakerEndpoint(endpoint, cb, driver)

    return middleware


def per_instance(
    factory: Callable[[str], Endpoint],
    new_breaker: Callable[[str], CircuitBreaker],
) -> Callable[[str], BreakerEndpoint]:
    """Wrap ``factory`` so each instance's endpoint gets a breaker of its own.

    The returned factory builds ``new_breaker(instance)`` and then
    ``factory(instance)``, and guards the endpoint with the breaker
    (:func:`circuit_breaker`); the result exposes ``.breaker`` and forwards
    ``close``/``aclose``, so the Endpointer still closes the endpoint when its
    instance leaves.  An instance that leaves and comes back gets a fresh
    breaker unless ``new_breaker`` hands back a kept one.  Example::

        factory = breaker.per_instance(
            sd.http.factory("GET", "/", encode=..., decode=...),
            lambda inst: pybreaker.CircuitBreaker(fail_max=5, reset_timeout=10, name=inst),
        )

    Raises ``TypeError`` at once if ``factory`` or ``new_breaker`` is not
    callable.  The returned factory raises whatever ``new_breaker`` or
    ``factory`` raises, and ``TypeError`` if ``new_breaker`` returns something
    other than a ``pybreaker.CircuitBreaker`` or ``factory`` something not
    callable (the Endpointer logs it and skips the instance); the breaker is made
    first so a failing ``new_breaker`` leaves no endpoint to close.  Thread-safe
    if ``factory`` and ``new_breaker`` are.
    """
    for name, value in (("factory", factory), ("new_breaker", new_breaker)):
        if not callable(value):
            raise TypeError(f"per_instance: {name} must be callable, got {type(value).__name__}")

    def build(instance: str) -> BreakerEndpoint:
        cb = new_breaker(instance)
        if not isinstance(cb, CircuitBreaker):
            raise TypeError(
                f"per_instance: new_breaker({instance!r}) returned {type(cb).__name__}, "
                "not a pybreaker.CircuitBreaker"
            )
        endpoint = factory(instance)
        if not callable(endpoint):
            close_endpoint(endpoint)  # whatever it is, leave nothing open behind
            raise TypeError(
                f"per_instance: factory({instance!r}) returned {type(endpoint).__name__}, "
                "not an endpoint (a callable)"
            )
        return circuit_breaker(cb)(endpoint)

    return build
