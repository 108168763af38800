"""Throughput of breaker-guarded calls from many threads: kitsd vs pybreaker's ``cb.call``.

    python -m bench.bench_breaker_concurrency

pybreaker holds its lock for the whole guarded call, so threads calling through one
breaker take turns; kitsd's breaker holds no lock while the endpoint runs (and
none at all on a closed breaker without listeners; with listeners, a short one
around their callbacks).  The endpoint sleeps 2 ms, like a quick network call.
Medians of several runs; the ratio is what matters on a small, noisy machine.
For the per-call cost of a breaker see ``bench/bench_breaker_overhead.py``.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import pybreaker

from kitsd import breaker

THREADS = 8
CALLS_PER_THREAD = 50
RUNS = 5


def io_endpoint(request: Any) -> Any:
    time.sleep(0.002)
    return request


def throughput(call: Callable[[Any], Any]) -> float:
    """Calls per second with ``THREADS`` threads calling at once."""
    start_line = threading.Barrier(THREADS + 1)

    def worker() -> None:
        start_line.wait()
        for n in range(CALLS_PER_THREAD):
            call(n)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    start_line.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return THREADS * CALLS_PER_THREAD / (time.perf_counter() - began)


def main() -> None:
    ours = breaker.circuit_breaker(pybreaker.CircuitBreaker(fail_max=5))(io_endpoint)
    heard = breaker.circuit_breaker(
        pybreaker.CircuitBreaker(fail_max=5, listeners=[pybreaker.CircuitBreakerListener()])
    )(io_endpoint)
    theirs_cb = pybreaker.CircuitBreaker(fail_max=5)

    def theirs(request: Any) -> Any:
        return theirs_cb.call(io_endpoint, request)

    rows: list[tuple[str, Callable[[Any], Any]]] = [
        ("baseline: no breaker", io_endpoint),
        ("kitsd breaker.circuit_breaker", ours),
        ("kitsd, with a listener", heard),
        ("pybreaker cb.call", theirs),
    ]
    results = [(name, statistics.median(throughput(call) for _ in range(RUNS)))
               for name, call in rows]
    base = results[0][1]
    print(f"{THREADS} threads x {CALLS_PER_THREAD} calls of a 2 ms endpoint, median of {RUNS} runs")
    for name, rate in results:
        print(f"  {name:<32} {rate:8.0f} calls/s   x{rate / base:5.2f} of baseline")
    print(f"\n  kitsd / pybreaker throughput: x{results[1][1] / results[-1][1]:.1f}")


if __name__ == "__main__":
    main()
