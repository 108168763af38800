"""Scripted scenarios shared by the observer tests: each drives the real stack
(retry, balancer, breaker, broadcaster) and says what it must have produced."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pybreaker

from kitsd import breaker, lb, sd
from kitsd.core.errors import RegistryUnavailableError
from kitsd.sd.instancer import Broadcaster

DOWN = "127.0.0.1:1001"  # refuses connections
UP = "127.0.0.1:1002"
#: Ejections long enough to still be in force when a test reads the metrics.
LONG = lb.OutlierDetection(base_ejection_time=60.0, max_ejection_time=120.0)


def endpoint_of(instance: str) -> Callable[[Any], Any]:
    def endpoint(request: Any) -> Any:
        if instance == DOWN:
            raise ConnectionRefusedError(f"{instance} refused")
        return instance

    return endpoint


def retry_with_ejection(name: str = "users") -> lb.RoundRobin:
    """One call: the first attempt meets ``DOWN`` (refused: ejected), the retry
    succeeds on ``UP``.  Then a second call goes straight to ``UP``.
    Returns the balancer (for its ``ejected()``)."""
    endpointer = sd.Endpointer(sd.FixedInstancer([DOWN, UP]), endpoint_of)
    balancer = lb.RoundRobin(endpointer, outlier_detection=LONG)
    call = lb.retry(3, 5.0, balancer, name=name)
    assert call("first") == UP
    assert call("second") == UP
    endpointer.close()
    return balancer


def breaker_opening(name: str = "payments") -> pybreaker.CircuitBreaker:
    """A breaker with ``fail_max=2`` guarding a failing endpoint, called twice: it
    opens on the second failure; a third call is rejected."""
    cb = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60, name=name)

    def failing(request: Any) -> Any:
        raise RuntimeError("boom")

    guarded = breaker.circuit_breaker(cb)(failing)
    for _ in range(3):
        with contextlib.suppress(RuntimeError, pybreaker.CircuitBreakerError):
            guarded(None)
    assert cb.current_state == pybreaker.STATE_OPEN
    return cb


def discovery_with_errors(service: str = "orders") -> Broadcaster:
    """A memory-kind watch publishes 3 instances, then fails twice with the same
    error (both failures count), then recovers with 2 instances."""
    broadcaster = Broadcaster(kind="memory", service=service)
    broadcaster.publish(sd.Event(("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80")))
    broadcaster.publish_error(RegistryUnavailableError("registry down"))
    broadcaster.publish_error(RegistryUnavailableError("registry down"))
    broadcaster.publish(sd.Event(("10.0.0.1:80", "10.0.0.2:80")))
    return broadcaster
