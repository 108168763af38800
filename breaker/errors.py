"""The error an open breaker raises: :class:`CircuitOpenError`."""

from __future__ import annotations

from pybreaker import CircuitBreakerError

from kitsd.core.errors import Rejected

__all__ = ["CircuitOpenError"]


class CircuitOpenError(CircuitBreakerError, Rejected):
    """An open breaker (or a half-open one whose trial call is still running) refused
    the call without calling the endpoint.

    A ``pybreaker.CircuitBreakerError``, as the contract promises, that also carries
    the :class:`kitsd.core.errors.Rejected` marker (outcome ``rejected``).  The error
    that *trips* a breaker (``throw_new_error_on_trip``) is a plain
    ``pybreaker.CircuitBreakerError`` chained from the call's own error: that call did
    reach the instance.
    """
