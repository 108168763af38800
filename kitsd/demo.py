"""``kitsd demo``: the whole stack on the embedded default, with instances dying and arriving.

Local HTTP instances register in a :class:`sd.MemoryRegistry`; worker threads
call them through the one-line client, ``httpx.Client(transport=kitsd.Transport(
registry), base_url="http://hello")`` (retry → balancer → per-instance breakers →
instance), or with ``building_blocks=True`` through the hand-built stack: breaker →
retry → balancer → per-instance breakers → ``sd.http`` endpoints.  A third of
the way in one instance crashes (it stops answering at once; the registry only
learns a moment later, as a real one would), two thirds in a new instance
registers.  The summary shows how the calls spread and that none failed.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
import pybreaker

from kitsd import _interruptible, breaker, lb, sd
from kitsd.core import observe
from kitsd.demo_server import DemoInstance
from kitsd.transport import Transport

__all__ = ["MAX_CONCURRENCY", "MAX_INSTANCES", "DemoReport", "check_options", "format_event",
           "format_header", "format_report", "run_demo"]

SERVICE = "hello"
BALANCERS = ("round-robin", "random", "least-loaded", "peak-ewma", "weighted",
             "consistent-hash")
#: With ``slow_instance``: how much slower the slow instance answers, and its stalls.
SLOW_DELAY = 0.040
SLOW_STALL_EVERY = 20
SLOW_STALL = 0.5
#: How long the registry takes to notice the crash (a TTL or health check would, in life).
REGISTRY_LAG = 0.1


@dataclass
class DemoReport:
    """What a demo run measured."""

    instances: int
    requests: int
    balancer: str
    concurrency: int
    calls_per_instance: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    retries: int = 0
    ejections: int = 0
    breaker_opens: int = 0
    failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    killed: str = ""
    added: str = ""
    wall: float = 0.0
    building_blocks: bool = False
    slow: str = ""  # the slow instance, with slow_instance
    hedged: bool = False
    attempts: int = 0  # requests sent to instances (hedges included)


class _OpenCounter(pybreaker.CircuitBreakerListener):
    def __init__(self, report: DemoReport, lock: threading.Lock) -> None:
        self._report = report
        self._lock = lock

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        if new_state is not None and new_state.name == pybreaker.STATE_OPEN:
            with self._lock:
                self._report.breaker_opens += 1


def run_demo(
    *,
    instances: int = 3,
    requests: int = 2000,
    balancer: str = "round-robin",
    concurrency: int = 4,
    seed: int | None = None,
    building_blocks: bool = False,
    slow_instance: bool = False,
    observer: Callable[[Any], object] | None = None,
    before_close: Callable[[], object] | None = None,
    on_event: Callable[[float, str], object] | None = None,
) -> DemoReport:
    """Run the demo and return its report; raises ``ValueError`` for bad options.

    The calls go through :class:`kitsd.Transport`; ``building_blocks=True`` shows
    the same client assembled by hand from ``sd``, ``lb`` and ``breaker``.
    ``slow_instance``: the first instance answers 20x slower and stalls on 1 in 20
    answers, and calls are hedged (``lb.Hedge(percentile=95)``) — run it with
    ``balancer="peak-ewma"`` to see the slow instance avoided and the stalls hidden.
    ``observer`` (e.g. a ``kitsd.prometheus.PrometheusObserver``) hears the run's
    :mod:`kitsd.core.observe` observations; it is installed for the run only.
    ``before_close`` is called once the calls are done, while the client stack (its
    watch, balancer and per-instance breakers) is still open: read there what
    describes live objects (a scrape's ``kitsd_breaker_state`` shows the breakers of
    the instances in the set; once the stack is closed, there are none to show).
    ``on_event(seconds, what)`` hears each line of the timeline as it happens (an
    instance killed, dropped by the registry, added), in the calling thread.

    Ctrl-C (``KeyboardInterrupt``) stops the calling threads after their current
    call and the local instances before it propagates: nothing started is left.
    """
    check_options(instances=instances, requests=requests, concurrency=concurrency,
                  balancer=balancer)
    if observer is not None:  # kitsd.observe: heard for this run only
        with observe.observing(observer):
            return run_demo(instances=instances, requests=requests, balancer=balancer,
                            concurrency=concurrency, seed=seed, building_blocks=building_blocks,
                            slow_instance=slow_instance, before_close=before_close,
                            on_event=on_event)
    report = DemoReport(instances, requests, balancer, concurrency,
                        building_blocks=building_blocks)
    servers: list[DemoInstance] = []
    try:
        _run(report, servers, registry=sd.MemoryRegistry(), seed=seed,
             slow_instance=slow_instance, before_close=before_close, on_event=on_event)
    finally:
        for server in servers:
            server.kill()
    return report


#: The most instances and calling threads the demo starts (in this process: each
#: instance is a server and its thread; ``--instances 100000`` ran on for minutes after
#: SIGTERM, stopping them one by one).
MAX_INSTANCES = 100
MAX_CONCURRENCY = 256


def check_options(*, instances: int, requests: int, concurrency: int, balancer: str) -> None:
    """Raise ``ValueError`` for options :func:`run_demo` cannot run with."""
    if instances < 2:
        raise ValueError("the demo needs at least 2 instances (one of them is killed)")
    if instances > MAX_INSTANCES:
        raise ValueError(f"the demo starts at most {MAX_INSTANCES} instances, not {instances}")
    if requests < 3:
        raise ValueError("the demo needs at least 3 requests")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be >= 1 and <= {MAX_CONCURRENCY}, not {concurrency}")
    if balancer not in BALANCERS:
        raise ValueError(f"balancer must be one of {', '.join(BALANCERS)}, got {balancer!r}")


def _run(report: DemoReport, servers: list[DemoInstance], *, registry: sd.MemoryRegistry,
         seed: int | None, slow_instance: bool,
         before_close: Callable[[], object] | None,
         on_event: Callable[[float, str], object] | None = None) -> None:
    """The run itself; ``servers`` collects every instance started (the caller kills them)."""
    lock = threading.Lock()
    listener = _OpenCounter(report, lock)
    servers.extend(DemoInstance() for _ in range(report.instances))
    if slow_instance:
        servers[0].kill()
        servers[0] = DemoInstance(delay=SLOW_DELAY, stall_every=SLOW_STALL_EVERY,
                                  stall=SLOW_STALL)
        report.slow = servers[0].instance
        report.hedged = True
    hedge = lb.Hedge(percentile=95, samples=100) if slow_instance else None
    registrars = {s.instance: registry.registrar(SERVICE, s.instance) for s in servers}
    for registrar in registrars.values():
        registrar.register()

    def new_breaker(instance: str) -> pybreaker.CircuitBreaker:
        return pybreaker.CircuitBreaker(fail_max=3, reset_timeout=1.0, name=instance,
                                        listeners=[listener])

    requests = report.requests
    start = time.perf_counter()

    def note(what: str) -> None:
        at = time.perf_counter() - start
        report.timeline.append((at, what))
        if on_event is not None:
            on_event(at, what)
    kill_at, add_at = requests // 3, 2 * requests // 3
    kill_now, add_now = threading.Event(), threading.Event()
    killed, added = threading.Event(), threading.Event()
    stopping = threading.Event()  # Ctrl-C: the workers stop after their current call
    done = itertools.count(1)
    numbers = itertools.count()

    with contextlib.ExitStack() as stack:
        if report.building_blocks:
            client = _building_blocks(stack, registry, report.balancer, seed, new_breaker,
                                      report, lock, listener, hedge)
        else:
            client = _through_transport(stack, registry, report.balancer, seed, new_breaker,
                                        report, lock, hedge)

        def worker() -> None:
            for number in numbers:
                if number >= requests or stopping.is_set():
                    return
                # Calls past a milestone wait for it, so every run shows the same story.
                if number >= kill_at:
                    killed.wait()
                if number >= add_at:
                    added.wait()
                if stopping.is_set():
                    return
                began = time.perf_counter()
                try:
                    instance = client(number)
                except Exception:  # noqa: BLE001 - the demo counts every failure
                    with lock:
                        report.failed += 1
                else:
                    with lock:
                        report.calls_per_instance[instance] += 1
                        report.latencies.append(time.perf_counter() - began)
                finished = next(done)
                if finished == kill_at:
                    kill_now.set()
                elif finished == add_at:
                    add_now.set()

        workers = [threading.Thread(target=worker, name=f"demo-worker-{i}")
                   for i in range(report.concurrency)]
        completed = False
        try:
            for thread in workers:
                thread.start()
            _interruptible.wait(kill_now)  # the main thread: Ctrl-C must reach it
            victim = servers[1]
            victim.kill()
            killed.set()
            report.killed = victim.instance
            note(f"killed {victim.instance}")
            _interruptible.sleep(REGISTRY_LAG)  # the registry notices late, as a real one would
            registrars[victim.instance].deregister()
            note(f"registry dropped {victim.instance}")
            _interruptible.wait(add_now)
            newcomer = DemoInstance()
            servers.append(newcomer)
            registrars[newcomer.instance] = registry.registrar(SERVICE, newcomer.instance)
            registrars[newcomer.instance].register()
            report.added = newcomer.instance
            added.set()
            note(f"added {newcomer.instance}")
            for thread in workers:
                _interruptible.join(thread)
            completed = True
        finally:
            if not completed:  # interrupted (Ctrl-C) or failed: stop the calls first
                stopping.set()
            killed.set()
            added.set()
            for thread in workers:
                if thread.ident is not None:
                    _interruptible.join(thread)
            report.wall = time.perf_counter() - start
        if before_close is not None:
            before_close()
        for registrar in registrars.values():
            registrar.deregister()


Call = Callable[[int], str]


def _make_balancer(name: str, seed: int | None) -> Callable[..., lb.Balancer]:
    """``callable(endpointer, **options) -> balancer`` for a ``--balancer`` choice
    (one of :data:`BALANCERS`)."""
    if name == "round-robin":
        return lb.RoundRobin
    if name == "random":
        return functools.partial(lb.Random, seed=seed)
    if name == "least-loaded":
        return functools.partial(lb.LeastLoaded, seed=seed)
    if name == "peak-ewma":
        return functools.partial(lb.PeakEWMA, seed=seed)
    if name == "weighted":  # the embedded registry publishes no weights: all weigh 1
        return lb.Weighted
    # 50 "users", each kept on one instance: the key is the call's number modulo 50
    return functools.partial(lb.ConsistentHash, key=_user_key)


def _user_key(request: Any) -> str:
    """The consistent-hash key of a demo call (a number, or the transport's request)."""
    if isinstance(request, httpx.Request):
        return f"user-{int(request.url.params.get('n', '0')) % 50}"
    return f"user-{int(request) % 50}"


class _Counting:
    """A balancer that tallies the attempts that failed (for the summary) and
    otherwise leaves everything to the balancer it wraps."""

    def __init__(self, inner: Any, report: DemoReport, lock: threading.Lock, *,
                 count_failures: bool = True) -> None:
        self._inner = inner
        self._report = report
        self._lock = lock
        self._count_failures = count_failures
        if hasattr(inner, "pick_for"):  # a keyed balancer (consistent hash) keeps its key
            self.pick_for = self._pick_for

    def endpoint(self) -> Any:
        return self._inner.endpoint()

    def pick(self, exclude: Collection[str] = ()) -> lb.Pick:
        chosen: lb.Pick = self._inner.pick(exclude)
        with self._lock:
            self._report.attempts += 1
        return chosen

    def _pick_for(self, request: Any, exclude: Collection[str] = ()) -> lb.Pick:
        chosen: lb.Pick = self._inner.pick_for(request, exclude)
        with self._lock:
            self._report.attempts += 1
        return chosen

    def report(self, pick: lb.Pick, error: BaseException | None) -> None:
        if error is not None and self._count_failures:
            shown = getattr(error, "error", error)  # the transport's attempt error wraps httpx's
            with self._lock:
                self._report.failures[type(shown).__name__] += 1
                self._report.retries += 1
                if isinstance(error, sd.ConnectionFailure):
                    self._report.ejections += 1
        self._inner.report(pick, error)


def _through_transport(
    stack: contextlib.ExitStack, registry: sd.MemoryRegistry, balancer: str, seed: int | None,
    new_breaker: Callable[[str], pybreaker.CircuitBreaker], report: DemoReport,
    lock: threading.Lock, hedge: lb.Hedge | None,
) -> Call:
    """The one-line client: an httpx.Client whose transport finds ``hello``'s instances."""
    make = _make_balancer(balancer, seed)
    transport = Transport(
        registry, max_attempts=3, breakers=new_breaker, hedge=hedge,
        balancer=lambda endpointer: _Counting(make(endpointer), report, lock))
    client = stack.enter_context(
        httpx.Client(transport=transport, base_url=f"http://{SERVICE}", timeout=2.0))

    def call(number: int) -> str:
        response = client.get("/hello", params={"n": number})
        response.raise_for_status()
        return str(response.json()["instance"])

    return call


def _building_blocks(
    stack: contextlib.ExitStack, registry: sd.MemoryRegistry, balancer: str, seed: int | None,
    new_breaker: Callable[[str], pybreaker.CircuitBreaker], report: DemoReport,
    lock: threading.Lock, listener: pybreaker.CircuitBreakerListener, hedge: lb.Hedge | None,
) -> Call:
    """The same client assembled by hand: breaker -> retry -> balancer ->
    per-instance breaker -> sd.http endpoint."""
    def encode(request: int) -> dict[str, Any]:
        return {"params": {"n": request}}

    def decode(response: httpx.Response) -> str:
        return str(response.json()["instance"])

    http_factory = sd.http.factory(
        "GET", "/hello", encode=encode, decode=decode,
        client_kwargs={"timeout": 2.0},
    )
    factory = breaker.per_instance(http_factory, new_breaker)

    def on_failure(attempt: int, error: BaseException) -> tuple[bool, BaseException | None]:
        with lock:
            report.failures[type(error).__name__] += 1
            if isinstance(error, sd.ConnectionFailure):
                report.ejections += 1
            if attempt < 3:
                report.retries += 1
        return attempt < 3, None

    outer = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=1.0, name="client",
                                     listeners=[listener])
    endpointer = stack.enter_context(sd.Endpointer(registry.instancer(SERVICE), factory))
    chosen = _Counting(_make_balancer(balancer, seed)(endpointer), report, lock,
                       count_failures=False)
    retried = lb.retry(3, 2.0, chosen, callback=on_failure, name=SERVICE, hedge=hedge)
    if isinstance(retried, lb.HedgedEndpoint):
        stack.callback(retried.close)  # its attempt pool
    client: Call = breaker.circuit_breaker(outer)(retried)
    return client


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


def format_header(*, instances: int, balancer: str, requests: int, concurrency: int,
                  building_blocks: bool) -> str:
    """The report's first lines: what runs, and the client it calls through."""
    return (f"kitsd demo: {instances} instances, {balancer}, {requests} calls from "
            f"{concurrency} threads\n"
            + ("client = breaker -> retry(3) -> balancer -> per-instance breaker -> sd.http\n\n"
               if building_blocks else
               f"client = httpx.Client(transport=kitsd.Transport(registry), "
               f"base_url='http://{SERVICE}')\n"
               "         retry(3) -> balancer -> per-instance breaker -> instance\n\n"))


def format_event(at: float, what: str) -> str:
    """One line of the timeline."""
    return f"  t={at:5.2f}s  {what}\n"


def format_report(report: DemoReport, out: TextIO, *, shown_live: bool = False) -> None:
    """Write the summary a person reads at a glance; ``shown_live``: without the header
    and the timeline (already printed as they happened, see ``run_demo(on_event=)``)."""
    total = sum(report.calls_per_instance.values())
    write = out.write
    if not shown_live:
        write(format_header(instances=report.instances, balancer=report.balancer,
                            requests=report.requests, concurrency=report.concurrency,
                            building_blocks=report.building_blocks))
        for at, what in report.timeline:
            write(format_event(at, what))
    write("\n  instance               calls\n")
    widest = max(report.calls_per_instance.values(), default=1)
    for instance in sorted(report.calls_per_instance):
        count = report.calls_per_instance[instance]
        note = {report.killed: " (killed)", report.added: " (added)",
                report.slow: " (slow: 20x, stalls 1 in 20)"}.get(instance, "")
        bar = "#" * max(1, round(30 * count / widest))
        write(f"  {instance:<21}{count:>6}  {bar}{note}\n")
    p50 = _percentile(report.latencies, 0.50) * 1000
    p99 = _percentile(report.latencies, 0.99) * 1000
    failures = ", ".join(f"{name} {n}" for name, n in report.failures.most_common()) or "none"
    write(f"\n  calls {total}   failed {report.failed}   retries {report.retries}   "
          f"ejections {report.ejections}   breaker opens {report.breaker_opens}\n"
          f"  attempt errors: {failures}\n")
    if report.hedged:
        write(f"  hedged (percentile 95): {report.attempts} requests sent for {total} calls "
              f"({report.attempts / max(total, 1) - 1:+.1%}: retries and hedges)\n")
    write(f"  latency p50 {p50:.2f} ms   p99 {p99:.2f} ms   wall {report.wall:.2f} s\n")
    verdict = "OK: every call succeeded" if report.failed == 0 else \
        f"FAILED: {report.failed} calls failed"
    write(f"\n{verdict}\n")
