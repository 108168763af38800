"""kitsd circuit breakers (go-kit's ``circuitbreaker``, over pybreaker).

- :func:`circuit_breaker` — middleware guarding an endpoint (sync or async) with
  a ``pybreaker.CircuitBreaker``, without serialising calls through it.
- :func:`per_instance` — a factory wrapper giving every instance its own breaker.
- :class:`BreakerEndpoint` — what both return (``.breaker``, ``close``/``aclose``).
- :class:`CircuitBreakerError` — pybreaker's error for a short-circuited call,
  re-exported for convenience; :class:`CircuitOpenError`, the one an open breaker
  raises (a ``CircuitBreakerError`` carrying the ``kitsd.core.errors.Rejected`` marker).

Modules: :mod:`breaker.middleware` (the two functions and the endpoint classes),
:mod:`breaker.driver_policy` (the rules, a pure state machine, with their theory of
operation), :mod:`breaker.driver` (applying them to a pybreaker breaker).
"""

from pybreaker import CircuitBreakerError

from kitsd.breaker.errors import CircuitOpenError
from kitsd.breaker.middleware import BreakerEndpoint, circuit_breaker, per_instance

__all__ = [
    "BreakerEndpoint",
    "CircuitBreakerError",
    "CircuitOpenError",
    "circuit_breaker",
    "per_instance",
]
