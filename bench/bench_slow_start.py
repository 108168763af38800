"""Slow start during a scale-up (issue 21.1), measured against no slow start in one run.

    python -m bench.bench_slow_start [--quick] [--runs 3]

Six local HTTP instances answer in 10 ms — except during their first 5 s, when
they are 10x slower (100 ms: cold caches, a JIT, empty pools).  Three serve from
the start; under a steady open-loop load (200 calls/s through ``lb.retry_async``)
the other three start and register at once (a scale-up from 3 to 6).  Shown,
for the calls started in the 10 s after the scale-up: p50, p99, the calls slower
than 50 ms, those answered by a newcomer while it was cold, and failed calls;
each balancer without slow start, with ``lb.SlowStart()`` (its defaults) and with
Envoy's curve (linear from a 10 % floor).  Each configuration runs ``--runs``
times, interleaved; shown are medians (the p99 of 2,000 calls is their 20th
slowest: a loaded machine's stalls of the client alone can reach it, the cold
calls are what slow start decides).  Target: p99 with slow start >= 3x lower
than without, 0 failed.

The first run with the defaults goes on past the end of the window, and its
newcomers' share of calls is followed second by second against their fair share
(half the calls, three of six instances): when they reach half and 90 % of it
(not starved for long), the largest rise of their share from one second to the
next, and their share in the seconds after the window (no surge when a ramp
ends, envoy#26290).

Why the defaults are not Envoy's: a p99 hides at most 1 % of calls, so the
calls a cold instance gets must stay under that.  Three newcomers at a factor
``f`` of a warm instance's share get ``f / (1 + f)`` of all calls: Envoy's
linear ramp from 10 % gives them about 10 % of the calls of their first 5 s (5 %
of this window), and the p99 is a cold call's.  ``SlowStart()`` holds them at a
0.5 % floor for ~6 s, then grows the share as ``t ** 3.3`` (``aggression`` 0.3), over the
same 30 s: ~0.5 % of the first 5 s (0.25 % of the window), and a fair share at
30 s all the same.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
from typing import Any

from bench._load import Run, drive
from bench._servers import Instances, RawEndpoint, percentile
from kitsd import lb, sd

RATE = 200.0
COLD_SECONDS = 5.0
COLD_FACTOR = 10.0
DEFAULTS = lb.SlowStart()
ENVOY = lb.SlowStart(aggression=1.0, min_weight_percent=10.0)
TARGET = 3.0
#: seconds followed after the end of the window
AFTER_WINDOW = 5.0


async def scenario(make: Any, slow_start: lb.SlowStart | None, warm_up: float,
                   seconds: float) -> tuple[Run, set[str]]:
    """A run of ``warm_up + seconds``, the scale-up at ``warm_up``; the newcomers' ports."""
    with Instances(6, delay=0.010) as servers:
        registry = sd.MemoryRegistry()
        for address in servers.addresses[:3]:
            registry.registrar("svc", address).register()
        endpointer = sd.Endpointer(registry.instancer("svc"), RawEndpoint)
        options: dict[str, Any] = {} if slow_start is None else {"slow_start": slow_start}
        balancer = make(endpointer, **options)
        call = lb.retry_async(3, 2.0, balancer)
        newcomers = {address.rpartition(":")[2] for address in servers.addresses[3:]}

        def scale_up() -> None:
            for index, address in enumerate(servers.addresses[3:], start=3):
                servers.command("cold", index, COLD_SECONDS, COLD_FACTOR)
                registry.registrar("svc", address).register()

        run = await drive(call, lambda t: RATE, warm_up + seconds, {warm_up: scale_up})
        await endpointer.aclose()
        return run, newcomers


def summary(run: Run, newcomers: set[str], warm_up: float,
            after: float) -> tuple[float, float, float, int, int]:
    """p50, p99, the share slower than 50 ms, calls a newcomer answered while cold,
    failed calls (of the calls started in the ``after`` seconds from ``warm_up``)."""
    window = run.between(warm_up, warm_up + after)
    latencies = [each.latency for each in window if each.error is None]
    slow = sum(each.latency > 0.05 for each in window) / max(len(window), 1)
    cold = sum(each.value in newcomers and each.started < warm_up + COLD_SECONDS
               for each in window)
    failed = sum(each.error is not None for each in window)
    return percentile(latencies, 0.5), percentile(latencies, 0.99), slow, cold, failed


def ramp(run: Run, newcomers: set[str], warm_up: float, window: float) -> str:
    """The newcomers' share of calls, second by second from the scale-up, against a
    fair share (half): when it reaches 50 % and 90 % of fair, its largest rise in
    one second, and its mean and largest second after the window."""
    fair = 0.5
    shares = []
    for second in range(int(window + AFTER_WINDOW)):
        calls = [each for each in run.between(warm_up + second, warm_up + second + 1)
                 if each.error is None]
        theirs = sum(each.value in newcomers for each in calls)
        shares.append(theirs / max(len(calls), 1))

    def reached(fraction: float) -> str:
        for second, share in enumerate(shares):
            if share >= fraction * fair:
                return f"{second + 1}s"
        return "never"

    rise, at = max((b - a, second + 1) for second, (a, b) in enumerate(itertools.pairwise(shares)))
    after = shares[int(window):]
    late = [each.latency for each in run.between(warm_up + window - 2, warm_up + window + 3)
            if each.error is None]
    return (f"newcomers' share (fair {fair * 100:.0f} %): half of fair at {reached(0.5)}, "
            f"90 % at {reached(0.9)}; largest 1 s rise {rise * 100:.1f} points (second "
            f"{at + 1}); after the window ({window:g} s) {sum(after) / len(after) * 100:.1f} % "
            f"mean, {max(after) * 100:.1f} % at most; p99 around the window's end "
            f"{percentile(late, 0.99) * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="shorter runs, no run past the window (CI)")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration")
    args = parser.parse_args()
    warm_up, after = (3.0, 6.0) if args.quick else (5.0, 10.0)
    balancers = {
        "RoundRobin": lambda source, **options: lb.RoundRobin(source, **options),
        "PeakEWMA": lambda source, **options: lb.PeakEWMA(source, seed=1, **options),
    }
    configurations = (
        ("off", None),
        ("SlowStart() (30 s, aggression 0.3, 0.5 %)", DEFAULTS),
        ("Envoy's curve (30 s, linear, 10 %)", ENVOY),
    )
    print(f"scale-up 3 -> 6 at t={warm_up:g}s, {RATE:g} calls/s; newcomers {COLD_FACTOR:g}x "
          f"slower for {COLD_SECONDS:g}s; calls started in the {after:g}s after the scale-up; "
          f"medians of {args.runs} runs")
    print(f"  {'balancer':<11} {'slow start':<42} {'p50':>8} {'p99':>8} {'>50ms':>6} "
          f"{'cold':>5} {'failed':>6}  p99 gain")
    verdicts = []
    ramps = []
    for name, make in balancers.items():
        results: dict[str, list[tuple[float, float, float, int, int]]] = {
            label: [] for label, _ in configurations}
        for number in range(args.runs):
            for label, slow_start in configurations:
                seconds = after
                followed = slow_start is DEFAULTS and number == 0 and not args.quick
                if followed:
                    seconds = max(after, DEFAULTS.window + AFTER_WINDOW)
                run, newcomers = asyncio.run(scenario(make, slow_start, warm_up, seconds))
                results[label].append(summary(run, newcomers, warm_up, after))
                if followed:
                    ramps.append((name, ramp(run, newcomers, warm_up, DEFAULTS.window)))
        baseline = statistics.median(each[1] for each in results["off"])
        for label, slow_start in configurations:
            rows = results[label]
            p50, p99, slow = (statistics.median(each[index] for each in rows)
                              for index in range(3))
            cold = statistics.median(each[3] for each in rows)
            failed = sum(each[4] for each in rows)
            gain = "" if slow_start is None else f"x{baseline / p99:.1f}"
            if slow_start is DEFAULTS:
                verdicts.append((name, baseline / p99, failed))
            print(f"  {name:<11} {label:<42} {p50 * 1000:6.1f}ms {p99 * 1000:6.1f}ms "
                  f"{slow * 100:5.1f}% {cold:5.0f} {failed:6d}  {gain}")
    print()
    for name, text in ramps:
        print(f"  {name}, SlowStart(): {text}")
    for name, ratio, failures in verdicts:
        ok = ratio >= TARGET and failures == 0
        print(f"  {name}: p99 x{ratio:.1f} lower with SlowStart(), {failures} failed "
              f"(target >= x{TARGET:g}, 0 failed): {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
