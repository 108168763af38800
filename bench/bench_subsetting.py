"""Deterministic subsetting (issue 21.5): 30 client processes x 100 instances on loopback.

    python -m bench.bench_subsetting [--quick]

One child process serves 100 local HTTP instances and counts, per instance, the
connections it accepted and the calls it served.  30 client processes (each its
own interpreter, as separate services would be) each balance 300 calls, one at
a time, with ``lb.RoundRobin(..., subset=lb.Aperture(size=10, client=i,
clients=30))`` over all 100 instances.  The baseline: each client takes 10
instances at random (seeded by its index) and round-robins over them.  Shown:
connections per instance (max / min; target <= 1.5 with an aperture of 10),
calls per instance (max / min), instances per client, and — running again with
31 clients — how many of its instances each of the first 30 clients changed when
one client joined.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
from collections import Counter
from typing import Any

from bench._servers import Instances, RawEndpoint
from kitsd import lb, sd

INSTANCES = 100
CLIENTS = 30
APERTURE = 10
TARGET = 1.5


async def client(index: int, clients: int, mode: str, calls: int, addresses: list[str]) -> None:
    """One client process's work: prints the instances it used, as JSON."""
    if mode == "random":
        chosen = random.Random(index).sample(sorted(addresses), APERTURE)
        endpointer = sd.Endpointer(sd.FixedInstancer(chosen), RawEndpoint)
        balancer: Any = lb.RoundRobin(endpointer)
    else:
        endpointer = sd.Endpointer(sd.FixedInstancer(addresses), RawEndpoint)
        balancer = lb.RoundRobin(endpointer, subset=lb.Aperture(
            size=APERTURE, client=index, clients=clients))
    call = lb.retry_async(2, 5.0, balancer)
    used: Counter[str] = Counter()
    for number in range(calls):
        used[await call(number)] += 1
    await endpointer.aclose()
    print(json.dumps(used))


def run_clients(clients: int, mode: str, calls: int, servers: Instances
                ) -> list[dict[str, int]]:
    addresses = " ".join(servers.addresses)
    children = [
        # our own interpreter and module, numbers we formatted: no untrusted input
        subprocess.Popen([sys.executable, "-m", "bench.bench_subsetting", "--client",  # noqa: S603
                          str(index), str(clients), mode, str(calls)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for index in range(clients)]
    results = []
    for child in children:
        output, _ = child.communicate(addresses, timeout=300)
        results.append(json.loads(output))
    return results


def measure(mode: str, calls: int) -> tuple[dict[str, dict[str, int]], list[set[int]],
                                             list[set[int]]]:
    # Instances are compared by their rank in the sorted set (what the balancers
    # order them by): the second run's instances listen on other ports.
    with Instances(INSTANCES, delay=0.0) as servers:
        first_rank = ranks(servers.addresses)
        first = run_clients(CLIENTS, mode, calls, servers)
        stats = servers.stats()
    with Instances(INSTANCES, delay=0.0) as servers:
        second_rank = ranks(servers.addresses)
        second = run_clients(CLIENTS + 1, mode, calls, servers)
    before = [{first_rank[port] for port in used} for used in first]
    after = [{second_rank[port] for port in used} for used in second[:CLIENTS]]
    return stats, before, after


def ranks(addresses: list[str]) -> dict[str, int]:
    """Each instance's port -> its rank among the sorted instance strings."""
    return {address.rpartition(":")[2]: rank for rank, address in enumerate(sorted(addresses))}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        index, clients, kind, count = sys.argv[2:6]
        addresses = sys.stdin.read().split()
        asyncio.run(client(int(index), int(clients), kind, int(count), addresses))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls per client (CI)")
    args = parser.parse_args()
    calls = 100 if args.quick else 300
    print(f"{CLIENTS} client processes x {INSTANCES} instances, {calls} calls each, "
          f"subsets of {APERTURE}")
    print(f"  {'subsets':<22} {'conns/instance':>15} {'max/min':>8} {'calls max/min':>14} "
          f"{'per client':>11}  instances dropped/added per client when one joins (mean, max)")
    verdict = None
    for label, mode in (("random 10 (baseline)", "random"),
                        ("lb.Aperture(size=10)", "aperture")):
        stats, before, after = measure(mode, calls)
        connections = [each["accepted"] for each in stats.values()]
        served = [each["served"] for each in stats.values()]
        low = min(connections)
        spread = max(connections) / low if low else float("inf")
        load = max(served) / min(served) if min(served) else float("inf")
        dropped = [len(old - new) for old, new in zip(before, after, strict=True)]
        added = [len(new - old) for old, new in zip(before, after, strict=True)]
        sizes = [len(each) for each in before]
        print(f"  {label:<22} {min(connections):>6} .. {max(connections):<6} "
              f"{spread:8.2f} {load:14.2f} {statistics.mean(sizes):11.1f}  "
              f"-{statistics.mean(dropped):.2f} +{statistics.mean(added):.2f}, "
              f"max -{max(dropped)} +{max(added)}")
        if mode == "aperture":
            verdict = (spread, load, statistics.mean(dropped) + statistics.mean(added),
                       max(a + d for a, d in zip(added, dropped, strict=True)))
    assert verdict is not None
    spread, load, mean_moved, most = verdict
    print()
    print(f"  aperture: connections max/min {spread:.2f} (target <= {TARGET}), calls max/min "
          f"{load:.2f}, {mean_moved:.2f} instances changed per client when one joined (max "
          f"{most}): {'met' if spread <= TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
