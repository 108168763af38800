"""What the Consul watch costs in Python per answer, on top of a raw blocking-query loop.

    python -m bench.bench_consul

No server: answers come from an ``httpx.MockTransport`` serving a
``/v1/health/service/web`` body of N realistic entries (node, service, two
checks; ~1 KiB each as Consul writes them).  Each answer carries a new
``X-Consul-Index`` and alternates between two sets that differ by one
instance, so every answer is a change to translate and publish.

* raw: an ``httpx.AsyncClient`` loop that GETs the answer and ``json.loads``
  it (the least any client does).
* kitsd: the watch both instancers run (:func:`sd.consul.watch.run_watch`:
  py-consul request building and status checks, httpx, index rules, entry
  translation, publishing to a :class:`sd.instancer.Broadcaster` with one
  subscriber).
* kitsd, unchanged: answers that repeat the index asked with (a ``wait`` that
  elapsed with nothing new), which the watch skips without translating.

Also the translation alone (:func:`sd.consul.health.service_instances`) cold
(every entry parsed, as before the memo) and warm (the memo hit).

Prints medians of several interleaved runs, per answer, and the extra
milliseconds and ratio of kitsd over raw.  Times are this process's CPU time
(``time.process_time``), not wall time: on a shared machine other processes'
load would otherwise swamp the difference (garbage collections triggered by
decoding 10 MB of JSON dominate both sides and vary a lot with the load).
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import time
from collections.abc import Callable

import httpx

from kitsd.sd.consul.health import Memo, service_instances
from kitsd.sd.consul.transport import AgentSettings
from kitsd.sd.consul.watch import HealthQuery, run_watch
from kitsd.sd.instancer import Broadcaster

SIZES = (100, 1_000, 10_000)
ANSWERS = 20
RUNS = 5


def entry(n: int) -> dict[str, object]:
    """One health entry shaped as Consul 1.22 writes it."""
    address = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
    node = f"node-{n}"
    check = {"Node": node, "CheckID": "serfHealth", "Name": "Serf Health Status",
             "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
             "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "",
             "Definition": {}, "CreateIndex": 10, "ModifyIndex": 10}
    return {
        "Node": {"ID": f"{n:08x}-0000-0000-0000-000000000000", "Node": node,
                 "Address": address, "Datacenter": "dc1",
                 "TaggedAddresses": {"lan": address, "wan": address},
                 "Meta": {"consul-network-segment": ""}, "CreateIndex": 10, "ModifyIndex": 10},
        "Service": {"ID": f"web-{n}", "Service": "web", "Tags": ["blue", "v1"],
                    "Address": address, "Meta": None, "Port": 8080,
                    "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False,
                    "Proxy": {"MeshGateway": {}, "Expose": {}}, "Connect": {},
                    "CreateIndex": 12, "ModifyIndex": 12},
        "Checks": [check, {**check, "CheckID": f"service:web-{n}", "Name": "TTL",
                           "ServiceID": f"web-{n}", "ServiceName": "web", "Type": "ttl"}],
    }


def bodies(size: int) -> tuple[bytes, bytes]:
    """Two answers of ``size`` entries differing by one instance."""
    entries = [entry(n) for n in range(size)]
    first = json.dumps(entries).encode()
    entries[-1] = entry(size)
    return first, json.dumps(entries).encode()


class Server:
    """Serves ``answers`` answers, a new index each (or the same one: ``unchanged``)."""

    def __init__(self, pair: tuple[bytes, bytes], unchanged: bool = False) -> None:
        self.pair = pair
        self.unchanged = unchanged
        self.calls = 0
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        index = 7 if self.unchanged else self.calls
        return httpx.Response(200, headers={"X-Consul-Index": str(index),
                                            "Content-Type": "application/json"},
                              content=self.pair[self.calls % 2])


async def raw(pair: tuple[bytes, bytes]) -> float:
    server = Server(pair)
    async with httpx.AsyncClient(transport=server.transport, base_url="http://agent") as client:
        (await client.get("/v1/health/service/web")).json()
        began = time.process_time()
        for index in range(ANSWERS):
            response = await client.get("/v1/health/service/web",
                                        params={"index": index + 1, "wait": "10000ms"})
            json.loads(response.content)
        return (time.process_time() - began) / ANSWERS


async def watch(pair: tuple[bytes, bytes], unchanged: bool = False) -> float:
    server = Server(pair, unchanged)
    broadcaster = Broadcaster()
    broadcaster.subscribe(lambda event: None)
    settings = AgentSettings("agent", 8500, transport=server.transport)
    done = asyncio.Event()
    marks: list[float] = []

    def answered() -> None:
        marks.append(time.process_time())
        if len(marks) == ANSWERS + 1:
            done.set()

    task = asyncio.create_task(run_watch(settings, HealthQuery("web", (), True, 10.0),
                                         broadcaster, answered))
    await done.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return (marks[-1] - marks[0]) / ANSWERS  # the first answer builds the client: left out


def translation(pair: tuple[bytes, bytes], warm: bool) -> float:
    entries = json.loads(pair[0])
    memo: Memo = {}
    if warm:
        service_instances(entries, memo=memo)
    began = time.process_time()
    service_instances(entries, memo=memo if warm else None)
    return time.process_time() - began


def median_ms(runs: list[float]) -> float:
    return statistics.median(runs) * 1000


def without_gc(run: Callable[[], float]) -> float:
    """``run()`` with the garbage collector off: the Python work alone."""
    gc.collect()
    gc.disable()
    try:
        return run()
    finally:
        gc.enable()


def main() -> None:
    print(f"Consul watch, CPU per answer (median of {RUNS} runs x {ANSWERS} answers)")
    print(f"{'entries':>8} {'raw ms':>8} {'kitsd ms':>9} {'extra ms':>9} {'ratio':>6} "
          f"{'| no GC: raw':>12} {'kitsd':>7} {'extra':>6} {'| unchanged':>11} "
          f"{'| translate cold':>16} {'warm':>6}")
    for size in SIZES:
        pair = bodies(size)
        raws, kitsds, raws_ng, kitsds_ng, sames, colds, warms = ([] for _ in range(7))
        for _ in range(RUNS):  # interleaved, so drift hits all alike
            raws.append(asyncio.run(raw(pair)))
            kitsds.append(asyncio.run(watch(pair)))
            raws_ng.append(without_gc(lambda: asyncio.run(raw(pair))))  # noqa: B023 - called at once
            kitsds_ng.append(without_gc(lambda: asyncio.run(watch(pair))))  # noqa: B023
            sames.append(asyncio.run(watch(pair, unchanged=True)))
            colds.append(translation(pair, warm=False))
            warms.append(translation(pair, warm=True))
        r, k = median_ms(raws), median_ms(kitsds)
        rn, kn = median_ms(raws_ng), median_ms(kitsds_ng)
        print(f"{size:>8} {r:>8.2f} {k:>9.2f} {k - r:>9.2f} {k / r:>6.2f} "
              f"{rn:>12.2f} {kn:>7.2f} {kn - rn:>6.2f} {median_ms(sames):>11.2f} "
              f"{median_ms(colds):>16.2f} {median_ms(warms):>6.2f}")
    print("target: kitsd adds no more than a few ms over raw at 10,000 entries")


if __name__ == "__main__":
    main()
