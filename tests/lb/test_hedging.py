"""Hedged requests (issue 9.6): lb.Hedge, LatencyWindow, hedge= on both retry drivers."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from kitsd import lb, sd
from kitsd.lb.hedging_policy import LatencyWindow
from tests.lb.test_retry import Static


def test_settings() -> None:
    with pytest.raises(sd.MisuseError, match="exactly one"):
        lb.Hedge()
    with pytest.raises(sd.MisuseError, match="exactly one"):
        lb.Hedge(delay=0.1, percentile=95)
    with pytest.raises(sd.MisuseError, match="percentile"):
        lb.Hedge(percentile=100)
    with pytest.raises(TypeError, match="delay"):
        lb.Hedge(delay="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="hedge"):
        lb.retry(2, 1.0, lb.RoundRobin(Static([str])), hedge=0.1)  # type: ignore[call-overload]


def test_percentile_delay_follows_observed_latencies() -> None:
    window = LatencyWindow(lb.Hedge(percentile=90, samples=100, min_delay=0.0))
    assert window.delay() == 0.05  # initial_delay until samples arrive
    for n in range(100):
        window.observe(n / 1000)
    assert window.delay() == pytest.approx(0.089)
    fixed = LatencyWindow(lb.Hedge(delay=0.2))
    fixed.observe(5.0)
    assert fixed.delay() == 0.2


class Stalls:
    """Instance ``a`` stalls until released; ``b`` answers at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def sync(self, name: str) -> Any:
        def endpoint(request: Any) -> str:
            with self.lock:
                self.calls.append(name)
            if name == "a" and request != "quick":
                self.release.wait(10)
            return name
        return endpoint


def test_sync_hedge_takes_the_first_answer_and_close_is_prompt(no_thread_leaks: None) -> None:
    stalls = Stalls()
    source = Static([stalls.sync("a"), stalls.sync("b")])
    with lb.retry(2, 5.0, lb.RoundRobin(source), hedge=lb.Hedge(delay=0.02)) as call:
        began = time.monotonic()
        assert call("x") == "b"  # a (first in round robin) stalled; the hedge went to b
        assert time.monotonic() - began < 2.0
        assert stalls.calls == ["a", "b"]
    # closed while `a` still stalls: close() did not wait for it ...
    assert time.monotonic() - began < 2.0
    with pytest.raises(RuntimeError):
        call("x")
    stalls.release.set()  # ... and its thread ends with it (no_thread_leaks)


def test_no_hedge_when_the_answer_comes_in_time() -> None:
    stalls = Stalls()
    source = Static([stalls.sync("a"), stalls.sync("b")])
    with lb.retry(2, 5.0, lb.RoundRobin(source), hedge=lb.Hedge(delay=1.0)) as call:
        assert [call("quick") for _ in range(10)] == ["a", "b"] * 5
    assert len(stalls.calls) == 10


def test_hedges_count_against_the_budget() -> None:
    stalls = Stalls()
    source = Static([stalls.sync("a"), stalls.sync("b")])
    budget = lb.RetryBudget(percent=0.0, min_per_second=0.0, window=10.0)
    call = lb.retry(2, 0.3, lb.RoundRobin(source), hedge=lb.Hedge(delay=0.01), budget=budget)
    try:
        with pytest.raises(lb.RetryTimeout):
            call("x")  # a stalls, no budget for a hedge, the deadline ends it
        assert stalls.calls == ["a"]
    finally:
        stalls.release.set()
        call.close()


def test_both_failing_are_booked_and_retried() -> None:
    def down(request: Any) -> Any:
        time.sleep(0.05)
        raise ConnectionResetError("down")

    source = Static([down, down, lambda request: "c"])
    with lb.retry(3, 5.0, lb.RoundRobin(source, outlier_detection=None),
                  hedge=lb.Hedge(delay=0.01)) as call:
        assert call("x") == "c"
    with lb.retry(2, 5.0, lb.RoundRobin(Static([down, down]), outlier_detection=None),
                  hedge=lb.Hedge(delay=0.01)) as call, pytest.raises(lb.RetryError) as caught:
        call("x")
    assert len(caught.value.errors) == 2


def test_async_hedge_cancels_the_loser() -> None:
    cancelled: list[str] = []

    def make(name: str, stall: bool) -> Any:
        async def endpoint(request: Any) -> str:
            if stall:
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    cancelled.append(name)
                    raise
            return name
        return endpoint

    async def main() -> str:
        source = Static([make("a", True), make("b", False)])
        call = lb.retry_async(2, 5.0, lb.RoundRobin(source), hedge=lb.Hedge(delay=0.02))
        answer = await call("x")
        assert lb.remaining() is None
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []  # the loser is gone, not left running
        return str(answer)

    assert asyncio.run(main()) == "b"
    assert cancelled == ["a"]


def test_async_deadline_cancels_everything() -> None:
    async def stall(request: Any) -> str:
        await asyncio.sleep(10)
        return "late"

    async def main() -> None:
        source = Static([stall, stall])
        call = lb.retry_async(2, 0.2, lb.RoundRobin(source), hedge=lb.Hedge(delay=0.01))
        with pytest.raises(lb.RetryTimeout):
            await call("x")
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    asyncio.run(main())


def test_sync_deadline_bounds_the_call() -> None:
    release = threading.Event()

    def stall(request: Any) -> str:
        release.wait(10)
        return "late"

    call = lb.retry(2, 0.2, lb.RoundRobin(Static([stall, stall])), hedge=lb.Hedge(delay=0.01))
    began = time.monotonic()
    try:
        with pytest.raises(lb.RetryTimeout):
            call("x")
        assert time.monotonic() - began < 2.0
    finally:
        release.set()
        call.close()


def test_hedge_walks_the_consistent_hash_ring() -> None:
    calls: list[str] = []
    release = threading.Event()

    def make(instance: str) -> Any:
        def endpoint(request: Any) -> str:
            calls.append(instance)
            if len(calls) == 1:
                release.wait(10)
            return instance
        return endpoint

    instances = [f"10.0.0.{i}:80" for i in range(1, 5)]
    with sd.Endpointer(sd.FixedInstancer(instances), make) as endpointer:
        balancer = lb.ConsistentHash(endpointer, lambda r: str(r))
        owner = balancer.pick_for("k").instance
        nxt = balancer.pick_for("k", {owner}).instance
        with lb.retry(2, 5.0, balancer, hedge=lb.Hedge(delay=0.02)) as call:
            assert call("k") == nxt
            release.set()
    assert calls == [owner, nxt]


def test_async_aclose_ends_calls_in_flight_and_refuses_later_ones() -> None:
    async def stall(request: Any) -> str:
        await asyncio.sleep(10)
        return "late"

    async def main() -> None:
        call = lb.retry_async(2, 30.0, lb.RoundRobin(Static([stall, stall])),
                              hedge=lb.Hedge(delay=0.01))
        assert isinstance(call, lb.AsyncHedgedEndpoint)
        in_flight = asyncio.create_task(call("x"))
        await asyncio.sleep(0.05)  # both attempts are running
        began = time.monotonic()
        async with call:
            pass  # leaving the block closes it
        with pytest.raises(RuntimeError, match="closed"):
            await in_flight
        assert time.monotonic() - began < 2.0
        with pytest.raises(RuntimeError, match="closed"):
            await call("x")
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    asyncio.run(main())


def test_a_late_loser_is_discarded_and_reported_to_the_balancer() -> None:
    """Threads: the loser lands after the call returned; its answer goes to discard
    and the balancer hears of it (a loser's failure too)."""
    release = threading.Event()
    discarded: list[Any] = []
    reports: list[tuple[str, BaseException | None]] = []

    class Reporting(lb.RoundRobin):
        def report(self, pick: lb.Pick, error: BaseException | None) -> None:
            reports.append((pick.instance, error))
            super().report(pick, error)

    def factory(instance: str) -> Any:
        def endpoint(request: Any) -> str:
            if instance == "10.0.0.1:80":
                release.wait(5)
            return instance
        return endpoint

    with sd.Endpointer(sd.FixedInstancer(["10.0.0.1:80", "10.0.0.2:80"]), factory) as source, \
            lb.retry(2, 5.0, Reporting(source), hedge=lb.Hedge(delay=0.02),
                     discard=discarded.append) as call:
        assert call("x") == "10.0.0.2:80"
        assert reports == [("10.0.0.2:80", None)]
        assert discarded == []
        release.set()
        from tests.helpers import wait_for
        wait_for(lambda: discarded == ["10.0.0.1:80"], what="the loser's answer discarded")
        wait_for(lambda: len(reports) == 2)
    assert reports[1] == ("10.0.0.1:80", None)
