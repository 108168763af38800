"""Happy-path overhead of kitsd's wrappers, as ratios against a baseline measured in the same run.

    python -m bench.bench_happy_path

Each figure is the median of several repeats of many calls of a trivial endpoint,
so it shows what the wrapper itself costs per call.  The machines here are small
and noisy: read the ratios, not the absolute nanoseconds.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import timeit
from collections.abc import Awaitable, Callable
from typing import Any

import pybreaker
import tenacity

from kitsd import breaker, lb, sd

REPEATS = 7
NUMBER = 20_000
ASYNC_REPEATS = 61


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
    asyncio.run(async_rows())


async def async_rows() -> None:
    """The asyncio side: each endpoint suspends once, as a real request does, so the
    loop runs between calls (and cleans up cancelled timers) as it would in use."""

    async def numbered(request: Any) -> Any:
        await asyncio.sleep(0)
        return request

    endpoints = {f"127.0.0.1:{8000 + i}": numbered for i in range(3)}
    endpointer = sd.Endpointer(sd.FixedInstancer(endpoints), endpoints.__getitem__)
    round_robin = lb.RoundRobin(endpointer)
    retried = lb.retry_async(3, 1.0, round_robin)

    async def with_asyncio_timeout(request: Any) -> Any:
        # What a retry that opens asyncio.timeout per call pays on top of the pick.
        async with asyncio.timeout(1.0):
            return await round_robin.endpoint()(request)

    async def picked(request: Any) -> Any:
        return await round_robin.endpoint()(request)

    rows: list[tuple[str, Callable[[Any], Awaitable[Any]]]] = [
        ("baseline: await endpoint(request)", numbered),
        ("RoundRobin pick + await", picked),
        ("pick + asyncio.timeout (old retry)", with_asyncio_timeout),
        ("lb.retry_async (first attempt ok)", retried),
    ]
    runs: dict[str, list[float]] = {name: [] for name, _ in rows}
    repeats, number = ASYNC_REPEATS, NUMBER // 20
    for _ in range(repeats):
        for name, call in rows:  # short runs in turn, so background load hits every row alike
            start = time.perf_counter()
            for _ in range(number):
                await call(1)
            runs[name].append((time.perf_counter() - start) / number)
    base = statistics.median(runs[rows[0][0]])
    print(f"\nasyncio: {repeats} x {number} awaited calls per row, interleaved; "
          "median (and fastest run)")
    for name, _ in rows:
        seconds = statistics.median(runs[name])
        print(f"  {name:<38} {seconds * 1e9:9.0f} ns   x{seconds / base:6.1f}"
              f"   ({min(runs[name]) * 1e9:.0f} ns)")
    reference = rows[1][0]
    stats: tuple[tuple[Callable[[list[float]], float], str], ...] = (
        (statistics.median, "median"), (min, "fastest"))
    for stat, label in stats:
        overhead = {name: stat(runs[name]) - stat(runs[reference]) for name, _ in rows[2:]}
        print(f"  on top of pick + await ({label}): " + ", ".join(
            f"{name} {ns * 1e9:+.0f} ns" for name, ns in overhead.items()))
    await endpointer.aclose()


if __name__ == "__main__":
    main()
