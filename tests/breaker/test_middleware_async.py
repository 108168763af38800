"""The circuit-breaker middleware with async endpoints (twins of test_middleware)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pybreaker
import pytest

from kitsd import breaker
from kitsd.breaker._pybreaker import storage_of
from kitsd.breaker.middleware import AsyncBreakerEndpoint
from kitsd.core.endpoint import close_endpoint, is_async
from tests.breaker.test_middleware import (
    Boom,
    Business,
    Recorder,
    elapse_reset_timeout,
    trip,
)
from tests.helpers import async_wait_for


class AsyncEndpoint:
    """An async endpoint counting its calls; raises ``self.error`` when set, and
    first waits for ``self.gate`` when set (signalling ``self.entered``)."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: BaseException | None = None
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def __call__(self, request: Any) -> Any:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return ("ok", request)


@pytest.fixture(autouse=True)
async def no_task_leaks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    await async_wait_for(
        lambda: not asyncio.all_tasks() - before - {asyncio.current_task()},
        what="tasks to finish",
    )


# --- go-kit's scenario ---------------------------------------------------------


@pytest.mark.parametrize("fail_max", [1, 3, 5])
async def test_opens_after_fail_max_failures_then_short_circuits(fail_max: int) -> None:
    cb = pybreaker.CircuitBreaker(fail_max=fail_max, reset_timeout=60)
    inner = AsyncEndpoint()
    guarded = breaker.circuit_breaker(cb)(inner)

    for i in range(3):
        assert await guarded(i) == ("ok", i)
    assert cb.fail_counter == 0

    inner.error = Boom("down")
    for _ in range(fail_max - 1):
        with pytest.raises(Boom):
            await guarded("x")
        assert cb.current_state == pybreaker.STATE_CLOSED
    with pytest.raises(pybreaker.CircuitBreakerError) as tripped:
        await guarded("x")
    assert tripped.value.__cause__ is inner.error
    assert cb.current_state == pybreaker.STATE_OPEN
    calls_when_open = inner.calls
    assert calls_when_open == 3 + fail_max

    inner.error = None
    for _ in range(10):
        with pytest.raises(pybreaker.CircuitBreakerError, match="still open"):
            await guarded("x")
    assert inner.calls == calls_when_open


async def test_trip_without_new_error_raises_the_original() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=2, throw_new_error_on_trip=False)
    inner = AsyncEndpoint()
    inner.error = Boom("down")
    guarded = breaker.circuit_breaker(cb)(inner)
    with pytest.raises(Boom):
        await guarded(1)
    with pytest.raises(Boom) as raised:
        await guarded(2)
    assert raised.value is inner.error
    assert cb.current_state == pybreaker.STATE_OPEN
    with pytest.raises(pybreaker.CircuitBreakerError):
        await guarded(3)
    assert inner.calls == 2


# --- half-open -----------------------------------------------------------------


async def test_half_open_trial_success_closes() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60)
    trip(cb)
    inner = AsyncEndpoint()
    guarded = breaker.circuit_breaker(cb)(inner)
    with pytest.raises(pybreaker.CircuitBreakerError):
        await guarded(0)
    assert inner.calls == 0

    elapse_reset_timeout(cb)
    assert await guarded(1) == ("ok", 1)
    assert inner.calls == 1
    assert cb.current_state == pybreaker.STATE_CLOSED


async def test_half_open_trial_failure_reopens() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60)
    trip(cb)
    elapse_reset_timeout(cb)
    inner = AsyncEndpoint()
    inner.error = Boom("still down")
    guarded = breaker.circuit_breaker(cb)(inner)
    with pytest.raises(pybreaker.CircuitBreakerError, match="Trial call failed") as raised:
        await guarded(1)
    assert raised.value.__cause__ is inner.error
    assert cb.current_state == pybreaker.STATE_OPEN
    with pytest.raises(pybreaker.CircuitBreakerError, match="still open"):
        await guarded(2)
    assert inner.calls == 1


async def test_reset_timeout_elapses_on_the_real_clock() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=0.05)
    trip(cb)
    opened_at = storage_of(cb).opened_at
    assert opened_at is not None
    guarded = breaker.circuit_breaker(cb)(AsyncEndpoint())
    await async_wait_for(
        lambda: datetime.now(UTC) >= opened_at + timedelta(seconds=0.06),
        what="reset timeout to pass",
    )
    assert await guarded("again") == ("ok", "again")
    assert cb.current_state == pybreaker.STATE_CLOSED


async def test_only_one_half_open_trial_in_flight() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60)
    trip(cb)
    elapse_reset_timeout(cb)
    inner = AsyncEndpoint()
    inner.gate = asyncio.Event()
    guarded = breaker.circuit_breaker(cb)(inner)
    trial = asyncio.create_task(guarded("trial"))
    await asyncio.wait_for(inner.entered.wait(), 5)
    for i in range(5):
        with pytest.raises(pybreaker.CircuitBreakerError, match="half-open trial in progress"):
            await guarded(i)
    assert inner.calls == 1

    inner.gate.set()
    assert await asyncio.wait_for(trial, 5) == ("ok", "trial")
    assert cb.current_state == pybreaker.STATE_CLOSED
    assert await guarded("after") == ("ok", "after")


# --- cancellation --------------------------------------------------------------


async def test_cancellation_is_not_a_failure() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1)
    recorder = Recorder()
    cb.add_listener(recorder)
    inner = AsyncEndpoint()
    inner.gate = asyncio.Event()
    guarded = breaker.circuit_breaker(cb)(inner)
    for _ in range(3):
        inner.entered.clear()
        task = asyncio.create_task(guarded(None))
        await asyncio.wait_for(inner.entered.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert cb.current_state == pybreaker.STATE_CLOSED
    assert cb.fail_counter == 0
    assert [event[0] for event in recorder.events] == ["before_call"] * 3


async def test_timeout_cancelling_the_trial_releases_the_slot() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60)
    trip(cb)
    elapse_reset_timeout(cb)
    counted = cb.fail_counter
    inner = AsyncEndpoint()
    inner.gate = asyncio.Event()  # never set: the trial hangs until cancelled
    guarded = breaker.circuit_breaker(cb)(inner)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(guarded("trial"), 0.01)
    assert cb.current_state == pybreaker.STATE_HALF_OPEN  # no verdict
    assert cb.fail_counter == counted

    inner.gate = None
    assert await guarded("next") == ("ok", "next")  # became the trial
    assert cb.current_state == pybreaker.STATE_CLOSED


async def test_closed_coroutine_releases_the_slot() -> None:
    # A coroutine closed before it finishes gets GeneratorExit at its await.
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60)
    trip(cb)
    elapse_reset_timeout(cb)
    inner = AsyncEndpoint()
    inner.gate = asyncio.Event()
    guarded = breaker.circuit_breaker(cb)(inner)
    coroutine = guarded("trial")
    coroutine.send(None)  # runs up to the endpoint's await
    assert inner.calls == 1
    coroutine.close()
    inner.gate = None
    assert await guarded("next") == ("ok", "next")
    assert cb.current_state == pybreaker.STATE_CLOSED


# --- what counts ---------------------------------------------------------------


@pytest.mark.parametrize(
    "exclude",
    [[Business], [lambda exc: isinstance(exc, Business)]],
    ids=["type", "predicate"],
)
async def test_excluded_errors_are_not_failures(exclude: list[Any]) -> None:
    cb = pybreaker.CircuitBreaker(fail_max=2, exclude=exclude)
    inner = AsyncEndpoint()
    guarded = breaker.circuit_breaker(cb)(inner)
    inner.error = Business("no such user")
    for _ in range(10):
        with pytest.raises(Business):
            await guarded(None)
    assert cb.current_state == pybreaker.STATE_CLOSED
    assert cb.fail_counter == 0

    inner.error = Boom()
    with pytest.raises(Boom):
        await guarded(None)
    assert cb.fail_counter == 1


async def test_listeners_fire() -> None:
    recorder = Recorder()
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60, listeners=[recorder])
    inner = AsyncEndpoint()
    guarded = breaker.circuit_breaker(cb)(inner)
    await guarded("a")
    inner.error = Boom()
    with pytest.raises(pybreaker.CircuitBreakerError):
        await guarded("b")
    elapse_reset_timeout(cb)
    inner.error = None
    await guarded("c")
    assert recorder.events == [
        ("before_call", inner, ("a",)),
        ("success",),
        ("before_call", inner, ("b",)),
        ("failure", "Boom"),
        ("state_change", "closed", "open"),
        ("state_change", "open", "half-open"),
        ("before_call", inner, ("c",)),
        ("state_change", "half-open", "closed"),
        ("success",),
    ]


# --- concurrency ---------------------------------------------------------------


@pytest.mark.parametrize("listeners", [0, 1])
async def test_the_loop_never_waits_for_a_pybreaker_call_in_a_thread(listeners: int) -> None:
    # pybreaker's cb.call holds the breaker's own lock while its function runs; a
    # loop that took that lock to admit a call would stop every task until then.
    cb = pybreaker.CircuitBreaker(fail_max=3, listeners=[Recorder()] * listeners)
    inside, release = threading.Event(), threading.Event()

    def slow() -> str:
        inside.set()
        assert release.wait(5)
        return "slow"

    theirs = threading.Thread(target=cb.call, args=(slow,))
    theirs.start()
    watchdog = threading.Timer(2.0, release.set)  # ends a blocked loop's wait, marking it
    watchdog.start()
    try:
        assert inside.wait(5)
        guarded = breaker.circuit_breaker(cb)(AsyncEndpoint())
        assert await guarded(1) == ("ok", 1)
        failing = AsyncEndpoint()
        failing.error = Boom()
        with pytest.raises(Boom):
            await breaker.circuit_breaker(cb)(failing)(2)
        assert not release.is_set(), "the loop waited for pybreaker's lock"
    finally:
        watchdog.cancel()
        release.set()
        theirs.join(5)
        watchdog.join(5)
    assert not theirs.is_alive()


async def test_calls_are_not_serialised() -> None:
    n = 8
    barrier = asyncio.Barrier(n)
    cb = pybreaker.CircuitBreaker(fail_max=3)

    async def endpoint(request: Any) -> Any:
        await barrier.wait()
        return request

    guarded = breaker.circuit_breaker(cb)(endpoint)
    results = await asyncio.wait_for(asyncio.gather(*(guarded(i) for i in range(n))), 5)
    assert results == list(range(n))


async def test_stale_failure_drives_no_transition() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60)
    slow = AsyncEndpoint()
    slow.gate = asyncio.Event()
    slow.error = Boom("late")
    late = asyncio.create_task(breaker.circuit_breaker(cb)(slow)(None))  # admitted while closed
    await asyncio.wait_for(slow.entered.wait(), 5)
    trip(cb)
    elapse_reset_timeout(cb)
    cb.half_open()
    counted = cb.fail_counter
    slow.gate.set()
    with pytest.raises(Boom):
        await late
    assert cb.current_state == pybreaker.STATE_HALF_OPEN
    assert cb.fail_counter == counted


# --- shape ---------------------------------------------------------------------


async def test_wrapped_async_endpoint_is_async() -> None:
    cb = pybreaker.CircuitBreaker()
    guarded = breaker.circuit_breaker(cb)(AsyncEndpoint())
    assert isinstance(guarded, AsyncBreakerEndpoint)
    assert is_async(guarded)
    assert guarded.breaker is cb

    async def plain(request: Any) -> Any:
        return request

    assert is_async(breaker.circuit_breaker(cb)(plain))
    assert await breaker.circuit_breaker(cb)(plain)(7) == 7


async def test_aclose_is_forwarded() -> None:
    class AsyncClosable(AsyncEndpoint):
        def __init__(self) -> None:
            super().__init__()
            self.closed = 0

        async def aclose(self) -> None:
            self.closed += 1

    inner = AsyncClosable()
    guarded = breaker.circuit_breaker(pybreaker.CircuitBreaker())(inner)
    assert not hasattr(guarded, "close")
    pending = close_endpoint(guarded)  # scheduled on the running loop
    assert isinstance(pending, asyncio.Task)
    await pending
    assert inner.closed == 1

    await guarded.aclose()
    assert inner.closed == 2
    plain = breaker.circuit_breaker(pybreaker.CircuitBreaker())(AsyncEndpoint())
    assert not hasattr(plain, "aclose")
