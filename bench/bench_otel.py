"""What kitsd's telemetry adds to an HTTP call, against what the official
``opentelemetry-instrumentation-httpx`` adds to plain httpx, in the same run.

    python -m bench.bench_otel [--calls 200] [--rounds 21] [--instructions]

One instance (a ``bench/backend/main.go`` listener, :mod:`bench.backend`), sequential
calls on a kept-alive connection, ``client.get("/", params={"n": 1}).json()``, sync and
async.  Both OpenTelemetry sides use the same SDK providers (``TracerProvider()`` with
no processor, ``MeterProvider`` with an ``InMemoryMetricReader``: what the SDK costs,
no exporter).  Rows, per flavour:

* ``plain`` -- ``httpx.Client(base_url=instance)``; ``plain + instrumentation`` -- the
  same with ``HTTPXClientInstrumentor().instrument(...)``: one ``CLIENT`` span, one
  duration histogram record and a ``traceparent`` per request;
* ``kitsd`` -- ``httpx.Client(transport=kitsd.Transport(registry))``, nobody listening;
* ``kitsd + otel (1 span)`` -- :class:`kitsd.otel.OtelObserver` with
  ``attempt_spans=False``: the call's span, ``kitsd.call.duration`` and a
  ``traceparent`` per attempt: the same count of spans, records and injections as
  the instrumentation makes;
* ``kitsd + otel (default)`` -- the default observer: a call span and a ``CLIENT``
  span per attempt, ``http.client.request.duration`` and ``kitsd.call.duration``
  (two spans and two records);
* ``kitsd + instrumentation + otel`` -- the documented combination: the
  instrumentation's span per attempt nested under kitsd's call span;
* ``kitsd + Prometheus`` -- :class:`kitsd.prometheus.PrometheusObserver`.

Observers and the instrumentation are installed before a row's turn and removed
after it (outside the timing).  Rounds are interleaved in a rotated order; per
round, a telemetry row's cost is its CPU time per call (``time.process_time``,
the client process's own work; the backend runs in its own process) minus its
base row's (``plain`` for the instrumentation, ``kitsd`` for the others) of the
same round; reported as the median over the rounds with its range, and the
ratio of kitsd.otel's median cost to the instrumentation's.  Wall time per call
the same way.  Targets (issue 22.3): ``kitsd + otel (1 span)`` costs no more
than the instrumentation (ratio <= 1.0); Prometheus <= 2 % of the call.

``--instructions`` counts each row once more under callgrind
(:mod:`bench.instructions`): instructions per call of the client process, which
the load of other processes does not move.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

from bench import instructions
from bench.backend import Backends
from bench.bench_transport import _sequential, _sequential_async

# (row, its base row) per flavour; the base of a base is itself
ROWS = (
    ("plain", "plain"),
    ("plain + instrumentation", "plain"),
    ("kitsd", "kitsd"),
    ("kitsd + otel (1 span)", "kitsd"),
    ("kitsd + otel (default)", "kitsd"),
    ("kitsd + instrumentation + otel", "kitsd"),
    ("kitsd + Prometheus", "kitsd"),
)

Setup = Callable[[], Callable[[], None]]


def _providers() -> dict[str, Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    return {"meter_provider": MeterProvider(metric_readers=[InMemoryMetricReader()]),
            "tracer_provider": TracerProvider()}


def _setups() -> dict[str, Setup]:
    import prometheus_client
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    import kitsd.otel
    import kitsd.prometheus
    from kitsd.core import observe

    providers = _providers()
    instrumentor = HTTPXClientInstrumentor()

    def instrumenting() -> Callable[[], None]:
        instrumentor.instrument(**providers, request_hook=kitsd.otel.request_hook)
        return lambda: instrumentor.uninstrument()

    def observing(observer: Any, also: Setup | None = None) -> Setup:
        def setup() -> Callable[[], None]:
            undo = also() if also is not None else None
            observe.add_observer(observer)

            def teardown() -> None:
                observe.remove_observer(observer)
                if undo is not None:
                    undo()
            return teardown
        return setup

    prometheus = kitsd.prometheus.PrometheusObserver(prometheus_client.CollectorRegistry())
    return {
        "plain + instrumentation": instrumenting,
        "kitsd + otel (1 span)": observing(kitsd.otel.OtelObserver(
            **providers, attempt_spans=False)),
        "kitsd + otel (default)": observing(kitsd.otel.OtelObserver(**providers)),
        "kitsd + instrumentation + otel": observing(kitsd.otel.OtelObserver(**providers),
                                                    instrumenting),
        "kitsd + Prometheus": observing(prometheus),
    }


async def _measure(args: argparse.Namespace, instance: str,
                   ) -> dict[str, list[tuple[float, float]]]:
    import httpx

    import kitsd
    from kitsd import sd

    registry = sd.MemoryRegistry()
    registry.registrar("users", instance).register()
    timeout = httpx.Timeout(60.0)
    clients = {
        "sync plain": httpx.Client(base_url=f"http://{instance}", timeout=timeout),
        "sync kitsd": httpx.Client(transport=kitsd.Transport(registry),
                                   base_url="http://users", timeout=timeout),
    }
    aclients = {
        "async plain": httpx.AsyncClient(base_url=f"http://{instance}", timeout=timeout),
        "async kitsd": httpx.AsyncClient(transport=kitsd.AsyncTransport(registry),
                                         base_url="http://users", timeout=timeout),
    }
    setups = _setups()
    runners: dict[str, Callable[[], Awaitable[tuple[float, float]]]] = {}
    for flavour in ("sync", "async"):
        for row, _ in ROWS:
            kind = "plain" if row.startswith("plain") else "kitsd"
            if flavour == "sync":
                client = clients[f"sync {kind}"]

                async def run(client: httpx.Client = client) -> tuple[float, float]:
                    return _sequential(lambda: client.get("/", params={"n": 1}).json(),
                                       args.calls)
            else:
                aclient = aclients[f"async {kind}"]

                async def run(aclient: httpx.AsyncClient = aclient,  # type: ignore[misc]
                              ) -> tuple[float, float]:
                    async def call() -> Any:
                        return (await aclient.get("/", params={"n": 1})).json()
                    return await _sequential_async(call, args.calls)
            runners[f"{flavour} {row}"] = run
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    marks = instructions.Marks()

    async def turn(name: str, *, counted: bool = True) -> tuple[float, float]:
        setup = setups.get(name.split(" ", 1)[1])
        teardown = setup() if setup is not None else None
        try:
            if counted:
                marks.start()
            result = await runners[name]()
            if counted:
                marks.stop(name)
            return result
        finally:
            if teardown is not None:
                teardown()

    try:
        names = list(runners)
        for name in names:  # warm-up: connections, first-use paths, attribute sets
            await turn(name, counted=False)
        for index in range(args.rounds):
            shift = (index * 5) % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(await turn(name))
    finally:
        for client in clients.values():
            client.close()
        for aclient in aclients.values():
            await aclient.aclose()
    return samples


def _costs(samples: dict[str, list[tuple[float, float]]], name: str, base: str,
           index: int) -> list[float]:
    """Per round: the row's seconds per call (wall: 0, CPU: 1) minus its base's."""
    mine = samples[name]
    theirs = samples[base]
    if index == 0:  # wall: from requests per second
        return [1 / m[0] - 1 / b[0] for b, m in zip(theirs, mine, strict=True)]
    return [m[1] - b[1] for b, m in zip(theirs, mine, strict=True)]


def _report(samples: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> None:
    print(f"{args.calls} sequential calls per row x {args.rounds} interleaved rounds, one "
          "Go backend; per round, a row's cost = its time per call minus its base row's "
          "(plain for the instrumentation, kitsd for the others); median [range]")
    for flavour in ("sync", "async"):
        print(f"  {flavour:<36} {'CPU/call':>9} {'cost (CPU)':>22} {'cost (wall)':>22}")
        medians: dict[str, float] = {}
        for row, base in ROWS:
            name, base_name = f"{flavour} {row}", f"{flavour} {base}"
            cpu = statistics.median(c for _, c in samples[name]) * 1e6
            if row == base:
                print(f"  {row:<36} {cpu:7.0f} us")
                continue
            costs = [c * 1e6 for c in _costs(samples, name, base_name, 1)]
            walls = [c * 1e6 for c in _costs(samples, name, base_name, 0)]
            medians[row] = statistics.median(costs)
            share = [c / b[1] / 1e6 * 100
                     for c, b in zip(costs, samples[base_name], strict=True)]
            print(f"  {row:<36} {cpu:7.0f} us {medians[row]:+7.1f} us "
                  f"[{min(costs):+.0f}, {max(costs):+.0f}] "
                  f"{statistics.median(walls):+7.1f} us [{min(walls):+.0f}, {max(walls):+.0f}]"
                  f"  {statistics.median(share):+.1f} % of the call")
        theirs = medians["plain + instrumentation"]
        for row in ("kitsd + otel (1 span)", "kitsd + otel (default)",
                    "kitsd + instrumentation + otel"):
            print(f"    {row} / instrumentation (CPU cost): x{medians[row] / theirs:.2f}")


def _count_instructions(args: argparse.Namespace) -> None:
    why = instructions.unavailable()
    if why is not None:
        print(f"  instructions: not counted: {why}")
        return
    counts = instructions.run(["-m", "bench.bench_otel", "--calls", str(args.instruction_calls),
                               "--rounds", "1", "--quiet"])
    print(f"\ninstructions per call (callgrind, client process, {args.instruction_calls} calls "
          "per row, after a warm-up turn):")
    for flavour in ("sync", "async"):
        per = {row: counts[f"{flavour} {row}"] / args.instruction_calls for row, _ in ROWS}
        added: dict[str, float] = {}
        for row, base in ROWS:
            if row == base:
                print(f"  {flavour + ' ' + row:<44} {per[row]:10,.0f}")
            else:
                added[row] = per[row] - per[base]
                print(f"  {flavour + ' ' + row:<44} {per[row]:10,.0f} {added[row]:+9,.0f}  "
                      f"{added[row] / per[base] * 100:+5.1f} %")
        theirs = added["plain + instrumentation"]
        for row in ("kitsd + otel (1 span)", "kitsd + otel (default)",
                    "kitsd + instrumentation + otel"):
            print(f"    {flavour} {row} / instrumentation: x{added[row] / theirs:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=21,
                        help="0: only the instruction counts (with --instructions)")
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--instruction-calls", type=int, default=64)
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds:
        backends = Backends(1)
        try:
            samples = asyncio.run(_measure(args, backends.instances[0]))
        finally:
            backends.close()
        if not args.quiet:
            _report(samples, args)
    if args.instructions:
        _count_instructions(args)


if __name__ == "__main__":
    main()
