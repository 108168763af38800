"""lb.timer.DeadlineTimer: one loop timer cancels many calls at their deadline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kitsd import lb
from kitsd.lb.timer import DeadlineTimer
from tests.lb.sources import Static


async def test_only_the_calls_past_their_deadline_are_cancelled() -> None:
    timer = DeadlineTimer(asyncio.get_running_loop(), 0.05)
    outcomes: dict[int, str] = {}

    async def call(n: int, duration: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        attempt = timer.start(task)
        try:
            await asyncio.sleep(duration)
        except asyncio.CancelledError:
            outcomes[n] = "timeout" if attempt.finish(cancelled=True) else "cancelled"
            return
        finally:
            attempt.finish(cancelled=False)
        outcomes[n] = "done"

    tasks = [asyncio.create_task(call(n, 0.5 if n % 3 == 0 else 0.0)) for n in range(12)]
    await asyncio.gather(*tasks)
    assert outcomes == {n: "timeout" if n % 3 == 0 else "done" for n in range(12)}
    assert all(not task.cancelled() for task in tasks)
    assert all(task.cancelling() == 0 for task in tasks)  # the cancel requests were undone


async def test_finished_calls_are_not_kept_alive() -> None:
    # Finished calls wait in the queue until the timer fires; they must not hold
    # their task (and with it the response) meanwhile.
    timer = DeadlineTimer(asyncio.get_running_loop(), 30.0)

    async def call() -> None:
        task = asyncio.current_task()
        assert task is not None
        timer.start(task).finish(cancelled=False)

    await asyncio.gather(*(asyncio.create_task(call()) for _ in range(5)))
    queued = list(timer._queue)
    assert len(queued) == 5
    assert [attempt.task for attempt in queued] == [None] * 5


def test_a_retrying_endpoint_works_on_successive_loops() -> None:
    # The timer is per loop: a retrying endpoint used under asyncio.run twice (or
    # from two threads' loops) arms its deadline on the loop it is awaited on.
    class Hang:
        async def __call__(self, request: Any) -> Any:
            await asyncio.Event().wait()

    async def quick(request: Any) -> Any:
        return request

    retrying = lb.retry_async(2, 0.05, lb.RoundRobin(Static([Hang()])))
    fast = lb.retry_async(2, 0.05, lb.RoundRobin(Static([quick])))
    for _ in range(2):
        with pytest.raises(lb.RetryTimeout):
            asyncio.run(retrying("request"))
        assert asyncio.run(fast("ok")) == "ok"


async def test_a_success_after_a_long_idle_period_still_times_out_later() -> None:
    # The timer re-arms for the oldest unfinished call after dropping finished ones.
    release = asyncio.Event()

    async def endpoint(request: Any) -> Any:
        if request == "hang":
            await release.wait()
        return request

    retrying = lb.retry_async(1, 0.1, lb.RoundRobin(Static([endpoint])))
    assert await retrying("ok") == "ok"
    await asyncio.sleep(0.15)  # the timer fires with only finished calls queued
    assert await retrying("ok") == "ok"
    with pytest.raises(lb.RetryTimeout):
        await retrying("hang")
