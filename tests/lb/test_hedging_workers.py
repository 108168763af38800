"""The hedging pool lets its threads go (lb.hedging.Workers): a burst of hung
instances grew a sync hedged endpoint's ThreadPoolExecutor to ``max_workers``
threads that stayed for as long as the endpoint lived (a chaos run through a hedged
transport: +2 to +4 threads between its first phase and its last)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from kitsd import lb
from kitsd.lb import hedging
from kitsd.lb.hedging import Workers
from tests.helpers import wait_for
from tests.lb.test_retry import Static


def _hedge_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name.startswith("kitsd-hedge"))


def test_threads_grown_by_hung_attempts_end_once_idle(
    monkeypatch: pytest.MonkeyPatch, no_thread_leaks: None
) -> None:
    monkeypatch.setattr(hedging, "IDLE_THREAD_TIMEOUT", 0.3)
    release = threading.Event()

    def hung(request: Any) -> str:
        if request == "stall":
            release.wait(10)
        return "hung"

    source = Static([hung, lambda request: "fast"])
    with lb.retry(2, 5.0, lb.RoundRobin(source), hedge=lb.Hedge(delay=0.005)) as call:
        before = _hedge_threads()
        for _ in range(6):
            assert call("stall") in ("fast", "hung")  # the hedge answers; a loser hangs
        grown = _hedge_threads()
        assert grown > before + 1  # the hung losers each hold a thread
        release.set()
        # the losers land, and their threads (and the spare ones) end once idle
        wait_for(lambda: _hedge_threads() <= 1, timeout=5, what="idle hedge threads to end")
        assert call("quick") in ("fast", "hung")  # a thread comes back on demand


def test_workers_run_in_parallel_up_to_the_bound_and_queue_the_rest() -> None:
    pool = Workers(2, "test-workers", idle=5.0)
    gate = threading.Event()
    started: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> int:
        with lock:
            started.append(n)
        gate.wait(5)
        return n * 10

    futures = [pool.submit(work, n) for n in range(4)]
    wait_for(lambda: len(started) == 2, timeout=5, what="two running")
    time.sleep(0.05)
    assert len(started) == 2
    assert pool.threads == 2
    gate.set()
    assert [future.result(5) for future in futures] == [0, 10, 20, 30]
    pool.shutdown()
    wait_for(lambda: pool.threads == 0, timeout=5, what="threads to end after shutdown")


def test_a_second_submission_does_not_wait_behind_a_busy_thread() -> None:
    """A hedge must not queue behind the attempt it hedges: a free thread is counted
    only until it takes work."""
    pool = Workers(4, "test-workers", idle=5.0)
    gate = threading.Event()
    try:
        pool.submit(lambda: 1).result(5)  # one thread, free again
        busy = pool.submit(gate.wait, 5)
        assert pool.submit(lambda: "second").result(2) == "second"
        assert not busy.done()
    finally:
        gate.set()
        pool.shutdown()


def test_shutdown_cancels_what_has_not_started_and_refuses_more() -> None:
    pool = Workers(1, "test-workers", idle=5.0)
    gate = threading.Event()
    running = pool.submit(gate.wait, 5)
    queued = pool.submit(lambda: "never")
    pool.shutdown()
    assert queued.cancelled()
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(lambda: None)
    gate.set()
    assert running.result(5) is True  # a running call is abandoned, not killed
    wait_for(lambda: pool.threads == 0, timeout=5, what="the thread to end")


def test_errors_reach_the_future() -> None:
    pool = Workers(1, "test-workers", idle=0.1)

    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        pool.submit(fail).result(5)
    wait_for(lambda: pool.threads == 0, timeout=5, what="the idle thread to end")


def test_spare_threads_end_under_a_steady_trickle_of_work() -> None:
    """The thread freed last takes the next piece of work, so under a steady load the
    spare threads of a burst end (woken in turn, FIFO, all six stayed)."""
    pool = Workers(8, "test-workers", idle=0.4)
    gate = threading.Event()
    try:
        burst = [pool.submit(gate.wait, 5) for _ in range(6)]
        assert pool.threads == 6
        gate.set()
        for future in burst:
            future.result(5)
        deadline = time.monotonic() + 5
        while pool.threads > 1 and time.monotonic() < deadline:
            pool.submit(lambda: None).result(5)  # one at a time, every 20 ms
            time.sleep(0.02)
        assert pool.threads == 1
    finally:
        pool.shutdown()
