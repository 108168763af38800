"""Discovery at scale: what one instance joining or leaving costs, and what a picker sees.

    python -m bench.bench_scale            # all figures (about a minute)
    python -m bench.bench_scale --quick    # fewer repeats

Printed, each with its target and the ratio 10,000 / 100 where it applies:

* **change cost** — median µs for one instance registering or deregistering in an
  :class:`sd.MemoryRegistry` with one :class:`sd.Endpointer` subscribed (trivial
  endpoints), at 10, 100, 1,000 and 10,000 instances.  Target: ≤ 1 ms at 10,000 and
  flat from 100 to 10,000.
* **whole snapshots** — the same change published as a whole unsorted snapshot
  (a Consul answer, an etcd re-read) straight to the Broadcaster: the drivers' path.
  Target: a few ms at most over the raw client at 10,000 (issue 6.7): ≤ 3 ms here.
* **pick latency during changes** — a thread calling ``Endpointer.snapshot()`` in a
  loop while another makes changes at 10,000 instances: p99 and max of all calls,
  and the max of the calls begun while a change was in progress (those a lock held
  by the change would stall for the rest of it; the machine's own scheduling noise
  shows in the overall max).  Run twice: with Python's default GIL switch interval
  (what users get: a change this short ends before the picker gets the GIL) and with
  a short one (50 µs), which lets picks start in the middle of changes.
* **clean_instances** — normalising 10,000 registry values (canonical IPv4 and host
  names, as registries hold them), median ms per batch.

The machines here are small and noisy (2 shared cores): read medians and ratios.
"""

from __future__ import annotations

import argparse
import bisect
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from kitsd import sd
from kitsd.sd.instance import clean_instances

SIZES = (10, 100, 1_000, 10_000)
CHANGE_TARGET_US = 1_000.0
FLAT_TARGET = 1.5
SNAPSHOT_TARGET_US = 3_000.0
PICK_TARGET_US = 1_000.0
CLEAN_TARGET_MS = 10.0


def instance(number: int) -> str:
    return f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}:8080"


def endpoint(request: Any) -> Any:
    return request


def factory(_instance: str) -> Callable[[Any], Any]:
    return endpoint


def populated(size: int) -> tuple[sd.MemoryRegistry, sd.Endpointer]:
    registry = sd.MemoryRegistry()
    for number in range(size):
        registry.registrar("svc", instance(number)).register()
    return registry, sd.Endpointer(registry.instancer("svc"), factory)


def change_cost(size: int, changes: int) -> float:
    """Median seconds per change (one instance registering or deregistering)."""
    registry, endpointer = populated(size)
    extra = registry.registrar("svc", "192.168.255.254:9")
    timings = []
    for _ in range(changes):
        for step in (extra.register, extra.deregister):
            start = time.perf_counter()
            step()
            timings.append(time.perf_counter() - start)
    assert len(endpointer.snapshot()) == size
    endpointer.close()
    return statistics.median(timings)


def snapshot_change_cost(size: int, changes: int) -> float:
    """Median seconds per change when a driver publishes whole snapshots (no delta):
    a Consul answer, an etcd re-read.  Fresh, unsorted strings, as decoded from JSON."""
    from kitsd.sd.instancer import Broadcaster, InstancerHandle

    names = [instance(number) for number in range(size)]
    broadcaster = Broadcaster(sd.Event(tuple(names)))
    endpointer = sd.Endpointer(InstancerHandle(broadcaster), factory)
    timings = []
    for step in range(2 * changes):
        extra = ["192.168.255.254:9"] if step % 2 == 0 else []
        answer = tuple(f"{name[:-5]}:8080" for name in reversed(names + extra))
        start = time.perf_counter()
        broadcaster.publish(sd.Event(answer))
        timings.append(time.perf_counter() - start)
    assert len(endpointer.snapshot()) == size
    endpointer.close()
    return statistics.median(timings)


def pick_latency(
    size: int, changes: int, switch_interval: float | None
) -> tuple[float, float, int, float]:
    """``snapshot()`` latency in a thread picking while another makes changes:
    (p99 of all picks, max of all picks, number of picks begun while a change was in
    progress, max latency of those).  The last figure is the one a lock would inflate:
    such a pick would wait for the rest of the change."""
    registry, endpointer = populated(size)
    extra = registry.registrar("svc", "192.168.255.254:9")
    picks: list[tuple[float, float]] = []
    windows: list[tuple[float, float]] = []
    running = threading.Event()
    done = threading.Event()

    def picker() -> None:
        clock = time.perf_counter
        snapshot = endpointer.snapshot
        running.set()
        while not done.is_set():
            start = clock()
            snapshot()
            picks.append((start, clock() - start))

    old_interval = sys.getswitchinterval()
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval)
    try:
        thread = threading.Thread(target=picker)
        thread.start()
        running.wait()
        for _ in range(changes):
            for step in (extra.register, extra.deregister):
                start = time.perf_counter()
                step()
                windows.append((start, time.perf_counter()))
                time.sleep(0.001)
        done.set()
        thread.join()
    finally:
        sys.setswitchinterval(old_interval)
        endpointer.close()
    latencies = sorted(latency for _, latency in picks)
    starts = [start for start, _ in windows]
    during = [
        latency for start, latency in picks
        if (index := bisect.bisect_right(starts, start) - 1) >= 0 and start < windows[index][1]
    ]
    return (latencies[int(len(latencies) * 0.99)], latencies[-1], len(during),
            max(during, default=0.0))


def clean_cost(size: int, repeats: int) -> float:
    """Median seconds for ``clean_instances`` over ``size`` fresh values."""
    timings = []
    for _ in range(repeats):
        # Fresh string objects each time, as a registry answer decoded from JSON gives.
        values = [f"{instance(n)[:-5]}:{8080}" if n % 2 else f"node-{n}.dc1.example:80"
                  for n in range(size)]
        start = time.perf_counter()
        clean_instances(values, source="bench")
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    changes = 20 if args.quick else 100

    print("one-instance change through MemoryRegistry -> Endpointer (median of "
          f"{2 * changes} changes)")
    costs = {}
    for size in SIZES:
        costs[size] = change_cost(size, changes)
        print(f"  {size:>6} instances: {costs[size] * 1e6:9.1f} µs")
    ratio = costs[10_000] / costs[100]
    print(f"  target: <= {CHANGE_TARGET_US:.0f} µs at 10,000 "
          f"({'met' if costs[10_000] * 1e6 <= CHANGE_TARGET_US else 'NOT met'}); "
          f"ratio 10,000/100 = x{ratio:.2f} (target <= x{FLAT_TARGET}: "
          f"{'met' if ratio <= FLAT_TARGET else 'NOT met'})")
    slope = (costs[10_000] - costs[100]) / 9_900
    print(f"  slope 100 -> 10,000: {slope * 1e9:.1f} ns per instance (the Python work is "
          "O(changed); what grows is copying the instance and endpoint tuples once each)")

    print("\nthe same change published as a whole unsorted snapshot, as a driver does "
          "(Broadcaster diff -> Endpointer)")
    whole = {size: snapshot_change_cost(size, changes) for size in (100, 10_000)}
    print(f"  100 instances: {whole[100] * 1e6:8.1f} µs   10,000 instances: "
          f"{whole[10_000] * 1e6:8.1f} µs   ratio x{whole[10_000] / whole[100]:.1f} "
          f"(target <= {SNAPSHOT_TARGET_US:.0f} µs at 10,000: "
          f"{'met' if whole[10_000] * 1e6 <= SNAPSHOT_TARGET_US else 'NOT met'})")

    print("\nsnapshot() latency in a picking thread during changes at 10,000 instances")
    for label, interval in (("default switch interval", None), ("switch interval 50 µs", 5e-5)):
        p99, worst, overlapping, worst_overlapping = pick_latency(10_000, changes, interval)
        print(f"  {label}: all picks p99 {p99 * 1e6:.1f} µs, max {worst * 1e6:.1f} µs; "
              f"{overlapping} picks begun during a change: max {worst_overlapping * 1e6:.1f} µs "
              f"(target <= {PICK_TARGET_US:.0f} µs: "
              f"{'met' if worst_overlapping * 1e6 <= PICK_TARGET_US else 'NOT met'})")

    print("\nclean_instances over fresh registry values (median)")
    clean = {size: clean_cost(size, 5 if args.quick else 15) for size in (100, 10_000)}
    per_10k = clean[10_000]
    print(f"  100 values: {clean[100] * 1e3:7.3f} ms   10,000 values: {per_10k * 1e3:7.2f} ms   "
          f"ratio 10,000/100 = x{per_10k / clean[100]:.0f} (x100 is linear)")
    print(f"  target: <= {CLEAN_TARGET_MS:.0f} ms per 10,000 "
          f"({'met' if per_10k * 1e3 <= CLEAN_TARGET_MS else 'NOT met'})")


if __name__ == "__main__":
    main()
