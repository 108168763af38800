"""An adaptive concurrency limit against overload (issue 21.4), with and without it.

    python -m bench.bench_concurrency_limit [--quick]

One local HTTP instance with a fixed capacity: 16 calls served at once, 50 ms
each (320 calls/s); the rest wait in its queue, as a saturated server's do.  An
open-loop load through ``lb.retry_async(1, 1.0, ...)`` steps up from 0.3x the
capacity (the unloaded latency) through 1x and 2x to 3x.  Shown per step:
goodput (calls answered within the 1 s deadline, per second), p99 of those, and
calls refused by the limit or failed.  Targets at 3x: goodput >= 90 % of the
capacity, p99 within 2x of the unloaded p99.  Without a limit the queue grows
until every call times out, and the instance keeps working on calls nobody
waits for.  ``AIMDLimit`` is shown with a timeout of twice the no-load latency
and without one (then it sees no queue, only deadlines: the gradient limit is
the one for a service that queues rather than sheds load).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bench._load import Run, drive
from bench._servers import Instances, RawEndpoint, percentile
from kitsd import lb, sd

CAPACITY = 16
SERVICE = 0.05
FULL = CAPACITY / SERVICE
TIMEOUT = 1.0


async def scenario(limit: Any, steps: list[tuple[float, float]]) -> Run:
    with Instances(1, delay=SERVICE) as servers:
        servers.command("capacity", 0, CAPACITY)
        endpointer = sd.Endpointer(sd.FixedInstancer(servers.addresses), RawEndpoint)
        options: dict[str, Any] = {} if limit is None else {"limit": limit}
        call = lb.retry_async(1, TIMEOUT, lb.RoundRobin(endpointer), **options)
        ends = []
        elapsed = 0.0
        for seconds, load in steps:
            elapsed += seconds
            ends.append((elapsed, load))

        def rate(t: float) -> float:
            for end, load in ends:
                if t < end:
                    return load * FULL
            return ends[-1][1] * FULL

        run = await drive(call, rate, elapsed)
        await endpointer.aclose()
        return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter steps (CI)")
    args = parser.parse_args()
    length = 2.0 if args.quick else 4.0
    steps = [(length, 0.3), (length, 1.0), (length, 2.0), (2 * length, 3.0)]
    print(f"one instance: {CAPACITY} at once x {SERVICE * 1000:g} ms = {FULL:g} calls/s; "
          f"deadline {TIMEOUT:g} s; steps of {length:g} s (3x: {2 * length:g} s, the last "
          f"{length:g} s measured)")
    print(f"  {'limit':<16} {'load':>5} {'goodput':>9} {'of cap':>7} {'p50':>8} {'p99':>8} "
          f"{'refused':>8} {'failed':>7}")
    verdicts = []
    for label, limit in (("none", None), ("GradientLimit()", lb.GradientLimit()),
                         ("AIMDLimit(0.1s)", lb.AIMDLimit(timeout=0.1)),
                         ("AIMDLimit()", lb.AIMDLimit())):
        run = asyncio.run(scenario(limit, steps))
        start = 0.0
        unloaded = 0.0
        for seconds, load in steps:
            end = start + seconds
            measured_from = end - length if load == 3.0 else start + seconds / 2
            window = run.between(measured_from, end)
            good = [each.latency for each in window
                    if each.error is None and each.latency <= TIMEOUT]
            refused = sum(isinstance(each.error, lb.LimitExceeded) for each in window)
            failed = sum(each.error is not None and not isinstance(each.error, lb.LimitExceeded)
                         for each in window)
            goodput = len(good) / (end - measured_from)
            p99 = percentile(good, 0.99)
            if load == 0.3:
                unloaded = p99
            print(f"  {label:<16} {load:4.1f}x {goodput:7.1f}/s {goodput / FULL * 100:6.1f}% "
                  f"{percentile(good, 0.5) * 1000:6.1f}ms {p99 * 1000:6.1f}ms {refused:8d} "
                  f"{failed:7d}")
            if load == 3.0 and limit is not None:
                verdicts.append((label, goodput / FULL, p99 / unloaded))
            start = end
    print()
    for label, share, stretch in verdicts:
        ok = share >= 0.9 and stretch <= 2.0
        print(f"  {label}: goodput {share * 100:.1f}% of capacity at 3x, p99 x{stretch:.2f} "
              f"of unloaded (targets >= 90 %, <= x2): {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
