"""What kitsd costs on top of plain httpx, per HTTP call, sync and async.

    python -m bench.bench_http_stack [--calls 200] [--runs 25] [--without-sniffio]

Every row calls the same local instance (``kitsd.demo_server``, in a child
process) sequentially on a kept-alive connection.  Rows, each against its plain-httpx baseline:

* ``sd.http`` alone -- the endpoint called directly, outside any retry;
* ``sd.http`` under a deadline -- the same inside a retry deadline (what ``lb.retry``
  sets), which bounds every socket wait of the request;
* the README quickstart stack -- breaker -> retry -> round robin ->
  per-instance breaker -> ``sd.http`` endpoint.

Runs are short and interleaved (each run calls every row once, in rotating
order) so drift on a noisy machine hits all rows alike; the figures are
medians; a ratio is the median of the per-run ratios.  Besides wall time, the
CPU time of the calling thread per call: what the client side costs, far less
disturbed by other processes than wall time.
Target: stack / plain >= 0.97 in requests per second, sync and async.

``--without-sniffio`` measures the async rows again in a child interpreter in
which ``import sniffio`` fails (searching ``sys.path`` as a missing module
does): httpcore 1.0 retries that import on every async request when sniffio is
absent, which newer anyio releases no longer pull in.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

TARGET = 0.97


def _hide_sniffio() -> None:
    """Make ``import sniffio`` fail as it does where sniffio is not installed.

    The site-packages directory on ``sys.path`` is replaced by a temporary one of
    links to all its entries but sniffio's, so that the import searches
    ``sys.path`` in vain, as a missing module does.  Call before importing httpx.
    """
    import site
    import tempfile

    hidden = tempfile.mkdtemp(prefix="kitsd-bench-no-sniffio-")
    packages = set(site.getsitepackages())
    for index, entry in enumerate(sys.path):
        if entry in packages:
            for name in os.listdir(entry):
                if not name.startswith("sniffio"):
                    os.symlink(os.path.join(entry, name), os.path.join(hidden, name))
            sys.path[index] = hidden
    sys.modules.pop("sniffio", None)
    importlib.invalidate_caches()


class _ServerProcess:
    """A ``kitsd.demo_server`` instance in a child interpreter, so that its threads
    do not share the client's interpreter lock or its CPU-time figure."""

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


_SERVER_SCRIPT = """
import sys
from kitsd.demo_server import DemoInstance
server = DemoInstance()
print(server.instance, flush=True)
sys.stdin.read()
server.kill()
"""


def _encode(n: int) -> dict[str, Any]:
    return {"params": {"n": n}}


def _decode(response: Any) -> Any:
    return response.json()


def _per_call(call: Callable[[int], Any], calls: int) -> tuple[float, float]:
    """Wall seconds and this thread's CPU seconds per call."""
    began, cpu = time.perf_counter(), time.thread_time()
    for n in range(calls):
        call(n)
    return (time.perf_counter() - began) / calls, (time.thread_time() - cpu) / calls


async def _per_call_async(
    call: Callable[[int], Awaitable[Any]], calls: int
) -> tuple[float, float]:
    began, cpu = time.perf_counter(), time.thread_time()
    for n in range(calls):
        await call(n)
    return (time.perf_counter() - began) / calls, (time.thread_time() - cpu) / calls


Samples = dict[str, list[tuple[float, float]]]


async def _measure(calls: int, runs: int, *, sync: bool, stacks: bool) -> Samples:
    """Per row, per run: wall seconds and client-thread CPU seconds per call."""
    import httpx
    import pybreaker

    from kitsd import breaker, lb, sd
    from kitsd.core.deadline import reset_deadline, set_deadline

    server = _ServerProcess()
    closers: list[Callable[[], Any]] = []
    sync_rows: dict[str, Callable[[int], Any]] = {}
    async_rows: dict[str, Callable[[int], Awaitable[Any]]] = {}
    try:
        if sync:
            plain = httpx.Client(base_url=f"http://{server.instance}")
            closers.append(plain.close)

            def plain_call(n: int) -> Any:
                response = plain.get("/bench", params={"n": n})
                response.raise_for_status()
                return response.json()

            alone = sd.http.factory("GET", "/bench", encode=_encode, decode=_decode)(
                server.instance
            )
            closers.append(alone.close)

            def under_deadline(n: int) -> Any:
                token = set_deadline(time.monotonic() + 2.0)
                try:
                    return alone(n)
                finally:
                    reset_deadline(token)

            sync_rows = {"plain httpx.Client": plain_call, "sd.http alone": alone,
                         "sd.http under a deadline": under_deadline}
            if stacks:
                factory = breaker.per_instance(
                    sd.http.factory("GET", "/bench", encode=_encode, decode=_decode),
                    lambda instance: pybreaker.CircuitBreaker(name=instance),
                )
                endpointer = sd.Endpointer(sd.FixedInstancer([server.instance]), factory)
                closers.append(endpointer.close)
                sync_rows["README stack"] = breaker.circuit_breaker(pybreaker.CircuitBreaker())(
                    lb.retry(3, 2.0, lb.RoundRobin(endpointer))
                )

        plain_async = httpx.AsyncClient(base_url=f"http://{server.instance}")

        async def plain_async_call(n: int) -> Any:
            response = await plain_async.get("/bench", params={"n": n})
            response.raise_for_status()
            return response.json()

        alone_async = sd.http.async_factory("GET", "/bench", encode=_encode, decode=_decode)(
            server.instance
        )

        async def under_deadline_async(n: int) -> Any:
            token = set_deadline(time.monotonic() + 2.0)
            try:
                return await alone_async(n)
            finally:
                reset_deadline(token)

        async_rows = {"plain httpx.AsyncClient": plain_async_call,
                      "sd.http alone (async)": alone_async,
                      "sd.http under a deadline (async)": under_deadline_async}
        async_endpointer = None
        if stacks:
            async_factory = breaker.per_instance(
                sd.http.async_factory("GET", "/bench", encode=_encode, decode=_decode),
                lambda instance: pybreaker.CircuitBreaker(name=instance),
            )
            async_endpointer = sd.Endpointer(
                sd.FixedInstancer([server.instance]), async_factory
            )
            async_rows["README stack (async)"] = breaker.circuit_breaker(
                pybreaker.CircuitBreaker()
            )(lb.retry_async(3, 2.0, lb.RoundRobin(async_endpointer)))

        for sync_call in sync_rows.values():
            sync_call(0)  # warm: connect once
        for async_call in async_rows.values():
            await async_call(0)

        samples: Samples = {name: [] for name in [*sync_rows, *async_rows]}
        for run in range(runs):  # interleaved, rotating, so drift hits every row alike
            names = list(samples)
            names = names[run % len(names):] + names[:run % len(names)]
            for name in names:
                if name in sync_rows:
                    samples[name].append(_per_call(sync_rows[name], calls))
                else:
                    samples[name].append(await _per_call_async(async_rows[name], calls))
        await plain_async.aclose()
        await alone_async.aclose()
        if async_endpointer is not None:
            await async_endpointer.aclose()
    finally:
        for close in closers:
            close()
        server.kill()
    return samples


def _medians(values: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(w for w, _ in values), statistics.median(c for _, c in values)


def _report(samples: Samples, baseline: str, rows: list[str]) -> list[float]:
    """Print each row against the baseline; return the ratios of requests per second.

    A ratio is the median over runs of (baseline's time / row's time) within one
    run: rows of one run are measured within a second of each other.
    """
    base, base_cpu = _medians(samples[baseline])
    print(f"  {baseline:<34} {base * 1e6:6.0f} us/call  {base_cpu * 1e6:5.0f} us client CPU")
    ratios = []
    for name in rows:
        wall, cpu = _medians(samples[name])
        ratio = statistics.median(
            b / r for (b, _), (r, _) in zip(samples[baseline], samples[name], strict=True)
        )
        ratios.append(ratio)
        print(f"  {name:<34} {wall * 1e6:6.0f} us/call  {cpu * 1e6:5.0f} us client CPU"
              f" ({(cpu - base_cpu) * 1e6:+4.0f})   x{ratio:.3f} of plain's req/s")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--without-sniffio", action="store_true")
    parser.add_argument("--child-hide-sniffio", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child_hide_sniffio:
        _hide_sniffio()
        hidden_samples = asyncio.run(_measure(args.calls, args.runs, sync=False, stacks=False))
        for name, values in hidden_samples.items():
            wall, cpu = _medians(values)
            print(f"{name}\t{wall}\t{cpu}")
        return

    samples = asyncio.run(_measure(args.calls, args.runs, sync=True, stacks=True))
    print(f"{args.calls} sequential calls x {args.runs} interleaved runs against one local "
          "instance (medians); ratio = requests/s of the row / plain httpx")
    print("sync")
    sync_ratios = _report(samples, "plain httpx.Client",
                          ["sd.http alone", "sd.http under a deadline", "README stack"])
    print("async")
    async_ratios = _report(samples, "plain httpx.AsyncClient",
                           ["sd.http alone (async)", "sd.http under a deadline (async)",
                            "README stack (async)"])
    stack_sync, stack_async = sync_ratios[-1], async_ratios[-1]
    print(f"\n  target: README stack >= x{TARGET} of plain, sync and async: "
          f"sync x{stack_sync:.3f} {'met' if stack_sync >= TARGET else 'MISSED'}, "
          f"async x{stack_async:.3f} {'met' if stack_async >= TARGET else 'MISSED'}")

    if args.without_sniffio:
        child = subprocess.run(  # noqa: S603 - this very script, by its own interpreter
            [sys.executable, "-m", "bench.bench_http_stack", "--child-hide-sniffio",
             "--calls", str(args.calls), "--runs", str(args.runs)],
            capture_output=True, text=True, check=True,
        )
        hidden = {
            name: (float(wall), float(cpu))
            for name, wall, cpu in (line.split("\t") for line in child.stdout.splitlines())
        }
        print("\nasync, in an interpreter where `import sniffio` fails (httpcore retries it)")
        for name in ("plain httpx.AsyncClient", "sd.http alone (async)"):
            wall, cpu = hidden[name]
            print(f"  {name:<34} {wall * 1e6:6.0f} us/call  {cpu * 1e6:5.0f} us client CPU"
                  f" ({(cpu - _medians(samples[name])[1]) * 1e6:+.0f} against sniffio installed)")


if __name__ == "__main__":
    main()
