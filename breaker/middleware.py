"""The circuit-breaker middleware (go-kit's ``circuitbreaker.Gobreaker``, over pybreaker).

``circuit_breaker(cb)(endpoint)`` guards ``endpoint`` with the pybreaker breaker
``cb``; ``per_instance(factory, new_breaker)`` gives each instance of an
:class:`sd.Endpointer` a breaker of its own.  The rules are :mod:`breaker.driver_policy`'s
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

from collections.abc import Callable
from typing import Any, Protocol

from pybreaker import CircuitBreaker

from kitsd.breaker._async.endpoint import AsyncBreakerEndpoint
from kitsd.breaker._sync.endpoint import SyncBreakerEndpoint
from kitsd.breaker.driver import driver_for
from kitsd.breaker.endpoint import BreakerEndpoint, R, Req
from kitsd.core.endpoint import close_endpoint, is_async

__all__ = [
    "AsyncBreakerEndpoint",
    "BreakerEndpoint",
    "BreakerMiddleware",
    "SyncBreakerEndpoint",
    "circuit_breaker",
    "per_instance",
]


class BreakerMiddleware(Protocol):
    """What :func:`circuit_breaker` returns: ``middleware(endpoint)`` guards the
    endpoint, keeping its call's types (``Callable[[Req], R]`` in,
    :class:`BreakerEndpoint` ``[Req, R]`` out; ``R`` is a coroutine for an async one)."""

    def __call__(self, endpoint: Callable[[Req], R], /) -> BreakerEndpoint[Req, R]: ...


def circuit_breaker(cb: CircuitBreaker) -> BreakerMiddleware:
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

    def middleware(endpoint: Callable[[Req], R], /) -> BreakerEndpoint[Req, R]:
        if not callable(endpoint):
            raise TypeError(
                f"circuit_breaker(cb)(endpoint): endpoint must be callable, "
                f"got {type(endpoint).__name__}"
            )
        guarded: BreakerEndpoint[Any, Any] = (
            AsyncBreakerEndpoint(endpoint, cb, driver) if is_async(endpoint)
            else SyncBreakerEndpoint(endpoint, cb, driver))
        return guarded

    return middleware


def per_instance(
    factory: Callable[[str], Callable[[Req], R]],
    new_breaker: Callable[[str], CircuitBreaker],
) -> Callable[[str], BreakerEndpoint[Req, R]]:
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

    def build(instance: str) -> BreakerEndpoint[Req, R]:
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
