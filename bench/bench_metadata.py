"""Instance metadata at scale: what one change costs when every instance carries metadata.

    python -m bench.bench_metadata

Printed (median µs of 40 changes, :class:`sd.MemoryRegistry` -> :class:`sd.Endpointer`,
10,000 instances), each against the same change without any metadata measured in the
same run:

* **join** -- one instance registering; with metadata, all 10,000 carry a weight.
* **weight change** -- one registered instance re-registered with a new weight: a
  metadata-only change (a new ``EndpointSet`` over the same endpoints).

Target: ≤ 1 ms at 10,000 either way (issue 8, as bench_scale's change cost).  The machines
here are small and noisy: read medians and ratios.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from kitsd import sd

SIZE = 10_000
CHANGES = 40
TARGET_US = 1_000.0


def instance(number: int) -> str:
    return f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}:8080"


def endpoint(request: Any) -> Any:
    return request


def measure(with_info: bool) -> tuple[float, float]:
    registry = sd.MemoryRegistry()
    info = sd.InstanceInfo(weight=2) if with_info else None
    for number in range(SIZE):
        registry.registrar("users", instance(number), info=info).register()
    endpointer = sd.Endpointer(registry.instancer("users"), lambda _instance: endpoint)
    joins: list[float] = []
    for number in range(CHANGES):
        registrar = registry.registrar("users", instance(2 * SIZE + number), info=info)
        start = time.perf_counter()
        registrar.register()
        joins.append(time.perf_counter() - start)
    reweights: list[float] = []
    for number in range(CHANGES):
        registrar = registry.registrar("users", instance(number),
                                       info=sd.InstanceInfo(weight=3 + number))
        before = endpointer.snapshot()
        start = time.perf_counter()
        registrar.register()
        reweights.append(time.perf_counter() - start)
        assert endpointer.snapshot() is not before  # the change reached the Endpointer
    endpointer.close()
    return statistics.median(joins) * 1e6, statistics.median(reweights) * 1e6


def main() -> None:
    plain_join, plain_weight = measure(with_info=False)
    info_join, info_weight = measure(with_info=True)
    print(f"one change at {SIZE:,} instances, MemoryRegistry -> Endpointer (median of {CHANGES})")
    print(f"  join:          no metadata {plain_join:7.1f} µs   all with metadata "
          f"{info_join:7.1f} µs   ratio x{info_join / plain_join:.2f}")
    print(f"  weight change: no metadata elsewhere {plain_weight:7.1f} µs   all with metadata "
          f"{info_weight:7.1f} µs   ratio x{info_weight / plain_weight:.2f}")
    worst = max(info_join, info_weight)
    verdict = "met" if worst <= TARGET_US else "NOT met"
    print(f"  target: <= {TARGET_US:.0f} µs at {SIZE:,} ({verdict})")


if __name__ == "__main__":
    main()
