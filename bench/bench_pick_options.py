"""Pick cost with the issue-21 options on, at 10 vs 10,000 instances (and off, the
baseline of the same run).

    python -m bench.bench_pick_options

For 10 and 10,000 instances behind an ``sd.Endpointer`` (trivial endpoints), the
median cost of one pick for each balancer: plain, with ``slow_start=`` while
nothing ramps (``lb.SlowStart()``, the steady state of a transport that has it
on by default), with ``slow_start=`` while a tenth of the instances ramp, with
``zones=`` (three zones, metadata from the instancer), and with ``subset=`` (an
aperture of 10).  The last columns are the
ratio 10,000 / 10 (target <= 1.2, as for plain picks) and the cost over the plain
pick at 10,000.  The sizes of a row are timed in turn within each repeat, so
background load hits them alike; read the ratios, judged on the fastest repeats.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable
from typing import Any

from kitsd import lb, sd

SIZES = (10, 10_000)
REPEATS = 31
NUMBER = 2_000
TARGET = 1.2
Make = Callable[..., Any]
BALANCERS: dict[str, Make] = {
    "RoundRobin": lambda source, **options: lb.RoundRobin(source, **options),
    "Random": lambda source, **options: lb.Random(source, seed=1, **options),
    "LeastLoaded": lambda source, **options: lb.LeastLoaded(source, seed=1, **options),
    "PeakEWMA": lambda source, **options: lb.PeakEWMA(source, seed=1, **options),
    "Weighted": lambda source, **options: lb.Weighted(source, **options),
}


def endpoint(request: Any) -> Any:
    return request


def names(count: int) -> list[str]:
    return [f"10.{index // 65536}.{index // 256 % 256}.{index % 256}:80"
            for index in range(count)]


def prepared(size: int, make: Make, option: str) -> Callable[[], Any]:
    instances = names(size)
    info = {instance: sd.InstanceInfo(meta={"zone": "abc"[index % 3]})
            for index, instance in enumerate(instances)}
    registry = sd.MemoryRegistry()
    ramping = set() if option == "slow idle" else set(instances[: max(1, size // 10)])
    for instance in instances:
        if instance not in ramping:
            registry.registrar("svc", instance, info=info[instance]).register()
    source = sd.Endpointer(registry.instancer("svc"), lambda instance: endpoint)
    choices: dict[str, dict[str, Any]] = {
        "plain": {},
        "slow idle": {"slow_start": lb.SlowStart()},
        "slow_start": {"slow_start": lb.SlowStart(window=3600.0)},
        "zones": {"zones": lb.Zones("a")},
        "subset": {"subset": lb.Aperture(size=10, client=3, clients=7)},
    }
    options = choices[option]
    balancer = make(source, **options)
    balancer.pick()
    for instance in ramping:  # newcomers: they ramp under slow start
        registry.registrar("svc", instance, info=info[instance]).register()
    balancer.pick()
    assert (balancer._shaping is None) == (option == "plain")
    return balancer.pick  # type: ignore[no-any-return]


OPTIONS = ("plain", "slow idle", "slow_start", "zones", "subset")


def main() -> None:
    print(f"median ns per pick ({REPEATS} x {NUMBER:,} picks); ratio 10,000 / 10 "
          f"(target <= {TARGET}); cost = option / plain (median of the per-repeat "
          "ratios) at 10,000 and at 10")
    print(f"  {'balancer':<12} {'option':<11}{'10':>9}{'10,000':>9}   ratio  fastest    cost"
          "  (at 10)")
    worst = 0.0
    for name, make in BALANCERS.items():
        picks = {(option, size): prepared(size, make, option)
                 for option in OPTIONS for size in SIZES}
        runs: dict[tuple[str, int], list[float]] = {key: [] for key in picks}
        for _ in range(REPEATS):  # every option and size in turn: load hits them alike
            for key, pick in picks.items():
                runs[key].append(timeit.timeit(pick, number=NUMBER) / NUMBER * 1e9)
        for option in OPTIONS:
            small, big = (statistics.median(runs[(option, size)]) for size in SIZES)
            fastest = min(runs[(option, SIZES[1])]) / min(runs[(option, SIZES[0])])
            worst = max(worst, fastest)
            cost = {size: statistics.median(
                mine / plain for mine, plain in zip(runs[(option, size)],
                                                    runs[("plain", size)], strict=True))
                for size in SIZES}
            print(f"  {name:<12} {option:<11}{small:9.0f}{big:9.0f}   x{big / small:4.2f}"
                  f"   x{fastest:4.2f}   x{cost[SIZES[1]]:4.2f}   x{cost[SIZES[0]]:4.2f}")
    verdict = "met" if worst <= TARGET else "MISSED"
    print(f"\n  worst ratio (fastest repeats) x{worst:.2f} (target x{TARGET}): {verdict}")


if __name__ == "__main__":
    main()
