"""Consul recovery: after the agent restarts, how soon does the next change reach the
Endpointer, and how many requests does a watcher send while the agent is down?
kitsd (thread and asyncio) against go-kit, in one run.

    python -m bench.bench_recovery [--restarts 8] [--down 2.0] [--kinds server,dev]

Two kinds of agent, each restarted ``--restarts`` times:

* **server**: one Consul server with a data directory (``-server -bootstrap-expect 1``),
  stopped and started again with its state: it listens at once but answers "No
  cluster leader" until it has elected itself, ~1 s later;
* **dev**: ``consul agent -dev`` started again *without* its state (its index starts
  over, lower than the watchers'): ready as soon as it listens.

Three watchers (:mod:`bench.watchers`: kitsd thread, kitsd asyncio, go-kit's
``sd/consul`` Instancer + Endpointer), each in a process of its own, watch one service.
Each round: the agent is stopped, stays down ``--down`` seconds, is started again;
this process polls it every few milliseconds until it is ready (it answers, knows a
leader and its node is in the catalog), at once registers a new instance, and times
how long after *readiness* each watcher's Endpointer has it, beside when the agent's
own health endpoint first lists it (polled every 5 ms: the floor, since a server
restarted with its data syncs a new registration to its catalog only after its
start-up).  A watcher that has not
seen it after 30 s is counted as 30 s (go-kit after a stateless restart waits out its
5-minute blocking query).  While the agent is down each watcher's requests are
counted: those that connected (reached the agent, or would have) and those refused
(a connection attempt the agent's kernel turned away, costing the agent nothing).

Prints the median and range of the time to the first change after readiness, and
requests per second while down (connected + refused).  Target (issue 22.5): median
≤ 0.2 s after readiness, ≤ 1 request/s reaching the agent while it is down.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import uuid
from collections.abc import Iterator

from bench import gokit
from bench.watchers import WatcherProcess, kitsd_command
from kitsd.compose.consul import ConsulAgent, ConsulCluster, ConsulDevAgent
from kitsd.sd.consul import HttpxConsul, connect

LATE = 30.0


@contextlib.contextmanager
def agent_of(kind: str) -> Iterator[ConsulAgent]:
    group: ConsulCluster | ConsulDevAgent
    group = ConsulCluster(size=1) if kind == "server" else ConsulDevAgent(name="kitsd-recovery")
    with group:
        yield group.agents[0]


def wait_ready(agent: ConsulAgent, timeout: float = 60.0) -> float:
    deadline = time.monotonic() + timeout
    while not agent.ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agent was not ready after {timeout}s:\n{agent.log_tail()}")
        time.sleep(0.003)
    return time.time()


def shown_by_agent(registry: HttpxConsul, service: str, host: str) -> float:
    """When the agent's health endpoint first lists ``host`` (polled every 5 ms)."""
    deadline = time.monotonic() + LATE
    while time.monotonic() < deadline:
        _, entries = registry.health.service(service, passing=True)
        if any(entry["Service"]["Address"] == host for entry in entries or ()):
            return time.time()
        time.sleep(0.005)
    return time.time()


def run(kind: str, restarts: int, down: float) -> None:
    service = f"bench-{uuid.uuid4().hex[:8]}"
    with agent_of(kind) as agent, contextlib.ExitStack() as stack:
        commands = {"go-kit": gokit.command(agent.http_addr, service),
                    "kitsd thread": kitsd_command("thread", agent.http_addr, service),
                    "kitsd asyncio": kitsd_command("asyncio", agent.http_addr, service)}
        watchers = {name: stack.enter_context(WatcherProcess(name, command))
                    for name, command in commands.items()}
        after: dict[str, list[float]] = {name: [] for name in watchers}
        reached: dict[str, list[float]] = {name: [] for name in watchers}
        refused: dict[str, list[float]] = {name: [] for name in watchers}
        catalog: list[float] = []
        time.sleep(0.5)
        for number in range(restarts):
            agent.stop()
            stopped = time.time()
            time.sleep(down)
            started = time.time()
            agent.start()
            ready = wait_ready(agent)
            host = f"10.88.{number // 250}.{number % 250 + 1}"
            with connect(agent.http_addr) as registry:
                registry.agent.service.register(service, service_id=f"{service}-{number}",
                                                address=host, port=8080)
                catalog.append(shown_by_agent(registry, service, host) - ready)
                for name, watcher in watchers.items():
                    try:
                        seen = watcher.wait("add", f"{host}:8080", ready, timeout=LATE)
                    except TimeoutError:
                        seen = ready + LATE
                    after[name].append(seen - ready)
                    window = [outcome for at, outcome in watcher.requests
                              if stopped <= at < started]
                    reached[name].append(sum(1 for o in window if o != "refused") / down)
                    refused[name].append(sum(1 for o in window if o == "refused") / down)
                registry.agent.service.deregister(f"{service}-{number}")
            time.sleep(0.5)
    print(f"{kind}: {restarts} restarts, {down:.1f} s down each; first change after the agent "
          "is ready (s), requests/s while down (reaching it + refused)")
    print(f"  {'the agent':<14} median {statistics.median(catalog):6.3f}  range "
          f"{min(catalog):.3f}-{max(catalog):.3f}   (its health endpoint, polled every 5 ms:"
          " the floor)")
    for name in watchers:
        times = after[name]
        print(f"  {name:<14} median {statistics.median(times):6.3f}  range "
              f"{min(times):.3f}-{max(times):.3f}   requests/s "
              f"{statistics.median(reached[name]):.1f} + {statistics.median(refused[name]):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--restarts", type=int, default=8)
    parser.add_argument("--down", type=float, default=2.0)
    parser.add_argument("--kinds", default="server,dev")
    options = parser.parse_args()
    for kind in options.kinds.split(","):
        run(kind, options.restarts, options.down)


if __name__ == "__main__":
    main()
