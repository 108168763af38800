"""Per-call cost of a breaker on the happy path (closed breaker, the endpoint succeeds).

    python -m bench.bench_breaker_overhead

Each row is the median, over several repeats, of the time per call of a trivial
endpoint, with the overhead over the bare endpoint measured in the same run.  The
machines here are small and noisy: read the overheads and ratios, not the exact
nanoseconds.  Rows: kitsd's ``breaker.circuit_breaker`` without and with a
listener, pybreaker's own ``cb.call`` for comparison, and the async twins.
"""

from __future__ import annotations

import asyncio
import statistics
import timeit
from collections.abc import Callable
from typing import Any

import pybreaker

from kitsd import breaker

REPEATS = 7
NUMBER = 50_000


def measure(call: Callable[[], Any]) -> float:
    """Median nanoseconds per call."""
    runs = timeit.repeat(call, number=NUMBER, repeat=REPEATS)
    return statistics.median(runs) / NUMBER * 1e9


def measure_async(make: Callable[[], Any]) -> float:
    """Median nanoseconds per awaited call, ``NUMBER`` awaits in one coroutine."""

    async def loop() -> None:
        for _ in range(NUMBER):
            await make()

    def run() -> None:
        asyncio.run(loop())

    # asyncio.run's own set-up is amortised over NUMBER calls (and is in the baseline).
    runs = timeit.repeat(run, number=1, repeat=REPEATS)
    return statistics.median(runs) / NUMBER * 1e9


class Counting(pybreaker.CircuitBreakerListener):
    """A typical monitoring listener: counts outcomes."""

    def __init__(self) -> None:
        self.successes = 0

    def success(self, cb: pybreaker.CircuitBreaker) -> None:
        self.successes += 1


def endpoint(request: Any) -> Any:
    return request


async def async_endpoint(request: Any) -> Any:
    return request


def main() -> None:
    plain = breaker.circuit_breaker(pybreaker.CircuitBreaker(fail_max=5))(endpoint)
    heard = breaker.circuit_breaker(
        pybreaker.CircuitBreaker(fail_max=5, listeners=[Counting()])
    )(endpoint)
    theirs = pybreaker.CircuitBreaker(fail_max=5)
    async_plain = breaker.circuit_breaker(pybreaker.CircuitBreaker(fail_max=5))(async_endpoint)

    sync_rows: list[tuple[str, Callable[[], Any]]] = [
        ("baseline: endpoint(request)", lambda: endpoint(1)),
        ("kitsd circuit_breaker, no listener", lambda: plain(1)),
        ("kitsd circuit_breaker, one listener", lambda: heard(1)),
        ("pybreaker cb.call", lambda: theirs.call(endpoint, 1)),
    ]
    async_rows: list[tuple[str, Callable[[], Any]]] = [
        ("baseline: await endpoint(request)", lambda: async_endpoint(1)),
        ("kitsd circuit_breaker (async)", lambda: async_plain(1)),
    ]
    print(f"median of {REPEATS} x {NUMBER} calls; overhead = row - baseline of this run")
    for title, rows, how in (("sync", sync_rows, measure), ("async", async_rows, measure_async)):
        results = [(name, how(call)) for name, call in rows]
        base = results[0][1]
        print(f"{title}:")
        for name, ns in results:
            print(f"  {name:<38} {ns:8.0f} ns/call   overhead {ns - base:7.0f} ns")
        if title == "sync":
            ours, theirs_ns = results[1][1] - base, results[3][1] - base
            print(f"  kitsd overhead / pybreaker cb.call overhead: x{ours / theirs_ns:.2f}")


if __name__ == "__main__":
    main()
