"""``limit=`` of lb.retry / lb.retry_async (plain and hedged): an adaptive concurrency
limit per retrying endpoint that refuses fast (lb.LimitExceeded, a ``rejected``
outcome), learns from each call's ending, and is scaled by slow start's warmth."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from kitsd import lb, sd
from kitsd.core.observe.outcomes import REJECTED, outcome_of

FIXED = lb.AIMDLimit(initial=2, minimum=2, maximum=2)


class Gate:
    """Endpoints that wait for the gate to open (sync and async), counting entries."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.inside = 0
        self.entered = threading.Semaphore(0)
        self._lock = threading.Lock()

    def sync(self, request: Any) -> Any:
        with self._lock:
            self.inside += 1
        self.entered.release()
        self.open.wait(10)
        return request

    async def async_(self, request: Any) -> Any:
        with self._lock:
            self.inside += 1
        self.entered.release()
        await asyncio.to_thread(self.open.wait, 10)
        return request


def source(endpoint: Callable[[Any], Any]) -> sd.Endpointer:
    return sd.Endpointer(sd.FixedInstancer(["10.0.0.1:80", "10.0.0.2:80"]),
                         lambda instance: endpoint)


def test_a_bad_limit_is_refused_at_construction() -> None:
    balancer = lb.RoundRobin(source(lambda request: request))
    with pytest.raises(TypeError, match=r"^limit must be"):
        lb.retry(2, 1.0, balancer, limit=20)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"^limit must be"):
        lb.retry_async(2, 1.0, balancer, limit="gradient")  # type: ignore[call-overload]


@pytest.mark.parametrize("hedged", [False, True])
def test_sync_calls_past_the_limit_are_refused_at_once(hedged: bool) -> None:
    gate = Gate()
    options: dict[str, Any] = {"limit": FIXED}
    if hedged:
        options["hedge"] = lb.Hedge(delay=5.0)
    call = lb.retry(1, 5.0, lb.RoundRobin(source(gate.sync)), **options)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(call("held"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for _ in range(2):
        assert gate.entered.acquire(timeout=5)
    with pytest.raises(lb.LimitExceeded) as caught:
        call("third")
    assert caught.value.limit == 2
    assert outcome_of(caught.value) == REJECTED
    assert gate.inside == 2  # refused before any attempt
    gate.open.set()
    for thread in threads:
        thread.join(5)
    assert results == ["held", "held"]
    assert call("after") == "after"  # released: admitted again
    if hedged:
        call.close()


@pytest.mark.parametrize("hedged", [False, True])
def test_async_calls_past_the_limit_are_refused_at_once(hedged: bool) -> None:
    gate = Gate()
    options: dict[str, Any] = {"limit": FIXED}
    if hedged:
        options["hedge"] = lb.Hedge(delay=5.0)

    async def scenario() -> None:
        call = lb.retry_async(1, 5.0, lb.RoundRobin(source(gate.async_)), **options)
        held = [asyncio.ensure_future(call("held")) for _ in range(2)]
        for _ in range(2):
            assert await asyncio.to_thread(gate.entered.acquire, True, 5)
        with pytest.raises(lb.LimitExceeded):
            await call("third")
        assert gate.inside == 2
        gate.open.set()
        assert await asyncio.gather(*held) == ["held", "held"]
        assert await call("after") == "after"
        if hedged:
            await call.aclose()

    asyncio.run(scenario())


def test_each_endpoint_has_its_own_limit() -> None:
    gate = Gate()
    balancer = lb.RoundRobin(source(gate.sync))
    first = lb.retry(1, 5.0, balancer, limit=lb.AIMDLimit(initial=1, minimum=1, maximum=1))
    second = lb.retry(1, 5.0, balancer, limit=lb.AIMDLimit(initial=1, minimum=1, maximum=1))
    thread = threading.Thread(target=first, args=("held",))
    thread.start()
    assert gate.entered.acquire(timeout=5)
    with pytest.raises(lb.LimitExceeded):
        first("refused")
    gate.open.set()
    assert second("other stack") == "other stack"
    thread.join(5)


@pytest.mark.parametrize("ending", ["timeout", "503"])
def test_overload_lowers_the_limit(ending: str) -> None:
    # Three calls end overloaded (a timeout; a 503): an AIMD limit of 4 halves per
    # call to 1, so the next call in flight leaves no room for another. Without the
    # wiring the limit would still admit four.
    class Unavailable(Exception):
        status_code = 503

    gate = Gate()
    failures = [0]

    def work(request: Any) -> Any:
        if failures[0] < 3:
            failures[0] += 1
            raise TimeoutError("too slow") if ending == "timeout" else Unavailable()
        return gate.sync(request)

    call = lb.retry(1, 5.0, lb.RoundRobin(source(work)),
                    limit=lb.AIMDLimit(initial=4, backoff=0.5, minimum=1))
    for number in range(3):
        with pytest.raises(lb.RetryError):
            call(number)
    thread = threading.Thread(target=call, args=("held",))
    thread.start()
    assert gate.entered.acquire(timeout=5)
    with pytest.raises(lb.LimitExceeded) as caught:
        call("refused")
    assert caught.value.limit == 1
    gate.open.set()
    thread.join(5)


def test_slow_start_scales_the_limit_of_a_fleet_all_new() -> None:
    # envoy#24689's gap, closed: every instance is new, so the calls in flight ramp.
    gate = Gate()
    balancer = lb.RoundRobin(source(gate.sync), slow_start=lb.SlowStart(
        window=600.0, warm_start=False, min_weight_percent=10.0))
    call = lb.retry(1, 5.0, balancer, limit=lb.AIMDLimit(initial=10, minimum=1, maximum=10))
    assert balancer.warmth() == pytest.approx(0.1, abs=0.01)
    thread = threading.Thread(target=call, args=("held",))
    thread.start()
    assert gate.entered.acquire(timeout=5)
    with pytest.raises(lb.LimitExceeded):  # 10 x 0.1: one call in flight
        call("second")
    gate.open.set()
    thread.join(5)
    warm = lb.retry(1, 5.0, lb.RoundRobin(source(gate.sync)),
                    limit=lb.AIMDLimit(initial=10, minimum=1, maximum=10))
    assert [warm(number) for number in range(3)] == [0, 1, 2]
