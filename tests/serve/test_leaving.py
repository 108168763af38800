"""The caller side: an instance that says it is leaving is retried elsewhere and counted
neither toward ejection nor by breakers (the ``Leaving`` marker)."""

from __future__ import annotations

from collections.abc import Callable

import pybreaker
import pytest

from kitsd import breaker, lb, sd
from kitsd.core import observe
from kitsd.core.errors import Leaving


class Drained(ConnectionError, Leaving):
    """Leaving wins even over a connection failure (which would eject at once)."""


def _factory(failing: str, error: type[Exception]) -> Callable[[str], Callable[[int], str]]:
    def factory(instance: str) -> Callable[[int], str]:
        def endpoint(request: int) -> str:
            if instance == failing:
                raise error(f"{instance} answered from its drain path")
            return instance
        return endpoint
    return factory


@pytest.mark.parametrize(("error", "ejected"), [(Drained, False), (ConnectionError, True)])
def test_a_leaving_instance_is_retried_elsewhere_and_not_ejected(
    error: type[Exception], ejected: bool
) -> None:
    seen: list[object] = []
    instancer = sd.FixedInstancer(["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"])
    with observe.observing(seen.append), \
            sd.Endpointer(instancer, _factory("10.0.0.1:80", error)) as endpointer:
        call = lb.retry(3, 5.0, lb.RoundRobin(endpointer))
        answers = [call(n) for n in range(9)]
    assert "10.0.0.1:80" not in answers  # every call went elsewhere, none failed
    ejections = [o for o in seen if isinstance(o, observe.InstanceEjected)]
    assert bool(ejections) is ejected


@pytest.mark.parametrize(("error", "opens"), [(Drained, False), (ConnectionError, True)])
def test_a_breaker_does_not_count_a_leaving_instance(error: type[Exception], opens: bool) -> None:
    cb = pybreaker.CircuitBreaker(fail_max=2)
    guarded = breaker.circuit_breaker(cb)(_factory("a:1", error)("a:1"))
    for _ in range(3):
        with pytest.raises((error, pybreaker.CircuitBreakerError)):
            guarded(1)
    assert (cb.current_state == pybreaker.STATE_OPEN) is opens
    if not opens:
        assert cb.fail_counter == 0
