"""LeastLoaded: power of two choices over requests in flight."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import Counter
from typing import Any

import pytest

from kitsd import lb, sd


def _endpointer(endpoints: dict[str, Any]) -> sd.Endpointer:
    return sd.Endpointer(sd.FixedInstancer(endpoints), endpoints.__getitem__)


def test_empty_set_raises() -> None:
    with (
        sd.Endpointer(sd.FixedInstancer([]), lambda i: (lambda r: r)) as endpointer,
        pytest.raises(lb.NoEndpointsError, match="no endpoints available"),
    ):
        lb.LeastLoaded(endpointer).endpoint()


def test_idle_endpoints_share_calls_evenly() -> None:
    names = [f"127.0.0.1:{8000 + i}" for i in range(4)]
    with _endpointer({n: (lambda r, n=n: n) for n in names}) as endpointer:
        balancer = lb.LeastLoaded(endpointer, seed=3)
        counts = Counter(balancer.endpoint()(None) for _ in range(40_000))
    assert set(counts) == set(names)
    for name in names:
        assert abs(counts[name] - 10_000) < 10_000 * 0.05


def test_busy_endpoint_is_avoided() -> None:
    release = threading.Event()
    entered = threading.Event()

    def slow(request: object) -> str:
        entered.set()
        release.wait(10)
        return "slow"

    with _endpointer({"127.0.0.1:1": slow, "127.0.0.1:2": lambda r: "fast"}) as endpointer:
        balancer = lb.LeastLoaded(endpointer, seed=1)
        # occupy the slow endpoint with one request in flight
        first = None
        while first is None:
            candidate = balancer.endpoint()
            if candidate.__wrapped__ is slow:  # type: ignore[attr-defined]
                first = candidate
            else:
                assert candidate(None) == "fast"
        worker = threading.Thread(target=first, args=(None,))
        worker.start()
        assert entered.wait(5)
        try:
            # with two endpoints both are always compared: the busy one never wins
            picks = [balancer.endpoint()(None) for _ in range(200)]
        finally:
            release.set()
            worker.join()
    assert picks == ["fast"] * 200


def test_retry_exclusion_works_through_the_wrappers() -> None:
    calls: list[str] = []

    def failing(request: object) -> str:
        calls.append("bad")
        raise ValueError("bad")

    def good(request: object) -> str:
        calls.append("good")
        return "good"

    with _endpointer({"127.0.0.1:1": failing, "127.0.0.1:2": good}) as endpointer:
        balancer = lb.LeastLoaded(endpointer, seed=0)
        # A fresh wrapper per pick: retry goes by the instance each pick names.
        assert balancer.pick().instance in {"127.0.0.1:1", "127.0.0.1:2"}
        call = lb.retry(2, 5.0, balancer)
        for _ in range(20):
            calls.clear()
            assert call(None) == "good"
            assert calls.count("bad") <= 1  # never the failed one twice in a call


async def test_async_endpoints_stay_async() -> None:
    async def echo(request: object) -> object:
        await asyncio.sleep(0)
        return request

    with _endpointer({"127.0.0.1:1": echo, "127.0.0.1:2": echo}) as endpointer:
        balancer = lb.LeastLoaded(endpointer, seed=0)
        endpoint = balancer.endpoint()
        assert sd.is_async(endpoint)
        results = await asyncio.gather(*(lb.retry_async(2, 5.0, balancer)(i) for i in range(50)))
    assert results == list(range(50))


def test_source_error_passes_through() -> None:
    boom = RuntimeError("discovery down")

    class Broken:
        def endpoints(self) -> list[Any]:
            raise boom

    with pytest.raises(RuntimeError) as caught:
        lb.LeastLoaded(Broken()).endpoint()
    assert caught.value is boom


async def test_wrapper_kind_follows_each_endpoint() -> None:
    # The kind cache is keyed by what decides async-ness (code object or type), so
    # endpoints of every shape get the right wrapper, sync or async.
    async def async_echo(request: object, tag: str = "async") -> object:
        return tag

    def sync_echo(request: object) -> object:
        return "sync"

    class AsyncCallable:
        async def __call__(self, request: object) -> object:
            return "object"

    class Holder:
        async def method(self, request: object) -> object:
            return "method"

    shapes: dict[str, Any] = {
        "127.0.0.1:1": async_echo,
        "127.0.0.1:2": sync_echo,
        "127.0.0.1:3": AsyncCallable(),
        "127.0.0.1:4": Holder().method,
        "127.0.0.1:5": functools.partial(async_echo, tag="partial"),
    }
    with _endpointer(shapes) as endpointer:
        balancer = lb.LeastLoaded(endpointer, seed=4)
        seen: dict[str, object] = {}
        while len(seen) < len(shapes):
            pick = balancer.pick()
            endpoint = pick.endpoint
            assert sd.is_async(endpoint) is sd.is_async(shapes[pick.instance])
            result = endpoint(None)
            seen[pick.instance] = await result if sd.is_async(endpoint) else result
    assert seen == {"127.0.0.1:1": "async", "127.0.0.1:2": "sync", "127.0.0.1:3": "object",
                    "127.0.0.1:4": "method", "127.0.0.1:5": "partial"}


def test_least_loaded_never_trades_for_an_excluded_instance() -> None:
    # Regression: the second choice could be the excluded instance and win on load.
    names = ["10.0.0.1:80", "10.0.0.2:80"]
    with _endpointer({n: (lambda r, n=n: n) for n in names}) as endpointer:
        balancer = lb.LeastLoaded(endpointer, seed=1)
        busy = balancer.pick({names[0]})
        assert busy.instance == names[1]
        balancer._in_flight.enter(names[1])  # names[1] busy: names[0] looks better
        picks = {balancer.pick({names[0]}).instance for _ in range(50)}
        balancer._in_flight.leave(names[1])
    assert picks == {names[1]}
