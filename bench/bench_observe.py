"""What the event seam costs: nothing listening, metrics on, against a baseline of this run.

    python -m bench.bench_observe [--base REV]

1. The happy path of ``lb.retry`` over a trivial endpoint with nobody listening,
   against the retry of ``REV`` (default: ``git merge-base HEAD main``, the code
   before the seam) loaded from git into this process: the two must agree
   within noise.  Also with the Prometheus and the OpenTelemetry observers on.
2. A loopback HTTP call (``sd.http`` endpoint on a local server, through
   ``lb.retry``) with metrics off, Prometheus on, and OpenTelemetry (SDK, metrics
   and spans, no exporter) on: the overhead as a share of the call.

Rows run in short turns, interleaved in a rotating order, so background load and
position effects hit every row alike;
each figure is the median of the turns.  The machines here are small and noisy:
read the ratios, not the absolute nanoseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import prometheus_client

import kitsd.otel
import kitsd.prometheus
import kitsd.sd.http
from kitsd import lb, sd
from kitsd.core import observe
from kitsd.demo_server import DemoInstance

ROOT = Path(__file__).resolve().parent.parent


def base_retry(rev: str) -> ModuleType:
    """``lb/retry.py`` as it was at ``rev``, loaded as a module of its own."""
    source = subprocess.run(["git", "show", f"{rev}:lb/retry.py"], cwd=ROOT, check=True,  # noqa: S603, S607 - git, on our own repository
                            capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("bench_base_retry", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{rev}:lb/retry.py", "exec"), module.__dict__)  # noqa: S102
    return module


def interleaved(rows: list[tuple[str, Callable[[], Any]]], turns: int, number: int,
                setup: dict[str, Callable[[], Callable[[], None]]] | None = None,
                ) -> dict[str, float]:
    """Median seconds per call of each row over ``turns`` short runs taken in turn.
    ``setup[name]()`` runs before the row's turn and returns its teardown."""
    runs: dict[str, list[float]] = {name: [] for name, _ in rows}
    for turn in range(turns):
        shift = turn % len(rows)  # rotate the order: no row always follows the same one
        for name, call in rows[shift:] + rows[:shift]:
            teardown = setup[name]() if setup and name in setup else None
            try:
                start = time.perf_counter()
                for _ in range(number):
                    call()
                runs[name].append((time.perf_counter() - start) / number)
            finally:
                if teardown is not None:
                    teardown()
    return {name: statistics.median(values) for name, values in runs.items()}


def otel_observer(*, spans: bool = True) -> kitsd.otel.OtelObserver:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    return kitsd.otel.OtelObserver(
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
        tracer_provider=TracerProvider(), spans=spans)


def installing(observer: Any) -> Callable[[], Callable[[], None]]:
    def setup() -> Callable[[], None]:
        observe.add_observer(observer)
        return lambda: observe.remove_observer(observer)

    return setup


def happy_path(rev: str) -> None:
    def numbered(number: int) -> Callable[[Any], Any]:
        return lambda request: (number, request)

    endpoints = {f"127.0.0.1:{8000 + i}": numbered(i) for i in range(3)}
    endpointer = sd.Endpointer(sd.FixedInstancer(endpoints), endpoints.__getitem__)
    balancer = lb.RoundRobin(endpointer)
    before = base_retry(rev).retry(3, 1.0, balancer)
    before_again = base_retry(rev).retry(3, 1.0, balancer)
    now = lb.retry(3, 1.0, balancer, name="bench")
    prometheus = kitsd.prometheus.PrometheusObserver(
        prometheus_client.CollectorRegistry())
    rows: list[tuple[str, Callable[[], Any]]] = [
        (f"lb.retry at {rev[:10]} (before the seam)", lambda: before(1)),
        (f"lb.retry at {rev[:10]}, again (noise)", lambda: before_again(1)),
        ("lb.retry now, nothing listening", lambda: now(1)),
        ("lb.retry now, a no-op observer", lambda: now(1)),
        ("lb.retry now, Prometheus", lambda: now(1)),
        ("lb.retry now, OpenTelemetry metrics", lambda: now(1)),
        ("lb.retry now, OpenTelemetry metrics+spans", lambda: now(1)),
    ]
    setup = {rows[3][0]: installing(lambda observation: None),
             rows[4][0]: installing(prometheus),
             rows[5][0]: installing(otel_observer(spans=False)),
             rows[6][0]: installing(otel_observer())}
    turns, number = 41, 2000
    result = interleaved(rows, turns, number, setup)
    base = result[rows[0][0]]
    print(f"happy path: {turns} interleaved turns of {number} calls; median per call")
    for name, _ in rows:
        print(f"  {name:<42} {result[name] * 1e9:8.0f} ns   x{result[name] / base:5.2f}")
    print(f"  nothing listening vs before: {(result[rows[2][0]] - base) * 1e9:+.0f} ns "
          f"({(result[rows[2][0]] / base - 1) * 100:+.1f} %); before vs itself "
          f"{(result[rows[1][0]] / base - 1) * 100:+.1f} %")
    endpointer.close()
    prometheus.close()


async def async_happy_path(rev: str) -> None:
    """``lb.retry_async`` before and after, nothing listening; each endpoint suspends
    once, as a real request does."""

    async def numbered(request: Any) -> Any:
        await asyncio.sleep(0)
        return request

    endpoints = {f"127.0.0.1:{8000 + i}": numbered for i in range(3)}
    endpointer = sd.Endpointer(sd.FixedInstancer(endpoints), endpoints.__getitem__)
    balancer = lb.RoundRobin(endpointer)
    rows = [
        (f"lb.retry_async at {rev[:10]}", base_retry(rev).retry_async(3, 1.0, balancer)),
        (f"lb.retry_async at {rev[:10]}, again (noise)",
         base_retry(rev).retry_async(3, 1.0, balancer)),
        ("lb.retry_async now, nothing listening",
         lb.retry_async(3, 1.0, balancer, name="bench")),
    ]
    runs: dict[str, list[float]] = {name: [] for name, _ in rows}
    turns, number = 61, 1000
    for turn in range(turns):
        shift = turn % len(rows)
        for name, call in rows[shift:] + rows[:shift]:
            start = time.perf_counter()
            for _ in range(number):
                await call(1)
            runs[name].append((time.perf_counter() - start) / number)
    result = {name: statistics.median(values) for name, values in runs.items()}
    base = result[rows[0][0]]
    print(f"\nasyncio happy path: {turns} interleaved turns of {number} calls; median per call")
    for name, _ in rows:
        print(f"  {name:<42} {result[name] * 1e9:8.0f} ns   x{result[name] / base:5.2f}")
    await endpointer.aclose()


def loopback(rev: str) -> None:
    server = DemoInstance()
    factory: Any = sd.http.factory("GET", "/", encode=lambda request: {},
                                   decode=lambda response: response.status_code)
    endpointer = sd.Endpointer(sd.FixedInstancer([server.instance]), factory)
    call = lb.retry(3, 5.0, lb.RoundRobin(endpointer), name="bench")
    before = base_retry(rev).retry(3, 5.0, lb.RoundRobin(endpointer))
    prometheus = kitsd.prometheus.PrometheusObserver(
        prometheus_client.CollectorRegistry())
    for _ in range(200):  # warm the connection and the code paths
        call(None)
    rows: list[tuple[str, Callable[[], Any]]] = [
        (f"loopback HTTP, lb.retry at {rev[:10]}", lambda: before(None)),
        ("loopback HTTP, metrics off", lambda: call(None)),
        ("loopback HTTP, Prometheus on", lambda: call(None)),
        ("loopback HTTP, OpenTelemetry metrics on", lambda: call(None)),
        ("loopback HTTP, OpenTelemetry metrics+spans", lambda: call(None)),
    ]
    setup = {rows[2][0]: installing(prometheus),
             rows[3][0]: installing(otel_observer(spans=False)),
             rows[4][0]: installing(otel_observer())}
    turns, number = 61, 50
    result = interleaved(rows, turns, number, setup)
    off = result[rows[1][0]]
    print(f"\nloopback HTTP: {turns} interleaved turns of {number} calls; median per call")
    for name, _ in rows:
        print(f"  {name:<42} {result[name] * 1e6:8.1f} us   "
              f"{(result[name] / off - 1) * 100:+6.1f} % vs metrics off")
    endpointer.close()
    server.kill()
    prometheus.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default=None, help="git revision before the seam")
    args = parser.parse_args()
    rev = args.base or subprocess.run(
        ["git", "merge-base", "HEAD", "main"], cwd=ROOT, check=True, capture_output=True,  # noqa: S607
        text=True).stdout.strip()
    happy_path(rev)
    asyncio.run(async_happy_path(rev))
    loopback(rev)
    assert observe.HUB.observers == ()


if __name__ == "__main__":
    main()
