"""Zone-aware routing (issue 21.2): calls kept in the caller's zone, and a zone dying.

    python -m bench.bench_zones [--quick]

Nine local HTTP instances in three zones (``InstanceInfo.meta["zone"]``), the
caller in zone ``a``.  Under a steady open-loop load (200 calls/s through
``lb.retry_async(3, ...)``): first all healthy, then every instance of zone
``a`` stops at once (listener closed, connections cut).  Shown per balancer,
without ``zones=`` (the baseline) and with ``lb.Zones("a")``: the share of calls
answered in zone ``a`` while healthy, and the calls that failed after the zone
died (with where they went).  Targets: in-zone >= 95 % when healthy, 0 failed.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from typing import Any

from bench._load import drive
from bench._servers import Instances, RawEndpoint
from kitsd import lb, sd

RATE = 200.0
ZONES = "abc"
TARGET = 0.95


async def scenario(make: Any, zones: lb.Zones | None, healthy: float,
                   dead: float) -> tuple[float, int, Counter[str], int]:
    with Instances(9, delay=0.005) as servers:
        zone_of = {address.rpartition(":")[2]: ZONES[index % 3]
                   for index, address in enumerate(servers.addresses)}
        registry = sd.MemoryRegistry()
        for index, address in enumerate(servers.addresses):
            registry.registrar("svc", address, info=sd.InstanceInfo(
                meta={"zone": ZONES[index % 3]})).register()
        endpointer = sd.Endpointer(registry.instancer("svc"), RawEndpoint)
        options: dict[str, Any] = {} if zones is None else {"zones": zones}
        balancer = make(endpointer, **options)
        retrying = lb.retry_async(3, 2.0, balancer)
        answered: list[tuple[float, str]] = []
        loop = asyncio.get_running_loop()

        async def call(number: int) -> Any:
            port = await retrying(number)
            answered.append((loop.time(), zone_of[port]))
            return port

        def kill_zone_a() -> None:
            for index in range(0, 9, 3):
                servers.command("down", index)

        begin = loop.time()
        run = await drive(call, lambda t: RATE, healthy + dead, {healthy: kill_zone_a})
        await endpointer.aclose()
        before = [zone for when, zone in answered if when - begin < healthy]
        after = Counter(zone for when, zone in answered if when - begin >= healthy + 0.01)
        in_zone = before.count("a") / max(len(before), 1)
        failed_after = sum(each.error is not None for each in run.between(healthy, healthy + dead))
        failed_before = sum(each.error is not None for each in run.between(0.0, healthy))
        return in_zone, failed_after, after, failed_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (CI)")
    args = parser.parse_args()
    healthy, dead = (2.0, 2.0) if args.quick else (5.0, 5.0)
    balancers = {
        "RoundRobin": lambda source, **options: lb.RoundRobin(source, **options),
        "Weighted": lambda source, **options: lb.Weighted(source, **options),
        "PeakEWMA": lambda source, **options: lb.PeakEWMA(source, seed=1, **options),
    }
    print(f"9 instances in zones a, b, c; caller in a; {RATE:g} calls/s; zone a dies at "
          f"t={healthy:g}s")
    print(f"  {'balancer':<11} {'zones':<12} {'in-zone':>8} {'failed':>7}  after the zone died")
    verdicts = []
    for name, make in balancers.items():
        for zones in (None, lb.Zones("a")):
            in_zone, failed, after, failed_before = asyncio.run(
                scenario(make, zones, healthy, dead))
            spread = ", ".join(f"{zone} {count}" for zone, count in sorted(after.items()))
            label = "off" if zones is None else 'Zones("a")'
            print(f"  {name:<11} {label:<12} {in_zone * 100:7.1f}% {failed + failed_before:7d}"
                  f"  {spread}")
            if zones is not None:
                verdicts.append((name, in_zone, failed + failed_before))
    print()
    for name, in_zone, failed in verdicts:
        ok = in_zone >= TARGET and failed == 0
        print(f"  {name}: {in_zone * 100:.1f}% in zone when healthy, {failed} failed when the "
              f"zone died (target >= {TARGET * 100:g}%, 0): {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
