"""Happy-path overhead of kitsd's wrappers, as ratios against a baseline measured in the same run.

    python -m bench.bench_happy_path

Each figure is the median of several repeats of many calls of a trivial endpoint,
so it shows what the wrapper itself costs per call.  The machines here are small
and noisy: read the ratios, not the absolute nanoseconds.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable
from typing import Any

import pybreaker
import tenacity

import breaker
import lb
import sd

REPEATS = 7
NUMBER = 20_000


def measure(call: Callable[[], Any]) -> float:
    """Median seconds per call."""
    runs = timeit.repeat(call, number=NUMBER, repeat=REPEATS)
    return statistics.median(runs) / NUMBER


def main() -> None:
    def numbered(number: int) -> Callable[[Any], Any]:
        return lambda request: (number, request)

    endpoints = {f"127.0.0.1:{8000 + i}": numbered(i) for i in range(3)}
    endpointer = sd.Endpointer(sd.FixedInstancer(endpoints), endpoints.__getitem__)
    round_robin = lb.RoundRobin(endpointer)
    retried = lb.retry(3, 1.0, round_robin)

    def tenacity_retried(request: object) -> object:
        # What retry would cost if each call went through tenacity's machinery.
        for attempt in tenacity.Retrying(stop=tenacity.stop_after_attempt(3) |
                                         tenacity.stop_after_delay(1.0), reraise=True):
            with attempt:
                return round_robin.endpoint()(request)
        raise AssertionError("unreachable")

    cb = pybreaker.CircuitBreaker(fail_max=5)
    guarded = breaker.circuit_breaker(cb)(retried)
    pybreaker_guarded = pybreaker.CircuitBreaker(fail_max=5)

    first = next(iter(endpoints.values()))
    rows = [
        ("baseline: endpoint(request)", lambda: first(1)),
        ("RoundRobin pick + call", lambda: round_robin.endpoint()(1)),
        ("lb.retry (first attempt succeeds)", lambda: retried(1)),
        ("tenacity.Retrying equivalent", lambda: tenacity_retried(1)),
        ("breaker.circuit_breaker(lb.retry)", lambda: guarded(1)),
        ("pybreaker cb.call(lb.retry)", lambda: pybreaker_guarded.call(retried, 1)),
    ]
    results = [(name, measure(call)) for name, call in rows]
    base = results[0][1]
    print(f"median of {REPEATS} x {NUMBER} calls; ratio against the baseline of this run")
    for name, seconds in results:
        print(f"  {name:<38} {seconds * 1e9:9.0f} ns   x{seconds / base:6.1f}")
    retry_ns = dict(results)["lb.retry (first attempt succeeds)"]
    tenacity_ns = dict(results)["tenacity.Retrying equivalent"]
    print(f"\n  tenacity equivalent / lb.retry: x{tenacity_ns / retry_ns:.1f}")
    endpointer.close()


if __name__ == "__main__":
    main()
