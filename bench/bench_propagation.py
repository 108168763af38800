"""Propagation, a Consul change -> the Endpointer: kitsd (thread and asyncio) against
go-kit, watching one real Consul agent in the same run.

    python -m bench.bench_propagation [--rounds 60] [--agent host:port] [--stages]

Three watchers follow one service on one agent (a ``consul agent -dev`` started here
unless ``--agent`` names one), each in a process of its own (:mod:`bench.watchers`):

* **kitsd thread**: :class:`sd.consul.ConsulInstancer` -> :class:`sd.Endpointer`;
* **kitsd asyncio**: :class:`sd.consul.AsyncConsulInstancer` -> :class:`sd.Endpointer`;
* **go-kit**: go-kit's ``sd/consul`` Instancer -> ``sd.Endpointer``
  (``bench/gokit_consul/main.go``, built by :mod:`bench.gokit` on first use).

Each watcher follows a service of its own, so one change wakes one watcher.  Each
round takes the watchers in a new random order and, for each, registers one instance
of its service with the agent, waits until its Endpointer has it, then deregisters it
and waits until the Endpointer dropped it, with a short random pause before each
change.  A change's latency runs from just before the register or
deregister request is sent to the moment each Endpointer has applied it: for go-kit,
when its Endpointer calls the factory (add) or the endpoint's ``Close`` (remove); for
kitsd, when a subscriber placed after the Endpointer sees its snapshot with (without)
the instance, i.e. after the Endpointer published it (a little later than go-kit's
marks).  Clocks: ``time.time()`` in Python and ``time.Now()`` in Go, one machine.

Prints p50 / p90 / p99 in ms per watcher for additions, removals and both, and the
ratio kitsd / go-kit of the p50s and p99s.  ``--stages`` splits kitsd's at the moment
the answer woke the watch (its loop's selector found the socket ready): the agent's
part before, kitsd's after (with the watch thread's CPU).  The machines here are small
and noisy: read medians and ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import time
import uuid
from collections.abc import Callable

from bench import gokit
from bench.watchers import WatcherProcess, kitsd_command
from kitsd.compose.consul import ConsulDevAgent
from kitsd.sd.consul import connect


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def line(name: str, samples: list[float], base: list[float] | None) -> str:
    p50, p90, p99 = (percentile(samples, share) * 1000 for share in (0.5, 0.9, 0.99))
    text = f"  {name:<14} p50 {p50:6.2f}  p90 {p90:6.2f}  p99 {p99:6.2f} ms"
    if base is not None:
        text += (f"   x{statistics.median(samples) / statistics.median(base):.2f} p50, "
                 f"x{percentile(samples, 0.99) / percentile(base, 0.99):.2f} p99 of go-kit")
    return text


def run(agent: str, rounds: int, stages: bool = False) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    services = {"go-kit": f"{prefix}-gokit", "kitsd thread": f"{prefix}-thread",
                "kitsd asyncio": f"{prefix}-asyncio"}
    commands = {"go-kit": gokit.command(agent, services["go-kit"]),
                "kitsd thread": kitsd_command("thread", agent, services["kitsd thread"],
                                              stages=stages),
                "kitsd asyncio": kitsd_command("asyncio", agent, services["kitsd asyncio"],
                                               stages=stages)}
    watchers: dict[str, WatcherProcess] = {}
    latencies: dict[str, dict[str, list[float]]] = {
        name: {"add": [], "remove": []} for name in commands}
    # kitsd, --stages: (change -> the answer woke the watch, woke -> Endpointer, its CPU)
    split: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
    with connect(agent) as registry, contextlib.ExitStack() as stack:
        for name, command in commands.items():
            watchers[name] = stack.enter_context(WatcherProcess(name, command))

        def change(name: str, what: str, instance: str, write: Callable[[], object]) -> None:
            time.sleep(random.uniform(0.05, 0.15))
            began = time.time()
            write()
            at = watchers[name].wait(what, instance, began)
            latencies[name][what].append(at - began)
            woke = watchers[name].stages.get(instance)
            if woke is not None and began <= woke[0] <= at:
                split[name].append((woke[0] - began, at - woke[0], woke[1]))

        time.sleep(0.5)  # every watch holds its first blocking query
        order = list(watchers)
        for number in range(rounds):
            host, port = f"10.77.{number // 250}.{number % 250 + 1}", 8080
            instance = f"{host}:{port}"
            random.shuffle(order)
            for name in order:  # one watcher wakes per change, in a new order each round
                service = services[name]
                service_id = f"{service}-{number}"
                change(name, "add", instance, lambda: registry.agent.service.register(
                    service, service_id=service_id, address=host, port=port))  # noqa: B023
                change(name, "remove", instance,
                       lambda: registry.agent.service.deregister(service_id))  # noqa: B023
    print(f"Consul change -> Endpointer, {rounds} additions and {rounds} removals per "
          f"watcher, one agent ({agent}), interleaved in one run")
    base = latencies["go-kit"]
    for what in ("add", "remove", "both"):
        print(f"{what}:")
        for name, samples in latencies.items():
            mine = samples["add"] + samples["remove"] if what == "both" else samples[what]
            theirs = base["add"] + base["remove"] if what == "both" else base[what]
            print(line(name, mine, None if name == "go-kit" else theirs))
    for name, parts in split.items():
        if parts:
            medians = [statistics.median(part[i] for part in parts) * 1000 for i in range(3)]
            print(f"  {name:<14} change -> answer wakes the watch {medians[0]:.2f} ms, "
                  f"-> Endpointer {medians[1]:.2f} ms ({medians[2]:.2f} ms CPU), medians "
                  f"of {len(parts)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--agent", help="host:port of an agent to use (default: start one)")
    parser.add_argument("--stages", action="store_true",
                        help="also split kitsd's latency where the answer woke the watch")
    options = parser.parse_args()
    if options.agent:
        run(options.agent, options.rounds, options.stages)
        return
    with ConsulDevAgent(name="kitsd-bench-propagation") as agent:
        run(agent.http_addr, options.rounds, options.stages)


if __name__ == "__main__":
    main()
