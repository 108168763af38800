"""kitsd.ratelimit: reject at once or wait for a token, sync and async, within the
retry's deadline."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import limits
import pytest

from kitsd import lb, sd
from kitsd.core import observe
from kitsd.core.observe import RateLimited
from kitsd.ratelimit import RateLimitExceeded, rate_limit, wait_decision
from tests.observe.scenarios import UP


def echo(request: Any) -> Any:
    return request


async def aecho(request: Any) -> Any:
    return request


def test_rejects_at_once_past_the_limit() -> None:
    limited = rate_limit("2/minute", name="api")(echo)
    assert limited(1) == 1
    assert limited(2) == 2
    began = time.monotonic()
    with pytest.raises(RateLimitExceeded) as caught:
        limited(3)
    assert time.monotonic() - began < 0.5
    assert caught.value.limiter == "api"
    assert 0 < caught.value.retry_after <= 60
    assert isinstance(caught.value, sd.KitsdError)
    assert observe.outcome_of(caught.value) == "rejected"


def test_waits_for_a_token_when_asked() -> None:
    seen: list[RateLimited] = []
    limited = rate_limit("1/second", name="slow", wait=True)(echo)
    with observe.observing(lambda o: seen.append(o) if isinstance(o, RateLimited) else None):
        began = time.monotonic()
        assert limited(1) == 1
        assert limited(2) == 2  # waits for the first token to expire
        waited = time.monotonic() - began
    assert 0.5 < waited < 3.0
    assert len(seen) == 1
    assert not seen[0].rejected
    assert seen[0].waited > 0.5


def test_a_wait_that_would_overrun_the_retry_deadline_is_rejected_at_once() -> None:
    limited = rate_limit("1/minute", name="api", wait=True)(echo)
    with sd.Endpointer(sd.FixedInstancer([UP]), lambda instance: limited) as endpointer:
        call = lb.retry(1, 0.5, lb.RoundRobin(endpointer), name="api")
        assert call(1) == 1
        began = time.monotonic()
        with pytest.raises(lb.RetryError) as caught:
            call(2)
    assert time.monotonic() - began < 0.4  # no pointless sleep into the deadline
    assert isinstance(caught.value.final, RateLimitExceeded)


def test_max_wait_bounds_the_wait() -> None:
    limited = rate_limit("1/minute", name="api", wait=True, max_wait=0.05)(echo)
    limited(1)
    with pytest.raises(RateLimitExceeded):
        limited(2)


async def test_async_rejects_and_waits() -> None:
    limited = rate_limit("1/minute", name="a")(aecho)
    assert await limited(1) == 1
    with pytest.raises(RateLimitExceeded):
        await limited(2)
    waiting = rate_limit("2/second", name="b", wait=True)(aecho)
    began = time.monotonic()
    assert await asyncio.gather(*(waiting(i) for i in range(3))) == [0, 1, 2]
    assert time.monotonic() - began > 0.5


def test_limiters_with_one_storage_and_name_share_tokens() -> None:
    storage = limits.storage.MemoryStorage()
    first = rate_limit("2/minute", name="shared", storage=storage)(echo)
    second = rate_limit("2/minute", name="shared", storage=storage)(echo)
    first(1)
    second(2)
    with pytest.raises(RateLimitExceeded):
        first(3)


def test_fixed_window_strategy() -> None:
    limited = rate_limit(limits.RateLimitItemPerMinute(1), strategy="fixed-window")(echo)
    limited(1)
    with pytest.raises(RateLimitExceeded):
        limited(2)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"limit": "lots"}, ValueError),
    ({"limit": 5}, TypeError),
    ({"limit": "1/second", "strategy": "leaky"}, ValueError),
    ({"limit": "1/second", "max_wait": -1}, ValueError),
    ({"limit": "1/second", "storage": "nosuch://x"}, ValueError),
    ({"limit": "1/second", "storage": object()}, TypeError),
    ({"limit": "1/second", "name": ""}, ValueError),
    # limits that can never grant, or not as written (issue 16.10)
    ({"limit": "0/second"}, ValueError),
    ({"limit": "1/0second"}, ValueError),
    ({"limit": "1 per 0 minutes"}, ValueError),
    ({"limit": "1/100000000 years"}, ValueError),
    ({"limit": "1/second; 5/minute"}, ValueError),  # limits.parse kept only the first
    ({"limit": limits.RateLimitItemPerSecond(0)}, ValueError),
    ({"limit": "1/second", "wait": "no"}, TypeError),
    ({"limit": "1/second", "wait": 1}, TypeError),
    ({"limit": "1/second", "max_wait": float("inf")}, ValueError),
    ({"limit": "1/second", "max_wait": float("nan")}, ValueError),
    ({"limit": "1/second", "max_wait": None}, TypeError),
    ({"limit": "1/second", "max_wait": True}, TypeError),
])
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        rate_limit(**kwargs)


@pytest.mark.parametrize("limit", ["1/year", "3 per 2 hours", "100/second"])
def test_limits_that_grant_are_accepted(limit: str) -> None:
    assert rate_limit(limit)(echo)(1) == 1


def test_a_wait_is_bounded_by_max_wait_by_default() -> None:
    # 1/day with wait=True: the next token is a day away, past the default maximum
    # (60 s), so the call is refused at once instead of sleeping (or overflowing sleep).
    limited = rate_limit("1/day", name="daily", wait=True)(echo)
    limited(1)
    began = time.monotonic()
    with pytest.raises(RateLimitExceeded) as caught:
        limited(2)
    assert time.monotonic() - began < 0.5
    assert caught.value.retry_after > 3600


async def test_an_async_wait_is_bounded_by_max_wait_by_default() -> None:
    limited = rate_limit("1/day", name="daily-async", wait=True)(aecho)
    await limited(1)
    with pytest.raises(RateLimitExceeded):
        await asyncio.wait_for(limited(2), 1.0)


def test_storage_of_the_wrong_kind_is_refused_when_wrapping() -> None:
    middleware = rate_limit("1/second", storage=limits.storage.MemoryStorage())
    with pytest.raises(TypeError, match="async"):
        middleware(aecho)


@pytest.mark.parametrize(("reset_at", "waited", "budget", "max_wait", "expected"), [
    (10.5, 0.0, None, None, 0.5),
    (10.5, 0.0, 0.4, None, None),
    (10.5, 0.0, 0.6, None, 0.5),
    (10.5, 0.2, None, 0.6, None),
    (9.0, 0.0, None, None, 0.001),
])
def test_wait_decision(reset_at: float, waited: float, budget: float | None,
                       max_wait: float | None, expected: float | None) -> None:
    got = wait_decision(reset_at, 10.0, waited=waited, budget=budget, max_wait=max_wait)
    assert got == (None if expected is None else pytest.approx(expected))
