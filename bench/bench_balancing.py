"""Balancing beyond go-kit, measured side by side in one run (issue 9).

    python -m bench.bench_balancing [--quick]

1. Balancers against one slow instance: four local HTTP instances
   (``kitsd.demo_server``), one answering 20x slower; round robin, random,
   least-loaded and PeakEWMA each make the same calls from the same threads
   through ``lb.retry`` over ``sd.http`` endpoints.  Shown: the slow
   instance's share, p50 and p99 of the whole run.  Targets: PeakEWMA's share
   <= 5 % (round robin's is 25 %), its p99 >= 3x better than round robin's.
2. Hedging: four instances, one of which stalls 1 in 20 of its answers for
   1 s; the same calls with ``hedge=`` off and on.  Shown: p99 and extra load
   (requests the instances served / calls - 1).  Targets: p99 drops >= 5x,
   extra load <= 10 %.
3. Retry budget under a total outage: every instance refuses connections;
   ``lb.retry(3, ...)`` without and with ``lb.RetryBudget()``.  Shown: retries /
   calls.  Target: <= 20 % + the floor's share, not 200 %; and with one instance
   down of four, 0 failed calls with the budget.
4. Consistent hash: share of 100,000 keys that move when one of N instances
   leaves (target <= 1/N + 2 %).
5. Pick cost at 10 vs 10,000 instances for every balancer (target <= 1.2x,
   judged on the fastest repeats: the machines are small and shared).

Latency figures are medians of nothing: one run each, all in the same minute,
so background load hits them alike; read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import threading
import time
import timeit
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from kitsd import lb, sd
from kitsd.demo_server import DemoInstance

SERVICE = "bench"


@contextlib.contextmanager
def instances(*specs: tuple[float, int, float]) -> Iterator[list[str]]:
    """Local HTTP instances ``(delay, stall_every, stall)`` served by a child process
    (so that the client's threads and the servers' do not share one GIL)."""
    spec = ";".join(f"{d},{e},{s}" for d, e, s in specs)
    # our own interpreter and module, numbers we formatted: no untrusted input
    child = subprocess.Popen([sys.executable, "-m", "bench.bench_balancing", "--serve", spec],  # noqa: S603
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        yield child.stdout.readline().split()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


def serve(spec: str) -> None:
    """The child process of :func:`instances`: serve until stdin closes."""
    servers = [DemoInstance(delay=float(d), stall_every=int(e), stall=float(s))
               for d, e, s in (part.split(",") for part in spec.split(";"))]
    print(" ".join(server.instance for server in servers), flush=True)
    sys.stdin.read()
    for server in servers:
        server.kill()


class Counting:
    """An ``sd.http`` factory whose endpoints count the requests they send, per instance."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._inner = http_factory()

    def __call__(self, instance: str) -> Any:
        endpoint = self._inner(instance)

        def counted(request: Any) -> Any:
            with self._lock:
                self.sent[instance] += 1
            return endpoint(request)

        counted.close = endpoint.close  # type: ignore[attr-defined]
        return counted

    def total(self) -> int:
        return sum(self.sent.values())


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def decode(response: httpx.Response) -> str:
    return str(response.json()["instance"])


def http_factory() -> Callable[[str], Any]:
    return sd.http.factory("GET", "/", encode=lambda request: {}, decode=decode,
                           client_kwargs={"timeout": 5.0})


def drive(call: Callable[[Any], Any], calls: int, threads: int) -> tuple[list[float], int]:
    """Make ``calls`` calls from ``threads`` threads; returns latencies and failures."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    counter = iter(range(calls))

    def worker() -> None:
        nonlocal failures
        mine: list[float] = []
        failed = 0
        for number in counter:
            began = time.perf_counter()
            try:
                call(number)
            except Exception:  # noqa: BLE001 - counted
                failed += 1
            else:
                mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)
            failures += failed

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return latencies, failures


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


# --- 1. balancers vs a slow instance ------------------------------------------------

def slow_instance(calls: int, threads: int) -> bool:
    # 5 ms vs 100 ms: large enough that the client's own stalls on this small,
    # shared machine (tens of ms) do not drown the difference
    fast, slow = 0.005, 0.100
    makers: dict[str, Callable[[sd.Endpointer], lb.Balancer]] = {
        "round robin": lb.RoundRobin,
        "random": lambda e: lb.Random(e, seed=1),
        "least-loaded": lambda e: lb.LeastLoaded(e, seed=1),
        "PeakEWMA": lambda e: lb.PeakEWMA(e, seed=1),
    }
    print(f"\n1. one of 4 instances 20x slower ({fast * 1000:.0f} ms vs {slow * 1000:.0f} ms), "
          f"{calls} calls from {threads} threads, real HTTP")
    print(f"   {'balancer':<14}{'slow share':>11}{'p50 ms':>9}{'p99 ms':>9}")
    results: dict[str, tuple[float, float, float]] = {}
    with instances(*[(fast, 0, 0.0)] * 3, (slow, 0, 0.0)) as names:
        for name, make in makers.items():
            factory = Counting()
            with sd.Endpointer(sd.FixedInstancer(names), factory) as endpointer:
                call = lb.retry(2, 5.0, make(endpointer))
                latencies, failed = drive(call, calls, threads)
            share = factory.sent[names[-1]] / max(factory.total(), 1)
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            results[name] = (share, p50, p99)
            print(f"   {name:<14}{share:>10.1%}{p50 * 1000:>9.2f}{p99 * 1000:>9.2f}"
                  + (f"   ({failed} failed)" if failed else ""), flush=True)
    share, _, p99 = results["PeakEWMA"]
    ratio = results["round robin"][2] / p99
    ok = share <= 0.05 and ratio >= 3.0
    print(f"   PeakEWMA: slow share {share:.1%} (target <= 5 %), p99 {ratio:.1f}x better "
          f"than round robin (target >= 3x): {verdict(ok)}")
    return ok


# --- 2. hedging -------------------------------------------------------------------

def hedging(calls: int, threads: int) -> bool:
    print(f"\n2. one of 4 instances stalls 1 s on 1 in 20 answers, {calls} calls from "
          f"{threads} threads, real HTTP")
    print(f"   {'hedge':<26}{'p50 ms':>9}{'p99 ms':>9}{'extra load':>12}")
    rows: dict[str, tuple[float, float]] = {}
    with instances(*[(0.002, 0, 0.0)] * 3, (0.002, 20, 1.0)) as names:
        for name, hedge in (("off", None), ("Hedge(delay=0.05)", lb.Hedge(delay=0.05)),
                            ("Hedge(percentile=95)", lb.Hedge(percentile=95, samples=200))):
            factory = Counting()
            with sd.Endpointer(sd.FixedInstancer(names), factory) as endpointer:
                balancer = lb.RoundRobin(endpointer)
                if hedge is None:
                    latencies, failed = drive(lb.retry(2, 5.0, balancer), calls, threads)
                else:
                    with lb.retry(2, 5.0, balancer, hedge=hedge) as call:
                        latencies, failed = drive(call, calls, threads)
            extra = factory.total() / calls - 1.0
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            rows[name] = (p99, extra)
            print(f"   {name:<26}{p50 * 1000:>9.2f}{p99 * 1000:>9.2f}{extra:>11.1%}"
                  + (f"   ({failed} failed)" if failed else ""), flush=True)
    ok = True
    for name in ("Hedge(delay=0.05)", "Hedge(percentile=95)"):
        ratio = rows["off"][0] / rows[name][0]
        row_ok = ratio >= 5.0 and rows[name][1] <= 0.10
        ok = ok and row_ok
        print(f"   {name}: p99 {ratio:.1f}x lower (target >= 5x), extra load "
              f"{rows[name][1]:.1%} (target <= 10 %): {verdict(row_ok)}")
    return ok


# --- 3. retry budget --------------------------------------------------------------

def budget(calls: int) -> bool:
    print(f"\n3. retry budget, lb.retry(3, ...) over 4 instances, {calls} calls, real HTTP")
    dead = [DemoInstance() for _ in range(4)]
    names = [s.instance for s in dead]
    for server in dead:
        server.kill()  # connections refused from now on
    attempts = [0]
    lock = threading.Lock()
    inner = http_factory()

    def counting(instance: str) -> Any:
        endpoint = inner(instance)

        def counted(request: Any) -> Any:
            with lock:
                attempts[0] += 1
            return endpoint(request)

        counted.close = endpoint.close  # type: ignore[attr-defined]
        return counted

    ok = True
    percent, floor, window = 20.0, 10.0, 10.0
    for name, chosen in (("no budget", None),
                         ("RetryBudget()", lb.RetryBudget(percent, floor, window))):
        attempts[0] = 0
        began = time.monotonic()
        with sd.Endpointer(sd.FixedInstancer(names), counting) as endpointer:
            call = lb.retry(3, 5.0, lb.RoundRobin(endpointer), budget=chosen)
            _, failed = drive(call, calls, 4)
        elapsed = time.monotonic() - began
        ratio = attempts[0] / calls - 1.0
        # the floor allows floor * window retries per window, at once (as Finagle's)
        allowed = percent / 100 + floor * max(window, elapsed) / calls
        note = ""
        if chosen is not None:
            ok = ratio <= allowed + 0.005
            note = f"  (target <= {allowed:.1%}: 20 % + floor): {verdict(ok)}"
        print(f"   total outage, {name:<15} retries/calls {ratio:7.1%}   failed "
              f"{failed}/{calls}{note}")
    live = [DemoInstance() for _ in range(3)]
    gone = DemoInstance()
    gone.kill()
    try:
        instancer = sd.FixedInstancer([s.instance for s in live] + [gone.instance])
        with sd.Endpointer(instancer, http_factory()) as endpointer:
            call = lb.retry(3, 5.0, lb.RoundRobin(endpointer), budget=lb.RetryBudget())
            _, failed = drive(call, calls, 4)
    finally:
        for server in live:
            server.kill()
    print(f"   one of 4 down, RetryBudget()     failed {failed}/{calls} (target 0): "
          f"{verdict(failed == 0)}")
    return ok and failed == 0


# --- 4. consistent hash remapping -------------------------------------------------

def remap(keys: int) -> bool:
    print(f"\n4. consistent hash: share of {keys:,} keys moved when one instance leaves")
    ok = True
    for n in (10, 100):
        names = [f"10.0.{i // 256}.{i % 256}:80" for i in range(n)]
        registry = sd.MemoryRegistry()
        registrars = [registry.registrar(SERVICE, name) for name in names]
        for registrar in registrars:
            registrar.register()
        with sd.Endpointer(registry.instancer(SERVICE), lambda i: str) as endpointer:
            balancer = lb.ConsistentHash(endpointer, str)
            before = [balancer.pick_for(k).instance for k in range(keys)]
            registrars[n // 3].deregister()
            after = [balancer.pick_for(k).instance for k in range(keys)]
        moved = sum(a != b for a, b in zip(before, after, strict=True)) / keys
        row_ok = moved <= 1 / n + 0.02
        ok = ok and row_ok
        print(f"   N={n:<4} moved {moved:6.2%}   (target <= {1 / n + 0.02:.2%}): "
              f"{verdict(row_ok)}")
    return ok


# --- 5. pick cost -----------------------------------------------------------------

def pick_cost(repeats: int, number: int) -> bool:
    sizes = (10, 10_000)
    print(f"\n5. pick cost, ns (median of {repeats} x {number:,}; ratio from the fastest "
          f"repeats, target <= 1.2x)")
    sources = {}
    for size in sizes:
        names = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:80" for i in range(size)]
        info = {name: sd.InstanceInfo(weight=1 + i % 5) for i, name in enumerate(names)}
        from kitsd.sd.endpoint_set import EndpointSet

        snapshot = EndpointSet(tuple(names), tuple(str for _ in names), info=info)

        class Source:
            def __init__(self, current: EndpointSet) -> None:
                self.current = current

            def snapshot(self) -> EndpointSet:
                return self.current

            def endpoints(self) -> list[Any]:
                return list(self.current.endpoints)

        sources[size] = Source(snapshot)
    makers: dict[str, Callable[[Any], Callable[[], Any]]] = {
        "RoundRobin": lambda s: lb.RoundRobin(s).pick,
        "Random": lambda s: lb.Random(s, seed=1).pick,
        "LeastLoaded": lambda s: lb.LeastLoaded(s, seed=1).pick,
        "PeakEWMA": lambda s: lb.PeakEWMA(s, seed=1).pick,
        "Weighted": lambda s: lb.Weighted(s).pick,
        "ConsistentHash": lambda s: (lambda b: lambda: b.pick_for("user-42"))(
            lb.ConsistentHash(s, str)),
    }
    print(f"   {'balancer':<16}{10:>9}{10_000:>9,}   median  fastest")
    ok = True
    for name, make in makers.items():
        picks = {size: make(sources[size]) for size in sizes}
        for pick in picks.values():
            pick()  # per-set work (rings, schedules) happens on the first pick
        runs: dict[int, list[float]] = {size: [] for size in sizes}
        for _ in range(repeats):
            for size in sizes:
                runs[size].append(timeit.timeit(picks[size], number=number) / number)
        median = {size: statistics.median(runs[size]) for size in sizes}
        fastest = {size: min(runs[size]) for size in sizes}
        best = fastest[sizes[1]] / fastest[sizes[0]]
        row_ok = best <= 1.2
        ok = ok and row_ok
        print(f"   {name:<16}{median[10] * 1e9:>9.0f}{median[10_000] * 1e9:>9.0f}   "
              f"x{median[10_000] / median[10]:4.2f}   x{best:4.2f} {verdict(row_ok)}", flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    scale = 1 if args.quick else 2
    began = time.monotonic()
    results = {
        "slow instance": slow_instance(1000 * scale, 4),
        "hedging": hedging(1600 * scale, 8),
        "retry budget": budget(1000 * scale),
        "consistent hash": remap(50_000 * scale),
        "pick cost": pick_cost(21 * scale, 2000),
    }
    print(f"\nsummary ({time.monotonic() - began:.0f} s): "
          + ", ".join(f"{name} {verdict(ok)}" for name, ok in results.items()))


if __name__ == "__main__":
    main()
