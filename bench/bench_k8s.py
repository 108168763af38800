"""Kubernetes driver benchmarks against a real kube-apiserver (:mod:`compose.kubernetes`).

    python -m bench.bench_k8s                  # both parts
    python -m bench.bench_k8s propagation      # EndpointSlice change -> Endpointer, p50/p99
    python -m bench.bench_k8s cost             # per-change cost at 100 / 1,000 / 10,000

``propagation``: a Service has 1,000 endpoints in 10 slices of 100.  One endpoint's
``ready`` flips at a time (the slice is replaced, as the controller does); for each
change, the time from the update being sent to (a) a raw watch -- the same list/watch
protocol over httpx, decoding each event line and nothing else -- seeing the event,
and (b) an ``sd.Endpointer`` fed by ``EndpointSliceInstancer`` holding the new
endpoint set.  Printed: p50 and p99 of both, and the difference (what the driver, the
broadcaster and the Endpointer add per change).

``cost``: the driver's own work per change, in process: a Service of N endpoints in
slices of 100, one endpoint changing, applied through the slice view and the
broadcaster (what the watch does per event), against a full recount (every slice's
endpoints read again and the set diffed, as a driver without per-slice bookkeeping
would).  O(changed) means the first stays flat while N grows 100-fold.

Medians of noisy runs on a small shared machine: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import ssl
import statistics
import threading
import time
from typing import Any

import httpx

from kitsd import sd
from kitsd.compose.kubernetes import KubeAPIServer, endpoint
from kitsd.sd.instancer import Broadcaster
from kitsd.sd.k8s import ClusterConfig, EndpointSliceInstancer, StaticToken
from kitsd.sd.k8s.slices import PortChoice, SliceView, endpoint_state

SLICES, PER_SLICE = 10, 100


def addresses(slice_index: int) -> list[str]:
    return [f"10.{slice_index // 250}.{slice_index % 250}.{i + 1}" for i in range(PER_SLICE)]


def slice_endpoints(slice_index: int, not_ready: int | None) -> list[dict[str, Any]]:
    return [endpoint(address, ready=i != not_ready, zone=f"z{i % 3}", node=f"n{i % 7}")
            for i, address in enumerate(addresses(slice_index))]


def make_endpoint(instance: str) -> sd.SyncEndpoint:
    """A trivial endpoint per instance (the Endpointer's factory)."""
    def call(request: object) -> str:
        return instance
    return call


class RawWatch:
    """The baseline: a bare watch over httpx from ``rv``; ``seen`` is set for each
    event whose slice matches ``expect``."""

    def __init__(self, kube: KubeAPIServer, namespace: str, rv: str) -> None:
        self._verify = ssl.create_default_context(cafile=str(kube.ca_file))
        self._client = httpx.Client(base_url=kube.server, verify=self._verify, trust_env=False,
                                    headers={"Authorization": f"Bearer {kube.token()}"},
                                    timeout=httpx.Timeout(10, read=None))
        self._path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
        self._params = {"watch": "true", "resourceVersion": rv,
                        "labelSelector": "kubernetes.io/service-name=web",
                        "allowWatchBookmarks": "true"}
        self.expect: str = ""
        self.seen = threading.Event()
        self.stamp = 0.0
        self._thread = threading.Thread(target=self._run, name="raw-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._watch()
        except httpx.HTTPError:
            return  # the server went away at the end of the run

    def _watch(self) -> None:
        with self._client.stream("GET", self._path, params=self._params) as answer:
            for line in answer.iter_lines():
                if not line:
                    continue
                event = json.loads(line)
                name = event["object"].get("metadata", {}).get("name")
                if name == self.expect:
                    self.stamp = time.perf_counter()
                    self.seen.set()

    def close(self) -> None:
        self._client.close()


def propagation(changes: int) -> None:
    with KubeAPIServer() as kube, kube.admin() as admin:
        admin.create_namespace("bench")
        for s in range(SLICES):
            rv = admin.put_slice("bench", f"web-{s}", "web", slice_endpoints(s, None))
        config = ClusterConfig(server=kube.server, ca=kube.ca_file.read_text(),
                               token=StaticToken(kube.token()))
        raw = RawWatch(kube, "bench", rv)
        with EndpointSliceInstancer("web", namespace="bench", config=config) as instancer, \
                sd.Endpointer(instancer, make_endpoint) as endpointer:
            assert len(endpointer.endpoints()) == SLICES * PER_SLICE
            target: dict[str, Any] = {"size": 0}
            changed = threading.Event()
            stamp = [0.0]

            def on_event(event: sd.Event) -> None:
                if len(endpointer.endpoints()) == target["size"]:
                    stamp[0] = time.perf_counter()
                    changed.set()

            instancer.subscribe(on_event)
            kitsd_ms: list[float] = []
            raw_ms: list[float] = []
            for n in range(changes):
                s = n // 2 % SLICES
                down = n % 2 == 0  # flip one endpoint not ready, then ready again
                target["size"] = SLICES * PER_SLICE - (1 if down else 0)
                changed.clear()
                raw.seen.clear()
                raw.expect = f"web-{s}"
                started = time.perf_counter()
                admin.put_slice("bench", f"web-{s}", "web",
                                slice_endpoints(s, n // 2 % PER_SLICE if down else None))
                if not changed.wait(10) or not raw.seen.wait(10):
                    raise RuntimeError(f"change {n} not seen")
                kitsd_ms.append((stamp[0] - started) * 1000)
                raw_ms.append((raw.stamp - started) * 1000)
            raw.close()

    def pct(values: list[float], p: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    print(f"propagation: {SLICES * PER_SLICE} endpoints in {SLICES} slices, {changes} changes "
          "(update sent -> seen)")
    print(f"  {'':28} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"  {'raw watch (httpx)':28} {pct(raw_ms, .5):8.2f} {pct(raw_ms, .99):8.2f}")
    print(f"  {'EndpointSliceInstancer+Endpointer':28} {pct(kitsd_ms, .5):8.2f} "
          f"{pct(kitsd_ms, .99):8.2f}")
    extra = [k - r for k, r in zip(kitsd_ms, raw_ms, strict=True)]
    print(f"  kitsd minus raw, per change: median {statistics.median(extra):.2f} ms")


def cost(repeat: int) -> None:
    print("per-change cost, in process (one endpoint flips in a slice of 100)")
    print(f"  {'endpoints':>10} {'kitsd µs':>10} {'recount µs':>11} {'ratio':>7}")
    for total in (100, 1_000, 10_000):
        slices: list[dict[str, Any]] = [{"metadata": {"name": f"web-{s}"}, "addressType": "IPv4",
                   "ports": [{"name": "http", "port": 80}],
                   "endpoints": slice_endpoints(s, None)} for s in range(total // PER_SLICE)]
        view = SliceView(PortChoice.of("http"))
        view.replace(slices)
        broadcaster = Broadcaster()
        first = view.changes()
        broadcaster.apply(first.added, first.removed, info=first.info)
        variants = [{**slices[0], "endpoints": slice_endpoints(0, i % 2 or None)}
                    for i in range(2)]
        started = time.perf_counter()
        for i in range(repeat):
            view.upsert(variants[i % 2])
            change = view.changes()
            broadcaster.apply(change.added, change.removed, info=change.info)
        ours = (time.perf_counter() - started) / repeat * 1e6
        # the recount: every slice read again, the instance set rebuilt and diffed
        current = list(slices)
        members: set[str] = set()
        started = time.perf_counter()
        for i in range(repeat):
            current[0] = variants[i % 2]
            fresh = {f"{e['addresses'][0]}:80" for s in current for e in s["endpoints"]
                     if endpoint_state(e.get("conditions")) == 2}
            _added, _removed = fresh - members, members - fresh
            members = fresh
        recount = (time.perf_counter() - started) / repeat * 1e6
        print(f"  {total:>10,} {ours:>10.1f} {recount:>11.1f} {recount / ours:>6.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_k8s")
    parser.add_argument("part", nargs="?", choices=("propagation", "cost"), default=None)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=400)
    args = parser.parse_args()
    if args.part in (None, "propagation"):
        propagation(args.changes)
    if args.part in (None, "cost"):
        cost(args.repeat)


if __name__ == "__main__":
    main()
