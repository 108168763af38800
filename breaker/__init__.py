"""kitsd circuit breakers (go-kit's ``circuitbreaker``, over pybreaker).

- :func:`circuit_breaker` — middleware guarding an endpoint (sync or async) with
  a ``pybreaker.CircuitBreaker``, without serialising calls through it.
- :func:`per_instance` — a factory wrapper giving every instance its own breaker.
- :class:`CircuitBreakerError` — pybreaker's error for a short-circuited call,
  re-exported for convenience.

The bookkeeping and its rationale live in :mod:`breaker.guard`.

Note: the function :func:`circuit_breaker` shadows the submodule of the same
name as an attribute of this package; import the submodule's other names with
``from breaker.circuit_breaker import ...``.
"""

from pybreaker import CircuitBreakerError

from breaker.circuit_breaker import (
    AsyncBreakerEndpoint,
    BreakerEndpoint,
    SyncBreakerEndpoint,
    circuit_breaker,
)
from breaker.per_instance import per_instance

__all__ = [
    "AsyncBreakerEndpoint",
    "BreakerEndpoint",
    "CircuitBreakerError",
    "SyncBreakerEndpoint",
    "circuit_breaker",
    "per_instance",
]
