"""kitsd.Transport's throughput and client CPU against plain httpx, sync and async,
sequential and concurrent, with 1 and with 3 instances.

    python -m bench.bench_transport [--calls 200] [--rounds 25] [--concurrency 8]
                                    [--instances 1,3] [--backend go|python]

The instances are ``bench/backend/main.go`` listeners (:mod:`bench.backend`: a Go
program answering at once, in a child process), so that wall time is the
client's.  Rows, each against the plain-httpx row of the same kind (an
``httpx.Client`` / ``AsyncClient`` with ``base_url`` one instance):

* sequential calls on kept-alive connections;
* ``--concurrency`` callers at once (threads for sync, tasks for async).

A kitsd row goes through ``httpx.Client(transport=kitsd.Transport(registry),
base_url="http://users")`` with the defaults (PeakEWMA, outlier detection,
retry under the request's deadline, per-instance pools, bodies up to 64 KiB read
within the attempt), discovery a ``MemoryRegistry`` holding 1 or 3 instances.
Every call is ``client.get("/", params={"n": 1}).json()``.

Rounds are short and interleaved: each round runs every row once, in an order
rotated from round to round, so drift on a busy machine hits every row alike.
Per row and round: requests per second (wall) and the process's CPU time per
call (``time.process_time``: the client's own work, far less disturbed by other
processes than wall time; the backend runs in its own process).  A ratio is
taken within each round (kitsd / plain of that round) and reported as the
median with its interquartile range and its full range over the rounds.
Target (issue 22.1): every kitsd row >= x0.97 of plain httpx's requests/s.

``--instructions`` then runs every row once more under callgrind
(:mod:`bench.instructions`) and prints the instructions per call of the client
process: a figure that other processes' load does not move, so the ratio of
plain's to kitsd's holds on a busy machine where wall time cannot tell.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench import instructions
from bench.backend import Backends

TARGET = 0.97

# (requests per second, CPU seconds per call) per row, one per round
Samples = dict[str, list[tuple[float, float]]]


def _sequential(call: Callable[[], Any], calls: int) -> tuple[float, float]:
    began, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        call()
    return calls / (time.perf_counter() - began), (time.process_time() - cpu) / calls


def _threads(call: Callable[[], Any], calls: int, concurrency: int) -> tuple[float, float]:
    each = calls // concurrency

    def worker() -> None:
        for _ in range(each):
            call()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    began, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done = each * concurrency
    return done / (time.perf_counter() - began), (time.process_time() - cpu) / done


async def _sequential_async(call: Callable[[], Awaitable[Any]], calls: int) -> tuple[float, float]:
    began, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        await call()
    return calls / (time.perf_counter() - began), (time.process_time() - cpu) / calls


async def _tasks(
    call: Callable[[], Awaitable[Any]], calls: int, concurrency: int
) -> tuple[float, float]:
    each = calls // concurrency

    async def worker() -> None:
        for _ in range(each):
            await call()

    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    done = each * concurrency
    return done / (time.perf_counter() - began), (time.process_time() - cpu) / done


def _rows(
    args: argparse.Namespace, backends: Backends, closers: list[Callable[[], Any]],
    aclosers: list[Callable[[], Awaitable[Any]]],
) -> dict[str, Callable[[], Awaitable[tuple[float, float]]]]:
    """Every row's runner; the clients it made are closed by ``closers``/``aclosers``."""
    import httpx

    import kitsd
    from kitsd import sd

    calls, concurrency = args.calls, args.concurrency
    rows: dict[str, Callable[[], Awaitable[tuple[float, float]]]] = {}

    def sync_rows(label: str, client: httpx.Client) -> None:
        def call() -> Any:
            return client.get("/", params={"n": 1}).json()

        async def sequential() -> tuple[float, float]:
            return _sequential(call, calls)

        async def concurrent() -> tuple[float, float]:
            return _threads(call, calls, concurrency)

        rows[f"sync {label}, sequential"] = sequential
        rows[f"sync {label}, {concurrency} threads"] = concurrent
        closers.append(client.close)

    def async_rows(label: str, client: httpx.AsyncClient) -> None:
        async def call() -> Any:
            return (await client.get("/", params={"n": 1})).json()

        async def sequential() -> tuple[float, float]:
            return await _sequential_async(call, calls)

        async def concurrent() -> tuple[float, float]:
            return await _tasks(call, calls, concurrency)

        rows[f"async {label}, sequential"] = sequential
        rows[f"async {label}, {concurrency} tasks"] = concurrent
        aclosers.append(client.aclose)

    first = backends.instances[0]
    timeout = httpx.Timeout(60.0)  # the same for every client; valgrind is slow
    sync_rows("plain httpx", httpx.Client(base_url=f"http://{first}", timeout=timeout))
    async_rows("plain httpx", httpx.AsyncClient(base_url=f"http://{first}", timeout=timeout))
    for count in args.instances:
        registry = sd.MemoryRegistry()
        for instance in backends.instances[:count]:
            registry.registrar("users", instance).register()
        label = f"kitsd, {count} instance{'s' if count > 1 else ''}"
        sync_rows(label, httpx.Client(transport=kitsd.Transport(registry),
                                      base_url="http://users", timeout=timeout))
        async_rows(label, httpx.AsyncClient(transport=kitsd.AsyncTransport(registry),
                                            base_url="http://users", timeout=timeout))
    return rows


async def _measure(args: argparse.Namespace, backends: Backends) -> Samples:
    closers: list[Callable[[], Any]] = []
    aclosers: list[Callable[[], Awaitable[Any]]] = []
    rows = _rows(args, backends, closers, aclosers)
    samples: Samples = {name: [] for name in rows}
    marks = instructions.Marks()
    try:
        for row in rows.values():  # warm-up: connections, imports, first-use stacks
            await row()
        names = list(rows)
        for index in range(args.rounds):
            shift = (index * 5) % len(names)  # rotated so no row always follows another
            for name in names[shift:] + names[:shift]:
                marks.start()
                samples[name].append(await rows[name]())
                marks.stop(name)
    finally:
        for close in closers:
            close()
        for aclose in aclosers:
            await aclose()
    return samples


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 4:
        middle = statistics.median(values)
        return min(values), middle, max(values)
    low, middle, high = statistics.quantiles(values, n=4)
    return low, middle, high


def _report(samples: Samples, args: argparse.Namespace, backend: str) -> None:
    print(f"{args.calls} calls per row x {args.rounds} interleaved rounds, {backend} "
          f"backend; per round: requests/s and process CPU per call; ratio = kitsd / "
          "plain of the same round: median (middle half; all rounds)")
    verdicts = []
    for flavour, many in (("sync", f"{args.concurrency} threads"),
                          ("async", f"{args.concurrency} tasks")):
        for mode in ("sequential", many):
            base = samples[f"{flavour} plain httpx, {mode}"]
            rps = statistics.median(r for r, _ in base)
            cpu = statistics.median(c for _, c in base)
            print(f"  {flavour + ' plain httpx, ' + mode:<40} {rps:7.0f} req/s "
                  f"{cpu * 1e6:6.0f} us CPU/call")
            for count in args.instances:
                name = f"{flavour} kitsd, {count} instance{'s' if count > 1 else ''}, {mode}"
                mine = samples[name]
                ratios = [m[0] / b[0] for b, m in zip(base, mine, strict=True)]
                extra = [(m[1] - b[1]) * 1e6 for b, m in zip(base, mine, strict=True)]
                low, ratio, high = _quartiles(ratios)
                e_low, e_mid, e_high = _quartiles(extra)
                print(f"  {name:<40} {statistics.median(r for r, _ in mine):7.0f} req/s "
                      f"{statistics.median(c for _, c in mine) * 1e6:6.0f} us CPU/call  "
                      f"x{ratio:.3f} ({low:.3f}-{high:.3f}; {min(ratios):.2f}-{max(ratios):.2f})"
                      f"  CPU {e_mid:+.0f} us ({e_low:+.0f} to {e_high:+.0f})")
                verdicts.append((name, ratio))
    missed = [f"{name} x{ratio:.3f}" for name, ratio in verdicts if ratio < TARGET]
    print(f"\n  target: every kitsd row >= x{TARGET} of plain httpx: "
          + ("met" if not missed else "MISSED by " + ", ".join(missed)))


def _count_instructions(args: argparse.Namespace) -> None:
    """The rows once each under callgrind (see :mod:`bench.instructions`)."""
    why = instructions.unavailable()
    if why is not None:
        print(f"  instructions: not counted: {why}")
        return
    counts = instructions.run([
        "-m", "bench.bench_transport", "--calls", str(args.instruction_calls), "--rounds", "1",
        "--concurrency", str(args.concurrency), "--backend", args.backend,
        "--instances", ",".join(map(str, args.instances)), "--quiet"])
    calls = args.instruction_calls // args.concurrency * args.concurrency
    print(f"\ninstructions per call (callgrind, user space of the client process, "
          f"{args.instruction_calls} calls per row):")
    for flavour, many in (("sync", f"{args.concurrency} threads"),
                          ("async", f"{args.concurrency} tasks")):
        for mode in ("sequential", many):
            n = args.instruction_calls if mode == "sequential" else calls
            base = counts[f"{flavour} plain httpx, {mode}"] / n
            print(f"  {flavour + ' plain httpx, ' + mode:<40} {base:9,.0f}")
            for count in args.instances:
                name = f"{flavour} kitsd, {count} instance{'s' if count > 1 else ''}, {mode}"
                mine = counts[name] / n
                print(f"  {name:<40} {mine:9,.0f}  {mine - base:+8,.0f}  "
                      f"plain/kitsd x{base / mine:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=25,
                        help="0: only the instruction counts (with --instructions)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--instances", default="1,3",
                        type=lambda text: [int(each) for each in text.split(",")])
    parser.add_argument("--backend", choices=("go", "python"), default="go")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions per call under callgrind")
    parser.add_argument("--instruction-calls", type=int, default=96)
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds:
        backends = Backends(max(args.instances), kind=args.backend)
        try:
            samples = asyncio.run(_measure(args, backends))
        finally:
            backends.close()
        if not args.quiet:
            _report(samples, args, backends.kind)
    if args.instructions:
        _count_instructions(args)


if __name__ == "__main__":
    main()
