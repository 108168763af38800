"""lb.retry_async: what only asyncio has — cancellation, tasks, concurrent calls on one loop.

The scenarios shared with the sync driver (go-kit's retry tests, wait, exclusion,
ejection) run against both drivers in ``test_retry.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import tenacity

from kitsd import lb, sd
from kitsd.core.endpoint import Endpoint
from tests.helpers import async_wait_for

AsyncCall = Callable[[Any], Awaitable[Any]]


def start(retrying: AsyncCall, request: Any) -> asyncio.Task[Any]:
    """Run one retried call as its own task (``retry_async`` is typed as returning an
    ``Awaitable``, which ``create_task`` does not take)."""

    async def call() -> Any:
        return await retrying(request)

    return asyncio.create_task(call())


class Static:
    """The smallest endpoint source: a fixed list."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self._endpoints = endpoints

    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints)


class Hang:
    """An async endpoint that waits for a reply that never comes, and notes its cancellation."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.calls = 0
        self.cancelled = 0

    async def __call__(self, request: Any) -> Any:
        self.calls += 1
        self.entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("unreachable: the event never fires")


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def test_timeout_cancels_the_attempt_in_flight() -> None:
    # TestRetryTimeout, asyncio: the deadline interrupts an endpoint that hangs.
    hang = Hang()
    before = other_tasks()
    retrying = lb.retry_async(999, 0.1, lb.RoundRobin(Static([hang])))
    start = time.monotonic()
    with pytest.raises(lb.RetryTimeout) as info:
        await retrying("request")
    elapsed = time.monotonic() - start
    assert 0.1 - 0.002 <= elapsed < 1.0
    assert hang.calls == 1
    assert hang.cancelled == 1
    assert info.value.errors == []  # the cancelled attempt is not counted
    assert info.value.timeout == 0.1
    assert isinstance(info.value, TimeoutError)
    assert other_tasks() == before
    assert lb.remaining() is None


async def test_timeout_after_a_success_and_a_failure() -> None:
    # go-kit's TestRetryTimeout shape: the first call gets its reply, the second never does.
    reply = asyncio.Event()
    outcomes: list[str] = []

    async def endpoint(request: Any) -> Any:
        if request == "fail first":
            outcomes.append("failed")
            raise ConnectionResetError("reset")
        try:
            await reply.wait()
        except asyncio.CancelledError:
            outcomes.append("cancelled")
            raise
        return "reply"

    calls = iter(["fail first", "then hang"])

    async def two_phase(request: Any) -> Any:
        return await endpoint(next(calls) if request == "two phase" else request)

    retrying = lb.retry_async(999, 0.1, lb.RoundRobin(Static([two_phase])))
    reply.set()
    assert await retrying("plain") == "reply"
    reply.clear()
    with pytest.raises(lb.RetryTimeout) as info:
        await retrying("two phase")
    assert outcomes == ["failed", "cancelled"]
    assert [str(error) for error in info.value.errors] == ["reset"]


async def test_outer_cancel_propagates_during_an_attempt() -> None:
    hang = Hang()
    retrying = lb.retry_async(3, 30.0, lb.RoundRobin(Static([hang])))
    task = start(retrying, "request")
    await hang.entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert hang.cancelled == 1
    assert hang.calls == 1  # a cancel is not a failure to retry


async def test_outer_cancel_propagates_during_a_wait() -> None:
    failures = 0

    async def endpoint(request: Any) -> Any:
        nonlocal failures
        failures += 1
        raise ValueError("down")

    retrying = lb.retry_async(3, 30.0, lb.RoundRobin(Static([endpoint])),
                              wait=tenacity.wait_fixed(20))
    task = start(retrying, "request")
    await async_wait_for(lambda: failures == 1, what="first attempt")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert failures == 1


async def test_outer_timeout_is_not_mistaken_for_the_retry_deadline() -> None:
    hang = Hang()
    retrying = lb.retry_async(3, 30.0, lb.RoundRobin(Static([hang])))
    with pytest.raises(TimeoutError) as info:
        async with asyncio.timeout(0.05):
            await retrying("request")
    assert not isinstance(info.value, lb.RetryTimeout)
    assert hang.cancelled == 1


async def test_no_task_left_behind() -> None:
    before = other_tasks()
    flaky_calls = 0

    async def flaky(request: Any) -> Any:
        nonlocal flaky_calls
        flaky_calls += 1
        await asyncio.sleep(0)
        if flaky_calls % 2:
            raise ConnectionRefusedError("refused")
        return "ok"

    async def good(request: Any) -> Any:
        await asyncio.sleep(0)
        return "ok"

    retrying = lb.retry_async(3, 2.0, lb.RoundRobin(Static([flaky, good])),
                              wait=tenacity.wait_fixed(0.001))
    results = await asyncio.gather(*(retrying(n) for n in range(20)))
    assert results == ["ok"] * 20
    hanging = lb.retry_async(2, 0.05, lb.RoundRobin(Static([Hang()])))
    with pytest.raises(lb.RetryTimeout):
        await hanging("request")
    assert other_tasks() == before


async def test_concurrent_calls_have_their_own_deadline_and_exclusions() -> None:
    observed: list[tuple[float, float | None]] = []

    def make(name: str) -> Endpoint:
        async def endpoint(request: tuple[int, float]) -> tuple[str, int]:
            n, timeout = request
            observed.append((timeout, lb.remaining()))
            await asyncio.sleep(0.001 * (n % 3))  # interleave the calls
            observed.append((timeout, lb.remaining()))
            if name == "a":
                raise ValueError(f"a down for {n}")
            return name, n

        endpoint.__name__ = name
        return endpoint

    balancer = lb.RoundRobin(Static([make("a"), make("b")]))
    calls = {timeout: lb.retry_async(2, timeout, balancer) for timeout in (10.0, 20.0, 30.0)}
    requests = [(n, 10.0 * (1 + n % 3)) for n in range(30)]
    results = await asyncio.gather(*(calls[t]((n, t)) for n, t in requests))
    assert results == [("b", n) for n, _ in requests]  # a never picked twice in a call
    for timeout, left in observed:
        assert left is not None
        assert timeout - 5.0 < left <= timeout
    assert lb.remaining() is None


async def test_endpointer_over_memory_registry() -> None:
    registry = sd.MemoryRegistry()
    closed: list[str] = []
    refusing: set[str] = set()

    class Echo:
        """An async endpoint for one instance, with an ``aclose()``."""

        def __init__(self, instance: str) -> None:
            self.instance = instance

        async def __call__(self, request: Any) -> tuple[str, Any]:
            await asyncio.sleep(0)
            if self.instance in refusing:
                raise ConnectionRefusedError(f"{self.instance} refused")
            return self.instance, request

        async def aclose(self) -> None:
            closed.append(self.instance)

    instances = ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]
    registrars = [registry.registrar("greeter", instance) for instance in instances]
    for registrar in registrars:
        registrar.register()
    before = other_tasks()
    with registry.instancer("greeter") as instancer:
        async with sd.Endpointer(instancer, Echo) as endpointer:
            outlier_detection = lb.OutlierDetection(base_ejection_time=30.0,
                                                    max_ejection_time=60.0)
            retrying = lb.retry_async(3, 2.0, lb.RoundRobin(
                endpointer, outlier_detection=outlier_detection))
            answers = [await retrying(n) for n in range(6)]
            assert answers == [(instances[n % 3], n) for n in range(6)]

            registrars[1].deregister()
            await async_wait_for(lambda: instances[1] in closed, what="endpoint closed")
            answers = [await retrying(n) for n in range(4)]
            assert {instance for instance, _ in answers} == {instances[0], instances[2]}

            refusing.add(instances[2])
            answers = [await retrying(n) for n in range(6)]
            assert [request for _, request in answers] == list(range(6))
            assert {instance for instance, _ in answers} == {instances[0]}

            registrars[1].register()
            await async_wait_for(lambda: len(endpointer.endpoints()) == 3, what="re-registered")
            answers = [await retrying(n) for n in range(6)]
            assert Counter(instance for instance, _ in answers) == Counter(
                {instances[0]: 3, instances[1]: 3}
            )  # instance 3 is still ejected
    # Instance 2's first endpoint closed when it left, its second one at close.
    assert sorted(closed) == sorted([*instances, instances[1]])
    assert other_tasks() == before
    for registrar in registrars:
        registrar.deregister()
