"""kitsd.Transport's throughput against plain httpx to one instance, sync and async.

    python -m bench.bench_transport [--calls 200] [--runs 25] [--concurrency 8]

One local instance (``kitsd.demo_server``, in a child process).  Rows, each
against its plain-httpx baseline (``httpx.Client(base_url="http://<instance>")``):

* sequential calls on a kept-alive connection;
* ``--concurrency`` callers at once (threads for sync, tasks for async).

The kitsd rows go through ``httpx.Client(transport=kitsd.Transport(registry),
base_url="http://users")``: service lookup, the default balancer, retry with
its deadline, the forwarded request.  Runs are short and interleaved (each run
measures every row once, in rotating order) so drift on a noisy machine hits
all rows alike; figures are medians; a ratio is the median of the per-run
ratios of requests per second.  Target: transport >= x0.95 of plain httpx's
requests/s, sync and async.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

TARGET = 0.95

_SERVER_SCRIPT = """
import sys
from kitsd.demo_server import DemoInstance
server = DemoInstance()
print(server.instance, flush=True)
sys.stdin.read()
server.kill()
"""


class _ServerProcess:
    """A ``kitsd.demo_server`` instance in a child interpreter, so that its threads
    do not share the client's interpreter lock."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed script
            [sys.executable, "-c", _SERVER_SCRIPT],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self._process.stdout is not None
        self.instance = self._process.stdout.readline().strip()

    def kill(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()  # the child serves until its stdin closes
        self._process.wait(timeout=10)


#: Client-thread CPU seconds per call of the sequential rows, by row: what the
#: client side costs, far less disturbed by other processes than wall time.
CPU: dict[str, list[float]] = {}


def _sequential(call: Callable[[], Any], calls: int, row: str = "") -> float:
    began, cpu = time.perf_counter(), time.thread_time()
    for _ in range(calls):
        call()
    CPU.setdefault(row, []).append((time.thread_time() - cpu) / calls)
    return calls / (time.perf_counter() - began)


def _concurrent(call: Callable[[], Any], calls: int, concurrency: int) -> float:
    def worker() -> None:
        for _ in range(calls // concurrency):
            call()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (calls // concurrency * concurrency) / (time.perf_counter() - began)


async def _sequential_async(
    call: Callable[[], Awaitable[Any]], calls: int, row: str = ""
) -> float:
    began, cpu = time.perf_counter(), time.thread_time()
    for _ in range(calls):
        await call()
    CPU.setdefault(row, []).append((time.thread_time() - cpu) / calls)
    return calls / (time.perf_counter() - began)


async def _concurrent_async(
    call: Callable[[], Awaitable[Any]], calls: int, concurrency: int
) -> float:
    async def worker() -> None:
        for _ in range(calls // concurrency):
            await call()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (calls // concurrency * concurrency) / (time.perf_counter() - began)


Samples = dict[str, list[float]]


async def _measure(
    calls: int, runs: int, concurrency: int, instance: str, registry: Any,
    plain: Any, through: Any,
) -> Samples:
    """Requests per second per row, per run (the sync clients are the caller's)."""
    import httpx

    import kitsd

    plain_async = httpx.AsyncClient(base_url=f"http://{instance}")
    through_async = httpx.AsyncClient(transport=kitsd.AsyncTransport(registry),
                                      base_url="http://users")

    def get(client: httpx.Client) -> Callable[[], Any]:
        return lambda: client.get("/", params={"n": 1}).json()

    def get_async(client: httpx.AsyncClient) -> Callable[[], Awaitable[Any]]:
        async def call() -> Any:
            return (await client.get("/", params={"n": 1})).json()
        return call

    rows: dict[str, Callable[[], Awaitable[float]]] = {}

    def sync_row(function: Callable[[], float]) -> Callable[[], Awaitable[float]]:
        async def run() -> float:
            return function()
        return run

    for label, client in (("plain httpx.Client", plain), ("kitsd.Transport", through)):
        call = get(client)
        rows[f"{label}, sequential"] = sync_row(
            functools.partial(_sequential, call, calls, f"{label}, sequential"))
        rows[f"{label}, {concurrency} threads"] = sync_row(
            functools.partial(_concurrent, call, calls, concurrency))
    for label, aclient in (("plain httpx.AsyncClient", plain_async),
                           ("kitsd.AsyncTransport", through_async)):
        acall = get_async(aclient)
        rows[f"{label}, sequential"] = functools.partial(
            _sequential_async, acall, calls, f"{label}, sequential")
        rows[f"{label}, {concurrency} tasks"] = functools.partial(
            _concurrent_async, acall, calls, concurrency)

    samples: Samples = {name: [] for name in rows}
    try:
        for row in rows.values():  # warm-up: connections, imports, first-use stacks
            await row()
        CPU.clear()
        names = list(rows)
        for run in range(runs):
            shift = run % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(await rows[name]())
    finally:
        await plain_async.aclose()
        await through_async.aclose()
    return samples


def _report(samples: Samples, baseline: str, row: str) -> float:
    base = statistics.median(samples[baseline])
    mine = statistics.median(samples[row])
    ratio = statistics.median(
        r / b for b, r in zip(samples[baseline], samples[row], strict=True))
    if baseline in CPU:
        base_cpu, row_cpu = statistics.median(CPU[baseline]), statistics.median(CPU[row])
        print(f"  {baseline:<36} {base:8.0f} req/s   {base_cpu * 1e6:5.0f} us client CPU/call")
        print(f"  {row:<36} {mine:8.0f} req/s   {row_cpu * 1e6:5.0f} us client CPU/call "
              f"({(row_cpu - base_cpu) * 1e6:+.0f})   x{ratio:.3f} of plain")
    else:
        print(f"  {baseline:<36} {base:8.0f} req/s")
        print(f"  {row:<36} {mine:8.0f} req/s   x{ratio:.3f} of plain")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    import httpx

    import kitsd
    from kitsd import sd
    server = _ServerProcess()
    registry = sd.MemoryRegistry()
    registry.registrar("users", server.instance).register()
    plain = httpx.Client(base_url=f"http://{server.instance}")
    through = httpx.Client(transport=kitsd.Transport(registry), base_url="http://users")
    try:
        samples = asyncio.run(_measure(args.calls, args.runs, args.concurrency,
                                       server.instance, registry, plain, through))
    finally:
        plain.close()
        through.close()
        server.kill()
    print(f"{args.calls} calls per row x {args.runs} interleaved runs against one local "
          "instance (medians); ratio = median over runs of requests/s against plain httpx")
    ratios = {}
    for kind, baseline, mine, many in (
        ("sync", "plain httpx.Client", "kitsd.Transport", f"{args.concurrency} threads"),
        ("async", "plain httpx.AsyncClient", "kitsd.AsyncTransport", f"{args.concurrency} tasks"),
    ):
        print(kind)
        ratios[kind] = _report(samples, f"{baseline}, sequential", f"{mine}, sequential")
        ratios[f"{kind} concurrent"] = _report(samples, f"{baseline}, {many}",
                                               f"{mine}, {many}")
    verdict = ", ".join(f"{kind} x{ratio:.3f} {'met' if ratio >= TARGET else 'MISSED'}"
                        for kind, ratio in ratios.items())
    print(f"\n  target: transport >= x{TARGET} of plain httpx: {verdict}")


if __name__ == "__main__":
    main()
