"""The caller side: an instance that says it is leaving is retried elsewhere and counted
neither toward ejection nor by breakers (the ``Leaving`` marker)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pybreaker
import pytest

import kitsd
from kitsd import breaker, lb, sd
from kitsd.core import observe
from kitsd.core.errors import Leaving
from kitsd.serve import DRAINING_HEADER
from kitsd.transport import _policy


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


# --- through kitsd.Transport: a drain-path 503 ------------------------------------------

LEAVING, STAYING = "10.0.0.1:8080", "10.0.0.2:8080"


def _answers(draining: bool, sent: list[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        instance = f"{request.url.host}:{request.url.port}"
        sent.append(f"{request.method} {instance}")
        if instance == LEAVING:
            headers = {DRAINING_HEADER: "1", "connection": "close"} if draining else {}
            return httpx.Response(503, headers=headers, json={"status": "draining"})
        return httpx.Response(200, json={"instance": instance})
    return httpx.MockTransport(handler)


def _client(draining: bool, sent: list[str],
            breakers: dict[str, pybreaker.CircuitBreaker]) -> httpx.Client:
    registry = sd.MemoryRegistry()
    for instance in (LEAVING, STAYING):
        registry.registrar("users", instance).register()

    def breaker_for(instance: str) -> pybreaker.CircuitBreaker:
        return breakers.setdefault(instance, pybreaker.CircuitBreaker(fail_max=3))

    transport = kitsd.Transport(registry, transport=_answers(draining, sent),
                                balancer=lb.RoundRobin, breakers=breaker_for,
                                outlier_detection=lb.OutlierDetection(consecutive_errors=1))
    return httpx.Client(transport=transport, base_url="http://users")


def test_the_transport_reads_the_header_kitsd_serve_sends() -> None:
    assert _policy.DRAINING_HEADER == DRAINING_HEADER


def test_a_draining_503_is_retried_elsewhere_even_for_a_post_and_counts_for_nothing() -> None:
    sent: list[str] = []
    seen: list[object] = []
    breakers: dict[str, pybreaker.CircuitBreaker] = {}
    with observe.observing(seen.append), _client(True, sent, breakers) as client:
        for n in range(6):
            response = client.post("/orders", json={"n": n})
            assert response.status_code == 200
            assert response.json() == {"instance": STAYING}
    assert f"POST {LEAVING}" in sent  # it was asked, answered from its drain path
    assert not [o for o in seen if isinstance(o, observe.InstanceEjected)]
    assert breakers[LEAVING].fail_counter == 0
    assert breakers[LEAVING].current_state == pybreaker.STATE_CLOSED


def test_an_ordinary_503_is_not_retried_for_a_post_and_counts() -> None:
    sent: list[str] = []
    seen: list[object] = []
    breakers: dict[str, pybreaker.CircuitBreaker] = {}
    with observe.observing(seen.append), _client(False, sent, breakers) as client:
        statuses = [client.post("/orders", json={"n": n}).status_code for n in range(6)]
    assert 503 in statuses  # a POST that reached the app is never sent twice
    assert [o for o in seen if isinstance(o, observe.InstanceEjected)] \
        or breakers[LEAVING].fail_counter > 0


async def test_the_async_transport_retries_a_draining_503_elsewhere_too() -> None:
    sent: list[str] = []
    registry = sd.MemoryRegistry()
    for instance in (LEAVING, STAYING):
        registry.registrar("users", instance).register()
    transport = kitsd.AsyncTransport(registry, transport=_answers(True, sent),
                                     balancer=lb.RoundRobin)
    async with httpx.AsyncClient(transport=transport, base_url="http://users") as client:
        for n in range(4):
            response = await client.post("/orders", json={"n": n})
            assert response.json() == {"instance": STAYING}
    assert f"POST {LEAVING}" in sent
