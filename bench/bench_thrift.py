"""sd.thrift's per-call cost over a raw thriftpy2 client, measured in the same run.

    python -m bench.bench_thrift

Against one Go Thrift server (Apache Thrift's Go library, tests/thrift/goserver, built
and cached on first use) on loopback, for each transport: thriftpy2's own client on
one persistent connection (the baseline), an sd.thrift endpoint, and the whole
stack (``lb.retry`` -> ``lb.RoundRobin`` -> endpoint); sync and asyncio.  Each row is
the median of several repeats; it prints wall time per call and the client's CPU
time per call (the server shares the 2 cores, so the CPU figure is the steadier
one), each as a ratio to the baseline.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import thriftpy2
from thriftpy2.contrib.aio.protocol import TAsyncBinaryProtocolFactory
from thriftpy2.contrib.aio.rpc import make_client as make_aio_client
from thriftpy2.contrib.aio.transport import (
    TAsyncBufferedTransportFactory,
    TAsyncFramedTransportFactory,
)
from thriftpy2.protocol import TBinaryProtocolFactory
from thriftpy2.rpc import make_client
from thriftpy2.transport import TBufferedTransportFactory, TFramedTransportFactory

from kitsd import lb, sd
from tests.thrift.goserver import IDL, StoreServer, binary

REPEATS = 7
NUMBER = 2_000


def _measure(call: Callable[[], Any]) -> tuple[float, float]:
    """Median (wall, cpu) seconds per call."""
    walls, cpus = [], []
    for _ in range(REPEATS):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(NUMBER):
            call()
        walls.append((time.perf_counter() - wall) / NUMBER)
        cpus.append((time.process_time() - cpu) / NUMBER)
    return statistics.median(walls), statistics.median(cpus)


async def _measure_async(call: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(REPEATS):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(NUMBER):
            await call()
        walls.append((time.perf_counter() - wall) / NUMBER)
        cpus.append((time.process_time() - cpu) / NUMBER)
    return statistics.median(walls), statistics.median(cpus)


def _print(title: str, rows: list[tuple[str, tuple[float, float]]]) -> None:
    base_wall, base_cpu = rows[0][1]
    print(f"\n{title}")
    print(f"{'':44} {'wall µs':>8} {'ratio':>6} {'cpu µs':>8} {'ratio':>6}")
    for name, (wall, cpu) in rows:
        print(f"{name:44} {wall * 1e6:8.1f} {wall / base_wall:6.2f} "
              f"{cpu * 1e6:8.1f} {cpu / base_cpu:6.2f}")


def main() -> None:
    store = thriftpy2.load(str(IDL), module_name="store_thrift")
    path = binary()
    for transport in ("buffered", "framed"):
        with StoreServer(path, transport=transport) as server:
            _sync_rows(store, server, transport)
            asyncio.run(_async_rows(store, server, transport))


def _sync_rows(store: Any, server: StoreServer, transport: str) -> None:
    host, port = server.address.rsplit(":", 1)
    raw = make_client(store.Store, host, int(port), proto_factory=TBinaryProtocolFactory(),
                      trans_factory=(TFramedTransportFactory() if transport == "framed"
                                     else TBufferedTransportFactory()))
    kind: Any = transport
    endpoint = sd.thrift.factory(store.Store, "echo", transport=kind)(server.address)
    endpointer = sd.Endpointer(sd.FixedInstancer([server.address]),
                               sd.thrift.factory(store.Store, "echo", transport=kind))
    stack = lb.retry(3, 1.0, lb.RoundRobin(endpointer))
    request = {"text": "x"}
    _print(f"sync, {transport} binary", [
        ("thriftpy2 client.echo('x') (baseline)", _measure(lambda: raw.echo("x"))),
        ("sd.thrift endpoint", _measure(lambda: endpoint(request))),
        ("lb.retry -> RoundRobin -> endpoint", _measure(lambda: stack(request))),
    ])
    raw.close()
    endpoint.close()
    endpointer.close()


async def _async_rows(store: Any, server: StoreServer, transport: str) -> None:
    host, port = server.address.rsplit(":", 1)
    client = await make_aio_client(
        store.Store, host, int(port), proto_factory=TAsyncBinaryProtocolFactory(),
        trans_factory=(TAsyncFramedTransportFactory() if transport == "framed"
                       else TAsyncBufferedTransportFactory()))
    kind: Any = transport
    endpoint = sd.thrift.async_factory(store.Store, "echo", transport=kind)(server.address)
    endpointer = sd.Endpointer(sd.FixedInstancer([server.address]),
                               sd.thrift.async_factory(store.Store, "echo", transport=kind))
    stack = lb.retry_async(3, 1.0, lb.RoundRobin(endpointer))
    request = {"text": "x"}
    _print(f"asyncio, {transport} binary", [
        ("thriftpy2 aio client.echo('x') (baseline)",
         await _measure_async(lambda: client.echo("x"))),
        ("sd.thrift async endpoint", await _measure_async(lambda: endpoint(request))),
        ("lb.retry_async -> RoundRobin -> endpoint",
         await _measure_async(lambda: stack(request))),
    ])
    client.close()
    endpoint.close()
    endpointer.close()


if __name__ == "__main__":
    main()
