"""What one ``sd.http`` endpoint costs to build and keep, at 1,000 instances.

    python -m bench.bench_http_memory [--instances 1000]

Each row runs in a fresh interpreter, so that memory freed by one row does not
flatter the next.  A row builds ``--instances`` endpoints (distinct instances)
and reports, per endpoint:

* ``python`` -- bytes allocated by Python code and kept (``tracemalloc``);
* ``rss``    -- growth of the resident set, which also counts what OpenSSL
  allocates for a TLS context (``tracemalloc`` does not see that: a loaded
  certificate bundle is ~800 KiB of C memory);
* ``build``  -- wall time to build one (median of five batches).

"called" rows make one call per endpoint to a closed local port: the call
makes the endpoint's client (and its TLS settings) and fails to connect, so no
connection is kept.  The baseline is what ``sd.http`` did before: an eager
``httpx.Client(base_url=...)`` per instance, each with its own TLS context
loaded from the certificate bundle.  Target: <= 20 KiB per endpoint, no
certificate load per instance.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import httpx

from kitsd import sd

TARGET_KIB = 20.0
BATCHES = 5

ROWS = {
    "before": "eager httpx.Client per instance (sd.http before)",
    "http": "sd.http.factory, not called",
    "http-called": "sd.http.factory, called once",
    "https-called": "sd.http.factory(https), called once",
    "async": "sd.http.async_factory, not called",
    "async-called": "sd.http.async_factory, called once",
}


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _builder(row: str, port: int) -> tuple[Callable[[str], Any], Callable[[list[Any]], None]]:
    """(build one endpoint for an instance, make one call on each of a list)."""

    def no_args(_request: object) -> dict[str, Any]:
        return {}

    def as_json(response: httpx.Response) -> Any:
        return response.json()

    def no_calls(_endpoints: list[Any]) -> None:
        pass

    def call_each(endpoints: list[Any]) -> None:
        for endpoint in endpoints:
            with contextlib.suppress(httpx.ConnectError):
                endpoint(None)

    def call_each_async(endpoints: list[Any]) -> None:
        async def run() -> None:
            for endpoint in endpoints:
                with contextlib.suppress(httpx.ConnectError):
                    await endpoint(None)

        asyncio.run(run())

    if row == "before":
        return (lambda instance: httpx.Client(base_url=f"http://{instance}")), no_calls
    scheme = "https" if row.startswith("https") else "http"
    if row.startswith("async"):
        make_async = sd.http.async_factory("GET", "/x", encode=no_args, decode=as_json)
        return make_async, call_each_async if row.endswith("called") else no_calls
    make = sd.http.factory("GET", "/x", encode=no_args, decode=as_json, scheme=scheme)
    return make, call_each if row.endswith("called") else no_calls


def _measure(row: str, count: int) -> dict[str, float]:
    loads = 0
    original = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        nonlocal loads
        loads += 1
        original(self, *args, **kwargs)

    ssl.SSLContext.load_verify_locations = counting  # type: ignore[method-assign]
    port = _closed_port()
    build, call = _builder(row, port)  # the factory: its one-off TLS set-up counts too
    instances = [f"127.{n // 250}.{n % 250}.1:{port}" for n in range(count)]

    # Time: BATCHES batches of count/BATCHES endpoints each, kept alive together.
    gc.collect()
    rss_before = _rss()
    kept: list[Any] = []
    per_batch = max(1, count // BATCHES)
    times = []
    for start in range(0, count, per_batch):
        batch = instances[start:start + per_batch]
        began = time.perf_counter()
        made = [build(instance) for instance in batch]
        times.append((time.perf_counter() - began) / len(batch))
        kept.extend(made)
    began = time.perf_counter()
    call(kept)
    first_call = (time.perf_counter() - began) / count
    gc.collect()
    rss = (_rss() - rss_before) / count
    loads_per_endpoint = loads / count
    for endpoint in kept:
        closing = getattr(endpoint, "close", None)
        if closing is not None:
            closing()
    kept.clear()
    gc.collect()

    # Python allocations, traced on a second, fresh set.
    tracemalloc.start()
    made = [build(instance) for instance in instances]
    call(made)
    gc.collect()
    python_bytes = tracemalloc.get_traced_memory()[0] / count
    tracemalloc.stop()
    return {
        "python": python_bytes,
        "rss": rss,
        "build": statistics.median(times),
        "first_call": first_call,
        "loads": loads_per_endpoint,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--row", choices=sorted(ROWS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:  # a child: measure one row, print it as JSON
        print(json.dumps(_measure(args.row, args.instances)))
        return
    results = {}
    for row in ROWS:
        child = subprocess.run(  # noqa: S603 - this very script, by its own interpreter
            [sys.executable, "-m", "bench.bench_http_memory", "--row", row,
             "--instances", str(args.instances)],
            capture_output=True, text=True, check=True,
        )
        results[row] = json.loads(child.stdout.splitlines()[-1])
    before = results["before"]
    print(f"{args.instances} endpoints per row, each row in a fresh interpreter; per endpoint:")
    print(f"  {'':<46} {'python':>10} {'rss':>10} {'build':>10} {'1st call':>10}"
          f" {'cert loads':>10}")
    for row, label in ROWS.items():
        figures = results[row]
        first_call = f"{figures['first_call'] * 1e6:7.0f} us" if "called" in row else " " * 10
        print(
            f"  {label:<46} {figures['python'] / 1024:6.1f} KiB {figures['rss'] / 1024:6.1f} KiB"
            f" {figures['build'] * 1e6:7.0f} us {first_call} {figures['loads']:10.3f}"
        )
    print("  (1st call: makes the client, then a refused connect to a closed local port)")
    print(f"\n  target: <= {TARGET_KIB:.0f} KiB per endpoint (python and rss), no certificate "
          "load per instance")
    for row in ("http", "http-called", "https-called", "async", "async-called"):
        figures = results[row]
        worst = max(figures["python"], figures["rss"]) / 1024
        verdict = "met" if worst <= TARGET_KIB and figures["loads"] < 0.01 else "MISSED"
        print(
            f"  {ROWS[row]:<46} {worst:6.1f} KiB  {verdict};  vs before: memory"
            f" x{max(before['rss'], before['python']) / max(worst * 1024, 1):.0f} less,"
            f" build x{before['build'] / figures['build']:.0f} faster"
        )


if __name__ == "__main__":
    main()
