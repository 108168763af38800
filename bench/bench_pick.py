"""Pick cost against the number of instances, for every balancer (issue 6.7).

    python -m bench.bench_pick

For 10, 100, 1,000 and 10,000 instances behind an ``sd.Endpointer`` over an
``sd.FixedInstancer`` (trivial endpoints), prints the median cost of one pick
for RoundRobin, Random and LeastLoaded: with nothing ejected, with one instance
ejected, with 40 % ejected (a contiguous block of the sorted instances, the hard
case for probing in order), and with 40 % ejected plus two instances excluded
by the call (what a retry's third attempt asks).  The last column is the ratio
10,000 / 10 per row against the 1.2 target.

The machines here are small and shared: the sizes of one row are timed in turn
within each repeat (many short repeats), so background load hits them alike.
The cells are the medians of the repeats; the ratio is shown from the medians
and from the fastest repeats (the least disturbed), and the verdict uses the
latter.  Read the ratios, not the absolute nanoseconds.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable
from typing import Any

from kitsd import lb, sd

SIZES = (10, 100, 1_000, 10_000)
TARGET = 1.2
REPEATS = 41
NUMBER = 2_000
REFUSED = ConnectionRefusedError("refused")
# long ejections, so that none ends during the measurement
LONG = lb.OutlierDetection(base_ejection_time=3600.0, max_ejection_time=3600.0)
BALANCERS: dict[str, Callable[[sd.Endpointer], Any]] = {
    "RoundRobin": lambda source: lb.RoundRobin(source, outlier_detection=LONG),
    "Random": lambda source: lb.Random(source, seed=1, outlier_detection=LONG),
    "LeastLoaded": lambda source: lb.LeastLoaded(source, seed=1, outlier_detection=LONG),
}
SCENARIOS = ("none ejected", "1 ejected", "40% ejected", "40% + 2 excluded")


def endpoint(request: Any) -> Any:
    return request


def instances(n: int) -> list[str]:
    return [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:80" for i in range(n)]


def prepared(endpointer: sd.Endpointer, make: Callable[[sd.Endpointer], Any],
             scenario: str) -> Callable[[], Any]:
    """A pick call for ``scenario``, its ejections made through ``report``."""
    found = endpointer.snapshot()
    names, endpoints = found.instances, found.endpoints
    balancer = make(endpointer)
    balancer.pick()
    count = {"none ejected": 0, "1 ejected": 1}.get(scenario, len(names) * 4 // 10)
    for index in range(count):
        balancer.report(lb.Pick(names[index], endpoints[index]), REFUSED)
    assert len(balancer.ejected()) == count, (scenario, len(balancer.ejected()))
    if scenario == "40% + 2 excluded":
        excluded = {names[-1], names[-2]}
        return lambda: balancer.pick(excluded)
    return balancer.pick  # type: ignore[no-any-return]


def main() -> None:
    endpointers = {}
    for size in SIZES:
        named = dict.fromkeys(instances(size), endpoint)
        endpointers[size] = sd.Endpointer(sd.FixedInstancer(named), named.__getitem__)
    print(f"median ns per pick ({REPEATS} x {NUMBER:,} picks); ratio = 10,000 / 10 "
          f"instances, target <= {TARGET}")
    header = "".join(f"{size:>9,}" for size in SIZES)
    print(f"  {'balancer':<12} {'scenario':<18}{header}   median  fastest")
    worst = 0.0
    try:
        for name, make in BALANCERS.items():
            for scenario in SCENARIOS:
                calls = {size: prepared(endpointers[size], make, scenario) for size in SIZES}
                runs: dict[int, list[float]] = {size: [] for size in SIZES}
                for _ in range(REPEATS):
                    for size in SIZES:
                        seconds = timeit.timeit(calls[size], number=NUMBER)
                        runs[size].append(seconds / NUMBER)
                median = {size: statistics.median(runs[size]) for size in SIZES}
                fastest = {size: min(runs[size]) for size in SIZES}
                ratio = median[SIZES[-1]] / median[SIZES[0]]
                best = fastest[SIZES[-1]] / fastest[SIZES[0]]
                worst = max(worst, best)
                cells = "".join(f"{median[size] * 1e9:9.0f}" for size in SIZES)
                verdict = "ok" if best <= TARGET else "OVER"
                print(f"  {name:<12} {scenario:<18}{cells}    x{ratio:4.2f}   "
                      f"x{best:4.2f} {verdict}", flush=True)
    finally:
        for endpointer in endpointers.values():
            endpointer.close()
    print(f"\n  worst ratio (fastest repeats) x{worst:.2f} (target x{TARGET})")


if __name__ == "__main__":
    main()
