"""Slow start during a scale-up (issue 21.1), measured against no slow start in one run.

    python -m bench.bench_slow_start [--quick]

Six local HTTP instances answer in 10 ms — except during their first 5 s, when
they are 10x slower (100 ms: cold caches, a JIT, empty pools).  Three serve from
the start; under a steady open-loop load (200 calls/s through ``lb.retry_async``)
the other three start and register at once (a scale-up from 3 to 6).  Shown,
for the calls started in the 10 s after the scale-up: p50, p99, the share that
went to a cold instance, and failed calls; each balancer without and with slow
start.  Target: p99 with slow start >= 3x lower than without, 0 failed.

``SlowStart`` is given as one would for a service that is cold for 5 s: a window
well past that, holding back early (``aggression`` 0.5: the share grows as the
square of the time) from a 0.5 % floor, so that the calls a cold instance gets
stay under the 1 % a p99 can absorb.  The defaults (30 s, linear, 10 %) are
shown too: a linear ramp from 10 % still sends a cold instance about a tenth of
a warm one's calls.  (PeakEWMA alone does not avoid them either: with half the
fleet cold, a fifth of its random pairs hold two cold instances.)
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bench._load import Run, drive
from bench._servers import Instances, RawEndpoint, percentile
from kitsd import lb, sd

RATE = 200.0
COLD_SECONDS = 5.0
COLD_FACTOR = 10.0
TUNED = lb.SlowStart(window=60.0, aggression=0.5, min_weight_percent=0.5)
DEFAULT = lb.SlowStart()
TARGET = 3.0


async def scenario(make: Any, slow_start: lb.SlowStart | None, warm_up: float,
                   after: float) -> tuple[Run, set[str], float]:
    with Instances(6, delay=0.010) as servers:
        registry = sd.MemoryRegistry()
        for address in servers.addresses[:3]:
            registry.registrar("svc", address).register()
        endpointer = sd.Endpointer(registry.instancer("svc"), RawEndpoint)
        options: dict[str, Any] = {} if slow_start is None else {"slow_start": slow_start}
        balancer = make(endpointer, **options)
        call = lb.retry_async(3, 2.0, balancer)
        cold = set(servers.addresses[3:])

        def scale_up() -> None:
            for index, address in enumerate(servers.addresses[3:], start=3):
                servers.command("cold", index, COLD_SECONDS, COLD_FACTOR)
                registry.registrar("svc", address).register()

        run = await drive(call, lambda t: RATE, warm_up + after, {warm_up: scale_up})
        await endpointer.aclose()
        return run, cold, warm_up


def summary(run: Run, warm_up: float, after: float) -> tuple[float, float, float, int]:
    window = run.between(warm_up, warm_up + after)
    latencies = [each.latency for each in window if each.error is None]
    slow = sum(each.latency > 0.05 for each in window) / max(len(window), 1)
    failed = sum(each.error is not None for each in window)
    return percentile(latencies, 0.5), percentile(latencies, 0.99), slow, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (CI)")
    args = parser.parse_args()
    warm_up, after = (3.0, 6.0) if args.quick else (5.0, 10.0)
    balancers = {
        "RoundRobin": lambda source, **options: lb.RoundRobin(source, **options),
        "PeakEWMA": lambda source, **options: lb.PeakEWMA(source, seed=1, **options),
    }
    print(f"scale-up 3 -> 6 at t={warm_up:g}s, {RATE:g} calls/s; newcomers {COLD_FACTOR:g}x "
          f"slower for {COLD_SECONDS:g}s; calls started in the {after:g}s after the scale-up")
    print(f"  {'balancer':<11} {'slow start':<34} {'p50':>8} {'p99':>8} {'>50ms':>7} "
          f"{'failed':>6}  p99 gain")
    verdicts = []
    for name, make in balancers.items():
        baseline = None
        for label, slow_start in (("off", None), ("window=60 aggression=0.5 min=0.5%", TUNED),
                                  ("defaults (30 s, linear, 10 %)", DEFAULT)):
            run, _, _ = asyncio.run(scenario(make, slow_start, warm_up, after))
            p50, p99, slow, failed = summary(run, warm_up, after)
            if baseline is None:
                baseline = p99
                gain = ""
            else:
                gain = f"x{baseline / p99:.1f}"
                if slow_start is TUNED:
                    verdicts.append((name, baseline / p99, failed))
            print(f"  {name:<11} {label:<34} {p50 * 1000:6.1f}ms {p99 * 1000:6.1f}ms "
                  f"{slow * 100:6.1f}% {failed:6d}  {gain}")
    print()
    for name, ratio, failures in verdicts:
        ok = ratio >= TARGET and failures == 0
        print(f"  {name}: p99 x{ratio:.1f} lower with slow start, {failures} failed "
              f"(target >= x{TARGET:g}, 0 failed): {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
