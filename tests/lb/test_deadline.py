"""lb.deadline: a per-call deadline for a retrying endpoint built once (issue 16.14).

Each scenario runs on both drivers: the sync one, and the asyncio one with the
``with lb.deadline(...)`` block inside the task (a deadline is a context
variable: it follows the code into the tasks it starts).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from kitsd import lb, sd
from tests.lb.test_retry import Static

Run = Callable[..., Any]


def hang_sync(request: Any) -> Any:
    """Hangs until its attempt's deadline (it bounds itself by lb.remaining())."""
    left = lb.remaining()
    assert left is not None
    threading.Event().wait(left)
    raise TimeoutError("no reply")


async def hang_async(request: Any) -> Any:
    await asyncio.sleep(30)  # the asyncio driver cancels it at the deadline
    raise AssertionError("not cancelled")


def run(kind: str, timeout: float, endpoints: list[Any] | None = None,
        deadlines: tuple[float, ...] = (), **options: Any) -> tuple[Any, float]:
    """One call through ``lb.retry``/``lb.retry_async`` (timeout ``timeout``) made
    inside nested ``lb.deadline`` blocks; returns (outcome or error, seconds)."""
    if endpoints is None:
        endpoints = [hang_sync if kind == "sync" else hang_async]
    balancer = lb.RoundRobin(Static(endpoints), outlier_detection=None)

    def nested(call: Callable[[], Any]) -> Any:
        if not deadlines:
            return call()
        with lb.deadline(deadlines[0]):
            if len(deadlines) == 1:
                return call()
            with lb.deadline(deadlines[1]):
                return call()

    began = time.monotonic()
    if kind == "sync":
        retrying = lb.retry(1000, timeout, balancer, **options)
        try:
            outcome: Any = nested(lambda: retrying("request"))
        except Exception as error:  # the outcome is what the test checks
            outcome = error
        finally:
            close = getattr(retrying, "close", None)
            if close is not None:
                close()
        return outcome, time.monotonic() - began

    async def main() -> Any:
        retrying = lb.retry_async(1000, timeout, balancer, **options)
        if not deadlines:
            return await retrying("request")
        with lb.deadline(deadlines[0]):
            if len(deadlines) == 1:
                return await retrying("request")
            with lb.deadline(deadlines[1]):
                return await retrying("request")

    try:
        outcome = asyncio.run(main())
    except Exception as error:  # the outcome is what the test checks
        outcome = error
    return outcome, time.monotonic() - began


KINDS = ["sync", "async"]
HEDGE = {"hedge": lb.Hedge(delay=0.01)}


@pytest.mark.parametrize("options", [{}, HEDGE], ids=["plain", "hedged"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_shorter_deadline_bounds_the_call(kind: str, options: dict[str, Any]) -> None:
    outcome, took = run(kind, 30.0, deadlines=(0.2,), **options)
    assert isinstance(outcome, lb.RetryTimeout)
    assert 0.15 <= took < 5.0  # not the endpoint's 30 s
    assert outcome.timeout == pytest.approx(0.2, abs=0.05)


@pytest.mark.parametrize("options", [{}, HEDGE], ids=["plain", "hedged"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_longer_deadline_does_not_extend_the_timeout(kind: str, options: dict[str, Any]) -> None:
    outcome, took = run(kind, 0.2, deadlines=(30.0,), **options)
    assert isinstance(outcome, lb.RetryTimeout)
    assert took < 5.0
    assert outcome.timeout == 0.2


@pytest.mark.parametrize("kind", KINDS)
def test_nested_deadlines_only_shorten(kind: str) -> None:
    outcome, took = run(kind, 30.0, deadlines=(0.2, 30.0))
    assert isinstance(outcome, lb.RetryTimeout)
    assert took < 5.0
    outcome, took = run(kind, 30.0, deadlines=(30.0, 0.2))
    assert isinstance(outcome, lb.RetryTimeout)
    assert took < 5.0


@pytest.mark.parametrize("options", [{}, HEDGE], ids=["plain", "hedged"])
@pytest.mark.parametrize("seconds", [0.0, -1.0])
@pytest.mark.parametrize("kind", KINDS)
def test_an_expired_deadline_makes_no_attempt(kind: str, seconds: float,
                                              options: dict[str, Any]) -> None:
    calls: list[Any] = []

    def sync(request: Any) -> Any:
        calls.append(request)
        return "answer"

    async def async_(request: Any) -> Any:
        calls.append(request)
        return "answer"

    outcome, _ = run(kind, 30.0, [sync if kind == "sync" else async_], deadlines=(seconds,),
                     **options)
    assert isinstance(outcome, lb.RetryTimeout)
    assert outcome.timeout == 0.0
    assert outcome.errors == []
    assert calls == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_call_within_the_deadline_is_unaffected(kind: str) -> None:
    def sync(request: Any) -> Any:
        return lb.remaining()

    async def async_(request: Any) -> Any:
        return lb.remaining()

    left, _ = run(kind, 30.0, [sync if kind == "sync" else async_], deadlines=(5.0,))
    assert 4.0 < left <= 5.0  # the attempt sees the call's deadline, the shorter one


def test_remaining_inside_a_block_outside_any_call() -> None:
    assert lb.remaining() is None
    with lb.deadline(5.0) as scope:
        left = lb.remaining()
        assert left is not None
        assert 4.0 < left <= 5.0
        assert scope.at is not None
        with lb.deadline(60.0):
            inner = lb.remaining()
            assert inner is not None
            assert inner <= left
    assert lb.remaining() is None
    assert scope.at is None


def test_deadlines_propagate_into_calls_made_inside_an_attempt() -> None:
    """A retried call made by an endpoint (a service calling another) is bounded by
    the attempt that makes it."""
    inner = lb.retry(1000, 30.0, lb.RoundRobin(Static([hang_sync]), outlier_detection=None))

    def outer_endpoint(request: Any) -> Any:
        return inner(request)

    outer = lb.retry(1, 0.2, lb.RoundRobin(Static([outer_endpoint])))
    began = time.monotonic()
    with pytest.raises(lb.RetryTimeout) as caught:
        outer("request")
    assert time.monotonic() - began < 5.0
    inner_error = caught.value.errors[0]  # the inner call gave up at the outer's deadline
    assert isinstance(inner_error, lb.RetryTimeout)
    assert inner_error.timeout < 0.25


def test_async_calls_with_deadlines_out_of_order_each_end_on_time() -> None:
    """The asyncio driver keeps the deadlines of calls through one endpoint in a
    queue; a call given an earlier deadline than one already running must not
    wait behind it."""
    async def main() -> list[float]:
        retrying = lb.retry_async(1000, 30.0, lb.RoundRobin(Static([hang_async])))
        ended: list[float] = []
        began = time.monotonic()

        async def call(seconds: float | None) -> None:
            try:
                if seconds is None:
                    await retrying("request")
                else:
                    with lb.deadline(seconds):
                        await retrying("request")
            except lb.RetryTimeout:
                ended.append(time.monotonic() - began)

        slow = asyncio.create_task(call(3.0))
        await asyncio.sleep(0.01)
        quick = [asyncio.create_task(call(0.2)) for _ in range(3)]
        await asyncio.gather(*quick)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        return ended

    ended = asyncio.run(main())
    assert len(ended) == 3
    assert all(took < 2.5 for took in ended)  # not behind the 3 s one


def test_settings_are_checked() -> None:
    with pytest.raises(TypeError, match="seconds"):
        lb.deadline("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seconds"):
        lb.deadline(True)
    for bad in (math.nan, math.inf):
        with pytest.raises(sd.MisuseError, match="seconds"):
            lb.deadline(bad)


def test_a_block_is_reusable_but_not_reentrant() -> None:
    scope = lb.deadline(1.0)
    with scope, pytest.raises(RuntimeError, match="already entered"), scope:
        pass
    with scope:
        assert lb.remaining() is not None
    assert lb.remaining() is None
    assert repr(scope) == "lb.deadline(1.0)"
