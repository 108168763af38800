"""What ``kitsd.Transport`` keeps in memory: per service stack and per instance.

    python -m bench.bench_transport_memory [--instances 1,100,1000] [--services 1,50]
                                           [--repeat 3]

Each measurement runs in a fresh interpreter (memory freed by one does not
flatter the next), against ``bench/backend/main.go`` listeners
(:mod:`bench.backend`), one per instance.  The child imports everything and
registers the instances in a ``sd.MemoryRegistry`` (the registry's side, not
counted) and makes one call through a transport it then closes (imports and
first uses: not counted), then measures the growth of its resident set (``/proc/self/statm``) and,
in a second child, of the bytes Python allocated (``tracemalloc``) across:
building ``httpx.Client(transport=kitsd.Transport(registry, breakers=...))``
(defaults otherwise: PeakEWMA with outlier detection, retry, a connection pool per
instance address) with a ``pybreaker.CircuitBreaker`` per instance, and calling
it until every instance has been called once (so each has its endpoint, breaker,
balancer state and pool).  Rows:

* ``services``: S services of one instance each (a whole stack: discovery watch,
  Endpointer, balancer, retry, breakers, pool);
* ``instances``: one service of N instances;

each twice: ``closed`` -- the calls send ``Connection: close``, so no idle
connection is kept (what is left once idle connections have expired), and
``kept`` -- one idle kept-alive connection per instance.  Per stack =
(growth at S - growth at 1) / (S - 1); per instance likewise over N; the first
stack's growth includes what is made once per transport (its TLS context).
Medians of ``--repeat`` children.  Target (issue 22.6): <= 50 KiB per instance
with idle connections closed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from bench.backend import Backends

TARGET_KIB = 50.0


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(mode: str, count: int, keep: bool, traced: bool, instances: list[str]) -> None:
    import tracemalloc

    import httpx
    import pybreaker

    import kitsd
    from kitsd import sd

    registry = sd.MemoryRegistry()
    if mode == "services":
        targets = [(f"s{index}", instance) for index, instance in enumerate(instances[:count])]
    else:
        targets = [("users", instance) for instance in instances[:count]]
    for service, instance in targets:
        registry.registrar(service, instance).register()
    headers = {} if keep else {"Connection": "close"}
    registry.registrar("warm-up", instances[0]).register()
    with httpx.Client(transport=kitsd.Transport(registry)) as warm:  # imports, first uses
        warm.get("http://warm-up/", headers=headers).raise_for_status()
    gc.collect()
    if traced:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if traced else _rss()
    transport = kitsd.Transport(registry, breakers=lambda instance: pybreaker.CircuitBreaker(),
                                max_services=max(64, count))
    client = httpx.Client(transport=transport)
    calls = 0
    if mode == "services":
        for service, _ in targets:
            client.get(f"http://{service}/", headers=headers).raise_for_status()
            calls += 1
    else:
        seen: set[str] = set()
        while len(seen) < count and calls < 50 * count:
            seen.add(client.get("http://users/", headers=headers).json()["instance"])
            calls += 1
        assert len(seen) == count, f"only {len(seen)} of {count} instances called"
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if traced else _rss()
    print(json.dumps({"bytes": after - before, "calls": calls}))
    client.close()


def _run(mode: str, count: int, keep: bool, traced: bool, path: str) -> dict[str, Any]:
    done = subprocess.run(  # noqa: S603 - this module, in a fresh interpreter
        [sys.executable, "-m", "bench.bench_transport_memory", "--child", mode, str(count),
         "keep" if keep else "close", "traced" if traced else "rss", path],
        check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--instances", default="1,100,1000",
                        type=lambda text: [int(each) for each in text.split(",")])
    parser.add_argument("--services", default="1,50",
                        type=lambda text: [int(each) for each in text.split(",")])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, count, keep, traced, path = args.child
        with open(path) as file:
            instances = file.read().split()
        _child(mode, int(count), keep == "keep", traced == "traced", instances)
        return
    largest = max(*args.instances, *args.services)
    backends = Backends(largest)
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
            listing.write("\n".join(backends.instances))
        growth: dict[tuple[str, int, bool, bool], float] = {}
        for mode, counts in (("services", args.services), ("instances", args.instances)):
            for count in counts:
                for keep in (False, True):
                    for traced in (False, True):
                        growth[mode, count, keep, traced] = statistics.median(
                            _run(mode, count, keep, traced, listing.name)["bytes"]
                            for _ in range(args.repeat))
    finally:
        os.unlink(listing.name)
        backends.close()
    print(f"kitsd.Transport (MemoryRegistry discovery, default balancer, a pybreaker breaker "
          f"per instance); growth over building it and calling every instance once; "
          f"median of {args.repeat} fresh interpreters each")
    for mode, counts in (("services", args.services), ("instances", args.instances)):
        unit = "stack" if mode == "services" else "instance"
        for keep in (False, True):
            label = "idle connections kept" if keep else "no idle connection (closed)"
            print(f"  {mode}, {label}:")
            for count in counts:
                rss, python = growth[mode, count, keep, False], growth[mode, count, keep, True]
                line = (f"    {count:>5} {mode:<9}  RSS {rss / 1024:9.0f} KiB   "
                        f"Python {python / 1024:9.0f} KiB")
                if count > counts[0]:
                    span = (count - counts[0]) * 1024
                    per_rss = (rss - growth[mode, counts[0], keep, False]) / span
                    per_python = (python - growth[mode, counts[0], keep, True]) / span
                    line += (f"   per {unit}: RSS {per_rss:6.1f} KiB, "
                             f"Python {per_python:6.1f} KiB")
                print(line)
    closed = [(growth["instances", n, False, False] - growth["instances", args.instances[0],
                                                              False, False])
              / (n - args.instances[0]) / 1024 for n in args.instances[1:]]
    if closed:
        verdict = "met" if max(closed) <= TARGET_KIB else "MISSED"
        print(f"\n  target: <= {TARGET_KIB:.0f} KiB RSS per instance, idle connections closed: "
              f"{verdict} ({', '.join(f'{each:.1f}' for each in closed)} KiB)")


if __name__ == "__main__":
    main()
