"""Propagation latency, registry change → subscriber, for the ZooKeeper and DNS SRV drivers,
against the raw client watching the same change in the same run.

    python -m bench.bench_discovery [--rounds 40] [--children 2000] [--poll 0.1]

Each round makes one change (add, then remove, an instance) and times, from just
before the change is written to the moment each watcher has the new set:

* **ZooKeeper** (a server started by :mod:`compose.zookeeper`): kitsd's
  :class:`sd.zk.ZKInstancer` vs kazoo's own ``ChildrenWatch`` recipe, each on its
  own client, both watching while a third client writes.  (kazoo's recipe reports
  child *names*; kitsd also reads each new child's data, one more round trip.)
  Also the first snapshot of ``--children`` children: kitsd's first full event vs
  a raw list plus pipelined ``get_async`` of every child.
* **DNS SRV** (Consul's DNS interface, instances registered over its HTTP API):
  kitsd's :class:`sd.dns.SRVInstancer` re-resolving every ``--poll`` seconds
  (Consul's TTL 0 clamped to ``min_ttl``) vs a raw dnspython loop resolving the
  same name at the same period, both over TCP, timed in two separate passes with
  each change at a random point of the period.  DNS has no push: both figures are
  dominated by the period (expect about half of it plus one lookup); the cost of
  one refresh (lookup + translation) is printed too.

Prints medians (and 90th percentiles) in milliseconds and the kitsd / raw ratio.
The machines here are small and noisy: read the medians and ratios.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import dns.resolver

from kitsd import sd
from kitsd.compose.consul import ConsulDevAgent
from kitsd.compose.zookeeper import ZooKeeperServer
from kitsd.sd.consul import connect as consul_connect
from kitsd.sd.dns import SRVInstancer
from kitsd.sd.zk import ZKInstancer, close_client
from kitsd.sd.zk import connect as zk_connect


class Arrival:
    """Records when a watcher first sees a wanted state."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._want: Any = None
        self._seen_at: float | None = None

    def expect(self, want: Any) -> None:
        with self._lock:
            self._want = want
            self._seen_at = None

    def saw(self, state: Any) -> None:
        now = time.perf_counter()
        with self._lock:
            if self._seen_at is None and state == self._want:
                self._seen_at = now
                self._lock.notify_all()

    def wait(self, timeout: float = 20.0) -> float:
        with self._lock:
            if not self._lock.wait_for(lambda: self._seen_at is not None, timeout):
                raise TimeoutError(f"watcher never saw {self._want!r}")
            assert self._seen_at is not None
            return self._seen_at


def summary(name: str, samples: list[float]) -> float:
    ordered = sorted(samples)
    median = statistics.median(ordered) * 1000
    p90 = ordered[int(0.9 * (len(ordered) - 1))] * 1000
    print(f"  {name:<34} median {median:8.2f} ms   p90 {p90:8.2f} ms   (n={len(samples)})")
    return median


def run_rounds(
    rounds: int,
    expect: Callable[[bool], tuple[Any, Any]],
    change: Callable[[bool], None],
    arrivals: dict[str, Arrival],
    jitter: float = 0.0,
) -> dict[str, list[float]]:
    """Alternately add (even rounds) and remove the instance with ``change(adding)``;
    ``expect(adding)`` gives the (kitsd, raw) states that mark the change as seen;
    only the watchers in ``arrivals`` are timed.
    ``jitter``: wait a random 0-``jitter`` seconds before each change, so a change
    lands at a random point of polling watchers' periods (not just after a lookup)."""
    results: dict[str, list[float]] = {name: [] for name in arrivals}
    rng = random.Random(7)
    for index in range(rounds):
        adding = index % 2 == 0
        time.sleep(rng.uniform(0.0, jitter))
        wants = dict(zip(("kitsd", "raw"), expect(adding), strict=True))
        for name, arrival in arrivals.items():
            arrival.expect(wants[name])
        started = time.perf_counter()
        change(adding)
        for name, arrival in arrivals.items():
            results[name].append(arrival.wait() - started)
    return results


def bench_zookeeper(rounds: int, children: int) -> tuple[float, float]:
    from kazoo.recipe.watchers import ChildrenWatch

    print("ZooKeeper (standalone server on loopback)")
    with ZooKeeperServer() as server:
        writer, raw_client, kitsd_client = (zk_connect(server.address) for _ in range(3))
        try:
            for client in (writer, raw_client, kitsd_client):
                deadline = time.monotonic() + 20
                while not client.connected:
                    if time.monotonic() > deadline:
                        raise TimeoutError("kazoo client did not connect")
                    time.sleep(0.01)
            path = f"/bench/{uuid.uuid4().hex[:8]}"
            writer.ensure_path(path)
            arrivals = {"kitsd": Arrival(), "raw": Arrival()}
            ChildrenWatch(raw_client, path, lambda names: arrivals["raw"].saw(sorted(names)))
            instancer = ZKInstancer(kitsd_client, path)
            instancer.subscribe(lambda event: arrivals["kitsd"].saw(event.instances))

            def expect(adding: bool) -> tuple[Any, Any]:
                return (("10.0.0.1:80",), ["node"]) if adding else ((), [])

            def change(adding: bool) -> None:
                if adding:
                    writer.create(f"{path}/node", b"10.0.0.1:80")
                else:
                    writer.delete(f"{path}/node")

            results = run_rounds(rounds, expect, change, arrivals)
            instancer.stop()
            first_read = bench_first_read(writer, raw_client, kitsd_client, children)
        finally:
            for client in (writer, raw_client, kitsd_client):
                close_client(client)
    kitsd = summary("kitsd ZKInstancer", results["kitsd"])
    raw = summary("kazoo ChildrenWatch (raw)", results["raw"])
    print(f"  ratio kitsd / raw: {kitsd / raw:.2f}x")
    print(f"first snapshot of {children} children (list + read every child's data):")
    first_kitsd = summary("kitsd ZKInstancer", first_read["kitsd"])
    first_raw = summary("kazoo, pipelined get_async (raw)", first_read["raw"])
    print(f"  ratio kitsd / raw: {first_kitsd / first_raw:.2f}x")
    return kitsd, raw


def bench_first_read(writer: Any, raw_client: Any, kitsd_client: Any, children: int
                     ) -> dict[str, list[float]]:
    """Seconds from "start watching" to the whole set, for ``children`` children."""
    path = f"/bench/{uuid.uuid4().hex[:8]}"
    writer.ensure_path(path)
    created = [writer.create_async(f"{path}/n{index:05d}",
                                   f"10.{index // 65536}.{index // 256 % 256}.{index % 256}:80"
                                   .encode())
               for index in range(children)]
    for result in created:
        result.get()
    results: dict[str, list[float]] = {"kitsd": [], "raw": []}
    for _ in range(5):
        started = time.perf_counter()
        names = raw_client.get_children(path)
        values = [result.get()[0] for result in
                  [raw_client.get_async(f"{path}/{name}") for name in names]]
        assert len(values) == children
        results["raw"].append(time.perf_counter() - started)

        done = threading.Event()
        started = time.perf_counter()
        instancer = ZKInstancer(kitsd_client, path)
        def complete(event: sd.Event, done: threading.Event = done) -> None:
            if len(event.instances) == children:
                done.set()

        instancer.subscribe(complete)
        if not done.wait(60):
            raise TimeoutError("the instancer never read every child")
        results["kitsd"].append(time.perf_counter() - started)
        instancer.stop()
    return results


def bench_dns(rounds: int, poll: float) -> tuple[float, float]:
    print(f"DNS SRV (Consul's DNS interface; both re-resolve every {poll:g}s)")
    with ConsulDevAgent(name="kitsd-bench-dns", dns=True) as agent, \
            consul_connect(agent.http_addr) as consul:
        assert agent.dns_addr is not None
        host, port = agent.dns_addr.rsplit(":", 1)
        service = f"bench-{uuid.uuid4().hex[:8]}"
        name = f"_{service}._tcp.service.consul"
        arrivals = {"kitsd": Arrival(), "raw": Arrival()}
        stop = threading.Event()

        def raw_loop() -> None:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [host]
            resolver.port = int(port)
            resolver.lifetime = 5.0
            while not stop.is_set():
                try:
                    answer = resolver.resolve(name, "SRV", search=False, tcp=True)
                    ports = sorted(int(rr.port) for rr in answer)
                except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                    ports = []
                arrivals["raw"].saw(ports)
                stop.wait(poll)

        raw = threading.Thread(target=raw_loop, name="bench-raw-dns", daemon=True)
        raw.start()
        instancer = SRVInstancer(name, resolver=agent.dns_addr, min_ttl=poll, max_ttl=poll)
        instancer.subscribe(lambda event: arrivals["kitsd"].saw(event.instances))

        def expect(adding: bool) -> tuple[Any, Any]:
            return (("10.9.0.1:8080",), [8080]) if adding else ((), [])

        def change(adding: bool) -> None:
            if adding:
                consul.agent.service.register(service, service_id="one", address="10.9.0.1",
                                              port=8080)
            else:
                consul.agent.service.deregister("one")

        try:
            # One watcher timed at a time: timing both per round would couple their
            # polling phases (a round ends when the slower one has looked up).
            results = run_rounds(rounds, expect, change, {"kitsd": arrivals["kitsd"]},
                                 jitter=poll)
            results |= run_rounds(rounds, expect, change, {"raw": arrivals["raw"]},
                                  jitter=poll)
        finally:
            instancer.stop()
            stop.set()
            raw.join(5)
        change(True)  # one instance registered for the cost figure
        cost = bench_lookup_cost(agent.dns_addr, name)
    kitsd = summary("kitsd SRVInstancer", results["kitsd"])
    raw_median = summary("dnspython poll loop (raw)", results["raw"])
    print(f"  ratio kitsd / raw: {kitsd / raw_median:.2f}x")
    print("one refresh (lookup over TCP, translate; what each period costs):")
    cost_kitsd = summary("kitsd lookup + translate (asyncio)", cost["kitsd"])
    cost_raw = summary("dnspython resolve (raw, sync)", cost["raw"])
    print(f"  ratio kitsd / raw: {cost_kitsd / cost_raw:.2f}x")
    return kitsd, raw_median


def bench_lookup_cost(address: str, name: str, repeats: int = 200) -> dict[str, list[float]]:
    """Seconds per refresh: kitsd's lookup and translation vs a raw dnspython resolve."""
    import asyncio

    from kitsd.sd.dns.resolver import lookup, make_resolver, parse_server
    from kitsd.sd.dns.srv import translate

    server = parse_server(address)
    raw = dns.resolver.Resolver(configure=False)
    raw.nameservers = [server[0]]
    raw.port = server[1]
    results: dict[str, list[float]] = {"kitsd": [], "raw": []}
    for _ in range(repeats):
        started = time.perf_counter()
        raw.resolve(name, "SRV", search=False, tcp=True)
        results["raw"].append(time.perf_counter() - started)

    async def kitsd_refreshes() -> None:
        resolver = make_resolver(server, timeout=5.0)
        for _ in range(repeats):
            started = time.perf_counter()
            answer = await lookup(resolver, name, resolve=True, tcp=True)
            translate(answer.records, answer.addresses, skipped=[])
            results["kitsd"].append(time.perf_counter() - started)

    asyncio.run(kitsd_refreshes())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--children", type=int, default=2000,
                        help="ZooKeeper children for the first-snapshot figure")
    parser.add_argument("--poll", type=float, default=0.1,
                        help="DNS re-resolution period in seconds (both watchers)")
    args = parser.parse_args()
    bench_zookeeper(args.rounds, args.children)
    bench_dns(args.rounds, args.poll)


if __name__ == "__main__":
    main()
