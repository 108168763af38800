"""One circuit breaker per instance, as a factory wrapper for :class:`sd.Endpointer`."""

from __future__ import annotations

from collections.abc import Callable

from pybreaker import CircuitBreaker

from breaker.circuit_breaker import BreakerEndpoint, circuit_breaker
from sd.endpoint import Endpoint

__all__ = ["per_instance"]


def per_instance(
    factory: Callable[[str], Endpoint],
    new_breaker: Callable[[str], CircuitBreaker],
) -> Callable[[str], BreakerEndpoint]:
    """Wrap ``factory`` so each instance's endpoint gets a breaker of its own.

    The returned factory builds ``new_breaker(instance)`` and then
    ``factory(instance)``, and guards the endpoint with the breaker
    (:func:`breaker.circuit_breaker`); the result exposes ``.breaker`` and
    forwards ``close``/``aclose``, so the Endpointer still closes the endpoint
    when its instance leaves.  An instance that leaves and comes back gets a
    fresh breaker unless ``new_breaker`` hands back a kept one.  Whatever
    ``new_breaker`` or ``factory`` raises propagates (the Endpointer logs it and
    skips the instance); the breaker is made first so a failing ``new_breaker``
    leaves no endpoint to close.  Example::

        factory = breaker.per_instance(
            sd.http.factory("GET", "/", encode=..., decode=...),
            lambda inst: pybreaker.CircuitBreaker(fail_max=5, reset_timeout=10, name=inst),
        )

    Thread-safe if ``factory`` and ``new_breaker`` are.
    """

    def build(instance: str) -> BreakerEndpoint:
        cb = new_breaker(instance)
        return circuit_breaker(cb)(factory(instance))

    return build
