"""What the Consul watch costs in Python per changed answer, against decoding it raw.

    python -m bench.bench_consul [--sizes 100,1000,10000] [--runs 7] [--answers 20]

No server: answers come from an ``httpx.MockTransport`` serving a
``/v1/health/service/web`` body of N realistic entries (node, service, two
checks; ~1 KiB each as Consul writes them).  Each answer carries a new
``X-Consul-Index`` and alternates between two sets that differ by one
instance, so every answer is a change to translate and publish.  Every size
runs twice: entries with tags only, and entries that also carry ``Service.Meta``
(three keys, one of them unique per instance: "metadata on every entry").

* raw: an ``httpx.AsyncClient`` loop that GETs the answer and ``json.loads``
  it (the least any client does with the standard library).
* kitsd json: the watch both instancers run (:func:`sd.consul.watch.run_watch`:
  py-consul request building and answer judging, httpx, index rules, entry
  translation, publishing to a :class:`sd.instancer.Broadcaster` with one
  subscriber), decoding with ``json.loads`` (kitsd without msgspec).
* kitsd msgspec: the same watch with its default decoder, msgspec's (installed by
  ``kitsd[consul]``; skipped when missing).
* unchanged: answers that repeat the index asked with (a ``wait`` that elapsed with
  nothing new), which the watch skips without decoding.

Rounds are interleaved (raw, json, msgspec, unchanged, raw, ...), so drift on a
shared machine hits all alike.  Prints per-answer medians in ms, and the ratio
kitsd / raw: the median and range of the per-round ratios (each round's raw is the
baseline measured beside it).  Times are this process's CPU time
(``time.process_time``), not wall time: on a shared machine other processes'
load would otherwise swamp the difference.  Target (issue 22.2): json ≤ 1.1x
raw, msgspec < 1x raw, unchanged ~1 ms, at 10,000 entries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx

from kitsd.sd.consul.decode import FAST, Decoder, decode_entries, json_entries
from kitsd.sd.consul.transport import AgentSettings
from kitsd.sd.consul.watch import HealthQuery, run_watch
from kitsd.sd.instancer import Broadcaster


def entry(n: int, meta: bool = False) -> dict[str, object]:
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
                    "Address": address,
                    "Meta": {"version": "1.4.2", "zone": f"eu-1{'abc'[n % 3]}",
                             "pod": f"web-7f9c-{n:05d}"} if meta else None,
                    "Port": 8080,
                    "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False,
                    "Proxy": {"MeshGateway": {}, "Expose": {}}, "Connect": {},
                    "CreateIndex": 12, "ModifyIndex": 12},
        "Checks": [check, {**check, "CheckID": f"service:web-{n}", "Name": "TTL",
                           "ServiceID": f"web-{n}", "ServiceName": "web", "Type": "ttl"}],
    }


def bodies(size: int, meta: bool = False) -> tuple[bytes, bytes]:
    """Two answers of ``size`` entries differing by one instance."""
    entries = [entry(n, meta) for n in range(size)]
    first = json.dumps(entries).encode()
    entries[-1] = entry(size, meta)
    return first, json.dumps(entries).encode()


class Server:
    """Serves answers, a new index each (or the same one: ``unchanged``)."""

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


async def raw(pair: tuple[bytes, bytes], answers: int) -> float:
    server = Server(pair)
    async with httpx.AsyncClient(transport=server.transport, base_url="http://agent") as client:
        (await client.get("/v1/health/service/web")).json()
        began = time.process_time()
        for index in range(answers):
            response = await client.get("/v1/health/service/web",
                                        params={"index": index + 1, "wait": "10000ms"})
            json.loads(response.content)
        return (time.process_time() - began) / answers


async def watch(pair: tuple[bytes, bytes], answers: int, decode: Decoder,
                unchanged: bool = False) -> float:
    server = Server(pair, unchanged)
    broadcaster = Broadcaster()
    broadcaster.subscribe(lambda event: None)
    settings = AgentSettings("agent", 8500, transport=server.transport)
    done = asyncio.Event()
    marks: list[float] = []

    def answered() -> None:
        marks.append(time.process_time())
        if len(marks) == answers + 1:
            done.set()

    task = asyncio.create_task(run_watch(settings, HealthQuery("web", (), True, 10.0),
                                         broadcaster, answered, decode=decode))
    await done.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return (marks[-1] - marks[0]) / answers  # the first answer builds the client: left out


def ratio_text(kitsd: list[float], raws: list[float]) -> str:
    ratios = [k / r for k, r in zip(kitsd, raws, strict=True)]
    return f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--answers", type=int, default=20)
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes.split(",")]
    answers = options.answers
    print(f"Consul watch, CPU per changed answer: median of {options.runs} interleaved "
          f"rounds x {answers} answers; ratio = kitsd / raw per round, median [range]")
    if not FAST:
        print("(msgspec is not installed: the msgspec columns are skipped)")
    print(f"{'entries':>8} {'meta':>5} {'raw ms':>8} {'json ms':>8} {'json / raw':>17} "
          f"{'msgspec ms':>11} {'msgspec / raw':>17} {'unchanged ms':>13}")
    for size in sizes:
        for meta in (False, True):
            pair = bodies(size, meta)
            raws: list[float] = []
            jsons: list[float] = []
            fasts: list[float] = []
            sames: list[float] = []
            for _ in range(options.runs):
                raws.append(asyncio.run(raw(pair, answers)))
                jsons.append(asyncio.run(watch(pair, answers, json_entries)))
                if FAST:
                    fasts.append(asyncio.run(watch(pair, answers, decode_entries)))
                sames.append(asyncio.run(watch(pair, answers, decode_entries,
                                               unchanged=True)))
            r, j = statistics.median(raws) * 1000, statistics.median(jsons) * 1000
            fast_ms = f"{statistics.median(fasts) * 1000:>11.2f}" if fasts else f"{'-':>11}"
            fast_ratio = ratio_text(fasts, raws) if fasts else "-"
            print(f"{size:>8} {'yes' if meta else 'no':>5} {r:>8.2f} {j:>8.2f} "
                  f"{ratio_text(jsons, raws):>17} {fast_ms} {fast_ratio:>17} "
                  f"{statistics.median(sames) * 1000:>13.2f}")
    print("target at 10,000 entries: json <= 1.1x raw; msgspec < 1x raw; unchanged ~1 ms")


if __name__ == "__main__":
    main()
