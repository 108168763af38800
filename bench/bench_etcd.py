"""etcd driver benchmarks against a real etcd (started on loopback by :mod:`compose.etcd`).

    python -m bench.bench_etcd                 # both parts
    python -m bench.bench_etcd scale           # per-change cost at 100 / 1,000 / 10,000 keys
    python -m bench.bench_etcd restart         # return after a short etcd outage

``scale`` (issue 6.7): a prefix holds N instances; one key changes at a time.
A raw pyetcd prefix watch and a kitsd ``EtcdInstancer`` feeding an
``sd.Endpointer`` watch the same prefix on separate clients, and each change's
latency (put returned -> callback) is taken for both.  Printed: medians, the
kitsd-minus-raw difference (the Python kitsd adds per change) and the ratio;
plus the driver's own part alone (the prefix view applying one event and
handing out the sorted snapshot), against a full recount as the view did
before (``sorted(set(...))`` twice per change).  Target: a few ms over raw at
10,000.

``restart`` (issue 7.11): etcd is killed, restarted within about 2 s, and the
moment it is healthy a key is put; printed is how long the instancer took to
see it (median of ``--restarts``, target < 0.1 s) and how many attempts it
made per second while etcd was down (target: bounded, about 0.5/s).

The figures are medians; the machine is small and noisy: read the ratios.
Runs against any tree whose ``sd.etcd`` has ``connect`` and ``EtcdInstancer``
(``connect()`` returning the vendor client, as before issue 6.3, works too),
so ``PYTHONPATH=<old checkout> python -m bench.bench_etcd`` gives the "before".
"""

from __future__ import annotations

import argparse
import bisect
import logging
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from kitsd import sd
from kitsd.compose.etcd import EtcdCluster, EtcdMember

BATCH = 100  # puts per transaction (etcd allows 128 operations)


def vendor_of(client: Any) -> Any:
    """The pyetcd client (``connect()`` returns kitsd's adapter; before 6.3, the client)."""
    return getattr(client, "vendor", client)


def instance(index: int) -> str:
    return f"10.{index // 62500}.{index // 250 % 250}.{index % 250 + 1}:80"


def populate(vendor: Any, prefix: str, count: int) -> None:
    for start in range(0, count, BATCH):
        ops = [vendor.transactions.put(f"{prefix}{index:06d}", instance(index))
               for index in range(start, min(count, start + BATCH))]
        vendor.transaction(compare=[], success=ops, failure=[])


class Arrivals:
    """Records when a value first shows up (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._event = threading.Condition(self._lock)

    def saw(self, values: Any) -> None:
        now = time.perf_counter()
        with self._lock:
            for value in values:
                self._seen.setdefault(value, now)
            self._event.notify_all()

    def saw_in(self, ordered: tuple[str, ...], candidates: list[str]) -> None:
        """Record which ``candidates`` are in the sorted ``ordered`` (O(log n) each)."""
        now = time.perf_counter()
        found = []
        for value in candidates:
            at = bisect.bisect_left(ordered, value)
            if at < len(ordered) and ordered[at] == value:
                found.append(value)
        with self._lock:
            for value in found:
                self._seen.setdefault(value, now)
            self._event.notify_all()

    def wait(self, value: str, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        with self._lock:
            while value not in self._seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{value} never arrived")
                self._event.wait(left)
            return self._seen[value]


def view_cost(count: int, changes: int = 200) -> tuple[float, float]:
    """Seconds per one-key change: the incremental prefix view vs a full recount."""
    from kitsd.sd.etcd.revision import KeyValue, PrefixView, WatchEvent

    view = PrefixView()
    view.apply_read([KeyValue(f"k{i:06d}".encode(), instance(i).encode()) for i in range(count)],
                    1)
    by_key = {f"k{i:06d}".encode(): instance(i) for i in range(count)}
    events = [WatchEvent("put", f"k{count + i:06d}".encode(), 2 + i,
                         instance(count + i).encode()) for i in range(changes)]
    started = time.perf_counter()
    for event in events:
        view.apply_events([event])
        view.instances()
    incremental = (time.perf_counter() - started) / changes
    started = time.perf_counter()
    for index in range(changes):
        before = tuple(sorted({v for v in by_key.values() if v is not None}))
        by_key[f"n{index}".encode()] = instance(count + index)
        after = tuple(sorted({v for v in by_key.values() if v is not None}))
        _ = after != before
    recount = (time.perf_counter() - started) / changes
    return incremental, recount


def trivial_endpoint(inst: str) -> Callable[[object], str]:
    return lambda request: inst


def _latencies(writer: Any, prefix: str, values: list[str], arrivals: Arrivals,
               tag: str) -> list[float]:
    out = []
    for index, value in enumerate(values):
        started = time.perf_counter()
        writer.put(f"{prefix}{tag}{index:04d}", value)
        out.append(arrivals.wait(value) - started)
    return out


def scale(member: EtcdMember, sizes: list[int], changes: int) -> None:
    import pyetcd

    print("== per-change latency (put returned -> callback), medians over", changes,
          "changes; raw and kitsd measured one after the other in one process")
    print(f"{'keys':>7} {'raw ms':>8} {'kitsd ms':>9} {'added ms':>9} {'ratio':>6}"
          f" {'view us':>8} {'recount us':>11}")
    for count in sizes:
        prefix = f"/bench/scale-{count}/"
        writer = pyetcd.client(member.host, member.client_port)
        raw_client = pyetcd.client(member.host, member.client_port)
        kitsd_client = sd.etcd.connect(member.host, member.client_port)
        populate(writer, prefix, count)
        raw, kitsd = Arrivals(), Arrivals()
        raw_values = [instance(count + 1000 + index) for index in range(changes)]
        kitsd_values = [instance(count + 5000 + index) for index in range(changes)]

        def on_raw(response: Any, raw: Arrivals = raw) -> None:
            events = getattr(response, "events", None) or ()
            raw.saw([event.value.decode() for event in events])

        watch_id = raw_client.add_watch_prefix_callback(prefix, on_raw)
        try:
            raws = _latencies(writer, prefix, raw_values, raw, "r")
        finally:
            raw_client.cancel_watch(watch_id)
            raw_client.close()
        instancer = sd.etcd.EtcdInstancer(kitsd_client, prefix)
        endpointer = sd.Endpointer(instancer, trivial_endpoint)

        def on_event(event: sd.Event, kitsd: Arrivals = kitsd,
                     expected: list[str] = kitsd_values) -> None:
            kitsd.saw_in(event.instances, expected)

        instancer.subscribe(on_event)
        try:
            deadline = time.monotonic() + 30
            while len(instancer.state.instances) < count + changes \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            kitsds = _latencies(writer, prefix, kitsd_values, kitsd, "k")
            assert len(endpointer.endpoints()) == count + 2 * changes
        finally:
            endpointer.close()
            instancer.stop()
            sd.etcd.close_client(kitsd_client)
            writer.delete_prefix(prefix)
            writer.close()
        incremental, recount = view_cost(count)
        raw_ms = statistics.median(raws) * 1000
        kitsd_ms = statistics.median(kitsds) * 1000
        print(f"{count:>7} {raw_ms:>8.2f} {kitsd_ms:>9.2f} {kitsd_ms - raw_ms:>9.2f}"
              f" {kitsd_ms / raw_ms:>6.2f} {incremental * 1e6:>8.1f} {recount * 1e6:>11.1f}",
              flush=True)


class AttemptCounter(logging.Handler):
    """Counts the instancer's "retrying in" warnings: one per failed attempt."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying in" in record.getMessage():
            self.count += 1


def restart(member: EtcdMember, restarts: int, outage: float) -> None:
    import pyetcd

    print(f"== return after a {outage:.1f} s etcd outage, {restarts} restarts")
    prefix = "/bench/restart/"
    client = sd.etcd.connect(member.host, member.client_port)
    counter = AttemptCounter()
    logging.getLogger("kitsd").addHandler(counter)
    logging.getLogger("kitsd").setLevel(logging.WARNING)
    arrivals = Arrivals()
    latencies, rates = [], []
    instancer = sd.etcd.EtcdInstancer(client, prefix)
    instancer.subscribe(lambda event: arrivals.saw(event.instances))
    try:
        for round_ in range(restarts):
            value = instance(round_ + 1)
            member.kill()
            killed = time.monotonic()
            before = counter.count
            time.sleep(outage)
            member.start()
            while not member.healthy():
                time.sleep(0.002)
            down = time.monotonic() - killed
            attempts = counter.count - before
            writer = pyetcd.client(member.host, member.client_port)
            try:
                writer.put(f"{prefix}{round_}", value)
                put_done = time.perf_counter()
            finally:
                writer.close()
            seen = arrivals.wait(value, 30)
            latencies.append(max(0.0, seen - put_done))
            rates.append(attempts / down)
            print(f"  restart {round_ + 1}: seen {latencies[-1] * 1000:7.1f} ms after the put;"
                  f" {attempts} attempts in {down:.2f} s down", flush=True)
            time.sleep(1.0)  # let the watch settle before the next outage
    finally:
        instancer.stop()
        sd.etcd.close_client(client)
        logging.getLogger("kitsd").removeHandler(counter)
    print(f"  median {statistics.median(latencies) * 1000:.1f} ms after etcd is ready"
          f" (min {min(latencies) * 1000:.1f}, max {max(latencies) * 1000:.1f});"
          f" {statistics.median(rates):.2f} attempts/s while down", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("part", nargs="?", choices=["scale", "restart", "all"], default="all")
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--restarts", type=int, default=7)
    parser.add_argument("--outage", type=float, default=1.5)
    args = parser.parse_args(argv)
    with EtcdCluster(1) as cluster:
        member = cluster.members[0]
        if args.part in ("scale", "all"):
            scale(member, [int(size) for size in args.sizes.split(",")], args.changes)
        if args.part in ("restart", "all"):
            restart(member, args.restarts, args.outage)


if __name__ == "__main__":
    main()
