"""``kitsd chaos``: a fault schedule against a real registry, with the whole client stack
under load, and a table of what each fault cost.

Theory of operation
-------------------
:func:`run_chaos` starts a registry (:mod:`kitsd.chaos_registry`: a 3-member etcd
cluster, a 3-server Consul cluster or the in-process memory registry, all on
loopback; or servers of the user's by URL), ``instances`` HTTP instance
processes (:mod:`kitsd.chaos_instance`) that register themselves, and worker
threads calling the service at ``rate`` calls per second through the full
client stack::

    breaker -> retry (4 attempts, 3 s) -> round robin (passive ejection)
            -> per-instance breakers -> sd.http (0.5 s per attempt)

or, with ``transport=True`` (``kitsd chaos --transport``), through an ``httpx.Client``
on a :class:`kitsd.Transport` with its default options (``hedge=`` an
:class:`lb.Hedge` for a hedged one: ``--hedge p95``), discovering the service
through the registry's URL template, as a user's one-line client does.

For each phase the report records the process's threads, open file descriptors
and established TCP connections (:func:`resources`, sampled every
:data:`SAMPLE_INTERVAL` seconds; the proxies that stand in for the network left
out): the least seen over the second half of the phase (at least
:data:`SAMPLE_WINDOW` seconds), which is what stays rather than what a call in
flight holds.  What a fault leaves behind shows as growth between the first
phase and the last (:attr:`ChaosReport.growth`).

Then it runs the phases of the schedule one after another.  Each phase applies
a fault, waits until the client's instance set shows what it should (the
"fault" convergence time), holds the fault for half the phase, heals it, and
waits again (the "heal" convergence time)::

    kill      SIGKILL an instance          | restart it on the same port
    hang      SIGSTOP an instance          | SIGCONT
    slow      answers 0.25 s late          | fast again
    leader    SIGKILL the registry leader  | restart it
    cut       client cut off the registry  | reconnected (a black-holing proxy);
              and an instance SIGKILLed    | it restarts once the set converged
    lost      registration removed behind  | (its registrar must restore it)
              the registrar's back
    rolling   every instance in turn: SIGTERM (drained by kitsd.serve), then started
              again on its port and registered -- a rolling deploy (not in the default
              schedule; with it, instances run with ``--drain``)

Which calls must not fail: every call is an idempotent ``GET``, and every
fault leaves at least two healthy instances and a registry quorum, so the
stack is meant to hide all of them: any failed call is unexpected and makes
the exit status 1, as does a phase whose instance set did not converge.
(Latency is reported, not judged: a hung instance costs a call one 0.5 s
attempt before it is retried elsewhere.)

The schedule is chosen by ``faults`` (in that order) and the victims by
``seed``, so a run can be repeated.
"""

from __future__ import annotations

import importlib
import itertools
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
import pybreaker

from kitsd import _interruptible, breaker, lb, sd
from kitsd.core import observe
from kitsd.core.observe import (
    AttemptFinished,
    BreakerStateChanged,
    CallFinished,
    InstanceEjected,
    Observation,
)
from kitsd.core.redact import redact_url
from kitsd.sd.event import Event

__all__ = [
    "DEFAULT_FAULTS", "FAULTS", "MAX_INSTANCES", "RESOURCES", "ROLLING_DRAIN", "SAMPLE_INTERVAL",
    "SAMPLE_WINDOW",
    "ChaosReport", "PhaseReport", "client_stack", "format_table", "parse_hedge", "resources",
    "run_chaos",
]

FAULTS = ("kill", "hang", "slow", "leader", "cut", "lost", "rolling")
#: The schedule when none is given.
DEFAULT_FAULTS = ("kill", "hang", "slow", "leader", "cut", "lost")
#: Seconds a chaos instance may drain for in the ``rolling`` fault.
ROLLING_DRAIN = 10.0
"""Every fault, in the default order."""

CONVERGE_TIMEOUT = 30.0
"""Seconds a phase waits for the instance set to converge before calling it failed."""

_ATTEMPT_TIMEOUT = 0.5
_SLOW = 0.25


@dataclass
class PhaseReport:
    """What one phase measured."""

    name: str
    fault: str = ""
    calls: int = 0
    failed: int = 0
    retries: int = 0
    ejections: int = 0
    breaker_opens: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    converge_fault_s: float | None = None
    converge_heal_s: float | None = None
    converged: bool = True
    skipped: str = ""
    errors: dict[str, int] = field(default_factory=dict)
    threads: int | None = None
    """Threads of the process at the end of the phase (the least seen over its second
    half; :func:`resources`)."""
    fds: int | None = None
    """Open file descriptors of the process at the end of the phase (likewise)."""
    connections: int | None = None
    """Established TCP connections of the process at the end of the phase (likewise)."""
    latencies: list[float] = field(default_factory=list, repr=False)


@dataclass
class ChaosReport:
    """A whole run: its settings and one :class:`PhaseReport` per phase."""

    registry: str
    instances: int
    rate: float
    duration: float
    seed: int
    phases: list[PhaseReport] = field(default_factory=list)
    wall_s: float = 0.0
    started: list[str] = field(default_factory=list)
    """The instances in start order (``host:port``)."""
    client: str = "building blocks"
    """What the load went through: the building-blocks stack or a ``kitsd.Transport``."""

    @property
    def growth(self) -> dict[str, int]:
        """What grew between the end of the first phase and the end of the last: resource
        (:data:`RESOURCES`) -> how many more (only those that grew)."""
        measured = [phase for phase in self.phases if phase.threads is not None]
        if len(measured) < 2:
            return {}
        first, last = measured[0], measured[-1]
        grown = {name: int(getattr(last, name)) - int(getattr(first, name))
                 for name in RESOURCES}
        return {name: more for name, more in grown.items() if more > 0}

    @property
    def failed(self) -> int:
        """Calls that failed (every one of them should not have)."""
        return sum(phase.failed for phase in self.phases)

    @property
    def calls(self) -> int:
        """Calls made."""
        return sum(phase.calls for phase in self.phases)

    @property
    def ok(self) -> bool:
        """No failed call, and every phase converged."""
        return self.failed == 0 and all(phase.converged for phase in self.phases)

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON data."""
        data = asdict(self)
        for phase in data["phases"]:
            del phase["latencies"]
        data.update(calls=self.calls, failed=self.failed, ok=self.ok, growth=self.growth)
        return data


#: What :func:`resources` counts, as :class:`PhaseReport` names them.
RESOURCES = ("threads", "fds", "connections")
#: Seconds between two samples of :func:`resources` during a run.
SAMPLE_INTERVAL = 0.2
#: The shortest end of a phase whose samples make its figures (seconds).
SAMPLE_WINDOW = 1.0


def resources(*, ignore_ports: Collection[int] = (),
              ignore_threads: tuple[str, ...] = ()) -> dict[str, int] | None:
    """This process's threads, open file descriptors and established TCP connections
    (``None`` where ``/proc`` cannot tell: not Linux).  What stands in for the network
    is left out: the TCP sockets with a local or remote port in ``ignore_ports`` (a
    proxy's: its listening port, the ports it forwards to) and the threads whose name
    starts with one of ``ignore_threads``."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    fds = 0
    sockets: dict[str, int] = {}  # inode -> how many of our fds hold it
    for name in names:
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # closed meanwhile (the listing's own fd among them)
            continue
        fds += 1
        if target.startswith("socket:["):
            inode = target[8:-1]
            sockets[inode] = sockets.get(inode, 0) + 1
    connections = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as rows:
                next(rows, None)  # the header
                for row in rows:
                    fields = row.split()
                    if len(fields) <= 9 or fields[9] not in sockets:
                        continue  # not ours
                    local = int(fields[1].rpartition(":")[2], 16)
                    remote = int(fields[2].rpartition(":")[2], 16)
                    if local in ignore_ports or remote in ignore_ports:
                        fds -= sockets.pop(fields[9])
                    elif fields[3] == "01":  # ESTABLISHED
                        connections += 1
        except OSError:
            continue
    threads = sum(1 for thread in threading.enumerate()
                  if not thread.name.startswith(ignore_threads))
    return {"threads": threads, "fds": fds, "connections": connections}


#: The most instance processes a run starts.
MAX_INSTANCES = 50


def parse_hedge(text: str) -> lb.Hedge:
    """``kitsd chaos --hedge``: ``pNN`` (the NN-th percentile of the latencies seen, as
    :class:`lb.Hedge` ``percentile=``) or seconds (``delay=``).  Raises ``ValueError``."""
    spec = text.strip().lower()
    try:
        if spec.startswith("p"):
            return lb.Hedge(percentile=float(spec[1:]))
        return lb.Hedge(delay=float(spec))
    except (TypeError, ValueError):  # float()'s or lb.Hedge's words: not this option's
        raise ValueError(f"--hedge must be pNN (a percentile between 0 and 100, e.g. p95) "
                         f"or seconds (e.g. 0.05), not {text!r}") from None


def client_stack(
    instancer: sd.Instancer,
    *,
    callback: Callable[[int, BaseException], tuple[bool, BaseException | None]] | None = None,
    listeners: Sequence[pybreaker.CircuitBreakerListener] = (),
    attempt_timeout: float = _ATTEMPT_TIMEOUT,
) -> tuple[Callable[[int], str], sd.Endpointer]:
    """The client stack a chaos run loads: ``breaker -> retry(4 attempts, 3 s) -> round
    robin -> per-instance breakers -> sd.http GET /chaos`` over ``instancer``.

    Returns the call (``call(n) -> "host:port"`` of the instance that answered) and the
    :class:`sd.Endpointer` to close after.  ``callback`` is the retry callback (default:
    4 attempts); ``listeners`` hear every breaker.
    """
    factory = breaker.per_instance(
        sd.http.factory("GET", "/chaos", encode=_encode, decode=_decode,
                        client_kwargs={"timeout": attempt_timeout}),
        lambda instance: pybreaker.CircuitBreaker(
            fail_max=3, reset_timeout=1.0, name=instance, listeners=list(listeners)),
    )
    endpointer = sd.Endpointer(instancer, factory)
    call = breaker.circuit_breaker(
        pybreaker.CircuitBreaker(fail_max=20, reset_timeout=1.0, listeners=list(listeners))
    )(lb.retry(4, 3.0, lb.RoundRobin(endpointer), callback=callback))
    return call, endpointer


class _Load:
    """Worker threads calling the service at a fixed rate, counting per phase, through
    the building-blocks stack (:func:`client_stack`)."""

    def __init__(self, instancer: sd.Instancer | None, rate: float, workers: int) -> None:
        self.lock = threading.Lock()
        self.phase: PhaseReport = PhaseReport("starting")
        self._rate = rate
        self._stop = threading.Event()
        self._slots = itertools.count()
        self._start = time.monotonic()
        if instancer is not None:
            self.call, endpointer = client_stack(
                instancer, callback=self._on_failure, listeners=[_Opens(self)])
            self._close: Callable[[], None] = endpointer.close
        self._threads = [threading.Thread(target=self._work, name=f"kitsd-chaos-load-{n}",
                                          daemon=True) for n in range(workers)]

    def start(self) -> None:
        self._start = time.monotonic()
        for thread in self._threads:
            thread.start()

    def _on_failure(self, attempt: int, error: BaseException) -> tuple[bool, None]:
        with self.lock:
            phase = self.phase
            phase.errors[type(error).__name__] = phase.errors.get(type(error).__name__, 0) + 1
            if isinstance(error, sd.ConnectionFailure):
                phase.ejections += 1  # a connection failure ejects at once (lb.OutlierDetection)
            if attempt < 4:
                phase.retries += 1
        return attempt < 4, None

    def _work(self) -> None:
        while not self._stop.is_set():
            slot = next(self._slots)
            due = self._start + slot / self._rate
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            with self.lock:
                phase = self.phase
            started = time.monotonic()
            try:
                self.call(slot)
            except Exception as error:  # noqa: BLE001 - every failure is counted and shown
                with self.lock:
                    phase.calls += 1
                    phase.failed += 1
                    key = f"FAILED {type(error).__name__}: {str(error)[:80]}"
                    phase.errors[key] = phase.errors.get(key, 0) + 1
            else:
                elapsed = time.monotonic() - started
                with self.lock:
                    phase.calls += 1
                    phase.latencies.append(elapsed)

    def switch(self, phase: PhaseReport) -> None:
        with self.lock:
            self.phase = phase

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        self._close()


class _TransportLoad(_Load):
    """The same load through an ``httpx.Client`` on a :class:`kitsd.Transport` with its
    default options (and ``hedge``); what the stack did is heard through the event seam
    (:mod:`kitsd.core.observe`), as a user's metrics would hear it."""

    def __init__(self, discover: Any, service: str, hedge: lb.Hedge | None, rate: float,
                 workers: int) -> None:
        import kitsd  # the composition layer, only for this mode

        super().__init__(None, rate, workers)
        self._url = f"http://{service}/chaos"
        self.client = httpx.Client(transport=kitsd.Transport(discover, hedge=hedge))
        self._close = self.client.close
        self._observer = self._observe  # one bound method: the hub removes by identity
        observe.add_observer(self._observer)

    def call(self, request: int) -> str:
        response = self.client.get(self._url, params={"n": request})
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code} from {response.text[:60]!r}")
        return str(response.json()["instance"])

    def _observe(self, observation: Observation) -> None:
        if isinstance(observation, AttemptFinished):
            if observation.outcome != "success":
                error = observation.error
                key = type(error).__name__ if error is not None else observation.outcome
                with self.lock:
                    errors = self.phase.errors
                    errors[key] = errors.get(key, 0) + 1
        elif isinstance(observation, CallFinished):
            if observation.attempts > 1:
                with self.lock:
                    self.phase.retries += observation.attempts - 1
        elif isinstance(observation, InstanceEjected):
            with self.lock:
                self.phase.ejections += 1
        elif isinstance(observation, BreakerStateChanged) and observation.new == "open":
            with self.lock:
                self.phase.breaker_opens += 1

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            observe.remove_observer(self._observer)


class _Opens(pybreaker.CircuitBreakerListener):
    def __init__(self, load: _Load) -> None:
        self._load = load

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        if new_state is not None and new_state.name == pybreaker.STATE_OPEN:
            with self._load.lock:
                self._load.phase.breaker_opens += 1


def _encode(request: int) -> dict[str, Any]:
    return {"params": {"n": request}}


def _decode(response: httpx.Response) -> str:
    return str(response.json()["instance"])


class _View:
    """The client's latest instance set, as its instancer reports it."""

    def __init__(self, instancer: sd.Instancer) -> None:
        self._lock = threading.Lock()
        self.event = Event()
        self._instancer = instancer
        instancer.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        with self._lock:
            self.event = event

    def shows(self, expected: set[str]) -> bool:
        with self._lock:
            event = self.event
        return event.error is None and set(event.instances) == expected

    def close(self) -> None:
        self._instancer.unsubscribe(self._on_event)


@dataclass(frozen=True)
class _Remote:
    """An instance someone else runs: we know its address, nothing more."""

    instance: str


def _settle(view: _View, quiet: float = 1.0) -> set[str]:
    """The instance set once it has at least two members and stayed the same ``quiet``
    seconds; raises ``RuntimeError`` if that does not happen within the timeout."""
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    seen: tuple[str, ...] = ()
    since = time.monotonic()
    while time.monotonic() < deadline:
        event = view.event
        if event.instances != seen or event.error is not None:
            seen, since = event.instances, time.monotonic()
        elif len(seen) >= 2 and time.monotonic() - since >= quiet:
            return set(seen)
        time.sleep(0.05)
    raise RuntimeError(f"the service needs at least 2 steady instances; the client sees "
                       f"{view.event}")


def _converge(check: Callable[[], bool], since: float, timeout: float) -> float | None:
    deadline = since + timeout
    while True:
        try:
            if check():
                return time.monotonic() - since
        except Exception:  # noqa: BLE001, S110 - a registry still recovering: ask again
            pass
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def _percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0] * 1000
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def run_chaos(
    *,
    registry: str = "memory",
    registry_url: str | None = None,
    instances: int = 3,
    duration: float = 60.0,
    rate: float = 50.0,
    faults: Sequence[str] = DEFAULT_FAULTS,
    seed: int | None = None,
    service: str | None = None,
    say: Callable[[str], None] = lambda line: None,
    progress: Callable[[str], None] | None = None,
    transport: bool = False,
    hedge: lb.Hedge | None = None,
) -> ChaosReport:
    """Run the schedule and return its report (see the module docstring).

    ``transport``: the load goes through a :class:`kitsd.Transport` with its default
    options instead of the building-blocks stack; ``hedge`` (implies ``transport``):
    that transport is hedged with it.

    With ``service`` (and ``registry_url``) no instance is started: the load goes to
    the instances already registered as ``service`` (for etcd, those under the URL's
    prefix), and only the faults a client can cause run (``cut``, ``lost``).
    ``say`` receives a line per thing that happens, ``progress`` a status line a
    few times a second.  Raises ``ValueError`` for bad options (before starting
    anything) and ``RuntimeError`` if a server or an instance does not start.
    """
    from kitsd.chaos_registry import check_url, open_registry
    from kitsd.compose import reaper
    from kitsd.compose.instance import InstanceProcess
    from kitsd.compose.process import free_ports

    unknown = [fault for fault in faults if fault not in FAULTS]
    if unknown:
        raise ValueError(f"unknown faults {unknown}; choose from {', '.join(FAULTS)}")
    if service is not None and not registry_url:
        raise ValueError("--service needs --registry-url (a service someone runs)")
    if service is None and instances < 3:
        raise ValueError("chaos needs at least 3 instances (one is hurt, two carry the load)")
    if instances > MAX_INSTANCES:
        raise ValueError(f"chaos starts at most {MAX_INSTANCES} instances (processes), "
                         f"not {instances}")
    if not duration > 0 or not rate > 0:
        raise ValueError("--duration and --rate must be > 0")
    if registry not in ("etcd", "consul", "k8s", "memory"):
        raise ValueError(f"--registry must be etcd, consul, k8s or memory, not {registry!r}")
    if hedge is not None and not isinstance(hedge, lb.Hedge):
        raise TypeError(f"hedge must be an lb.Hedge, got {type(hedge).__name__}")
    transport = transport or hedge is not None
    if registry_url:
        check_url(registry_url, service)
    _require_client(registry_url.partition("://")[0] if registry_url else registry)
    seed = random.randrange(2**31) if seed is None else seed
    rng = random.Random(seed)
    schedule = list(dict.fromkeys(faults))
    phase_length = duration / (len(schedule) + 1)
    began = time.monotonic()

    say(f"starting {redact_url(registry_url) if registry_url else registry} ...")
    chaos = open_registry(registry, registry_url, service)
    tmp: tempfile.TemporaryDirectory[str] | None = None
    processes: list[InstanceProcess] = []
    load: _Load | None = None
    view: _View | None = None
    instancer: sd.Instancer | None = None
    try:  # from here on, whatever ends the run (Ctrl-C, SIGTERM too) stops all we started
        chaos.check()  # someone else's registry answers, before an instance needs it
        report = ChaosReport(chaos.describe(), 0 if service else instances, rate, duration,
                             seed)
        if transport:
            report.client = "kitsd.Transport (default options)" + (
                "" if hedge is None else ", hedged at " + (
                    f"p{hedge.percentile:g}" if hedge.percentile is not None
                    else f"{hedge.delay:g} s"))
        tmp = tempfile.TemporaryDirectory(prefix="kitsd-chaos-")
        reaper.watch_dir(tmp.name)  # removed even if we are killed
        for index, port in enumerate(free_ports(0 if service else instances, chaos.instance_host)):
            args = ["--port", str(port), *chaos.instance_args(port)]
            if "rolling" in schedule:
                args += ["--drain", f"{ROLLING_DRAIN:g}"]
            processes.append(InstanceProcess(f"i{index}", workdir=Path(tmp.name), args=args,
                                             port=port))
            processes[-1].host = chaos.instance_host
        for process in processes:
            process.start()
        for process in processes:
            process.wait_ready()
        chaos.watch(processes)
        instancer = chaos.open_instancer()
        view = _View(instancer)
        victims: list[Any] = list(processes)
        if service:
            everyone = _settle(view)
            victims = [_Remote(instance) for instance in sorted(everyone)]
            report.instances = len(everyone)
        else:
            everyone = {process.instance for process in processes}
        report.started = [victim.instance for victim in victims]
        say(f"{chaos.describe()}; {len(everyone)} instances: {', '.join(sorted(everyone))}")
        if _converge(lambda: view.shows(everyone), time.monotonic(), CONVERGE_TIMEOUT) is None:
            raise RuntimeError(f"the client never saw all instances: {view.event}")
        workers = max(8, min(64, int(rate // 4)))
        if transport:
            discover, name = chaos.transport_discover()
            load = _TransportLoad(discover, name, hedge, rate, workers)
            say(f"load through {report.client}")
        else:
            load = _Load(instancer, rate, workers)
        load.start()
        sampler = _Sampler(chaos.harness_ports())
        stop_progress = threading.Event()
        ticker = None
        if progress is not None:
            ticker = threading.Thread(target=_progress, name="kitsd-chaos-progress", daemon=True,
                                      args=(load, view, report, progress, stop_progress, began))
            ticker.start()
        try:
            baseline = PhaseReport("baseline", "none")
            report.phases.append(baseline)
            load.switch(baseline)
            say("phase baseline: no fault")
            began_phase = time.monotonic()
            _interruptible.sleep(phase_length)
            sampler.measure(baseline, began_phase)
            rng.shuffle(victims)
            for number, fault in enumerate(schedule):
                phase = PhaseReport(fault)
                report.phases.append(phase)
                load.switch(phase)
                victim = victims[number % len(victims)]
                began_phase = time.monotonic()
                _run_phase(fault, phase, chaos, victim, view, everyone, phase_length, say,
                           everybody=victims)
                sampler.measure(phase, began_phase)
        finally:
            sampler.stop()
            stop_progress.set()
            if ticker is not None:
                ticker.join(5)
    finally:
        if load is not None:
            load.stop()
        if view is not None:
            view.close()
        if instancer is not None:
            instancer.stop()
        for process in processes:
            process.stop()  # SIGTERM: it deregisters, leaving nothing in a user's registry
            process.close()
        chaos.close()
        if tmp is not None:
            tmp.cleanup()
            reaper.forget_dir(tmp.name)
    for phase in report.phases:
        phase.p50_ms = _percentile(phase.latencies, 50)
        phase.p99_ms = _percentile(phase.latencies, 99)
    report.wall_s = time.monotonic() - began
    return report


class _Sampler:
    """Samples :func:`resources` every :data:`SAMPLE_INTERVAL` seconds on a thread,
    leaving out the registry's proxies (they stand in for the network) and itself."""

    def __init__(self, ignore_ports: Collection[int]) -> None:
        self._ports = frozenset(ignore_ports)
        self._lock = threading.Lock()
        self._samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kitsd-chaos-sampler",
                                        daemon=True)
        self._thread.start()

    def _resources(self) -> dict[str, int] | None:
        return resources(ignore_ports=self._ports,
                         ignore_threads=("blackhole-", "kitsd-chaos-sampler"))

    def _run(self) -> None:
        while True:
            found = self._resources()
            if found is None:
                return
            with self._lock:
                self._samples.append((time.monotonic(), found))
            if self._stop.wait(SAMPLE_INTERVAL):
                return

    def measure(self, phase: PhaseReport, began: float) -> None:
        """Record in ``phase`` (which began at ``began``) the least of each resource
        over its second half, at least :data:`SAMPLE_WINDOW` seconds."""
        now = time.monotonic()
        since = now - max(SAMPLE_WINDOW, (now - began) / 2)
        found = self._resources()
        with self._lock:
            samples = [sample for at, sample in self._samples if at >= since]
            self._samples = [(at, sample) for at, sample in self._samples if at >= since]
        if found is not None:
            samples.append(found)
        if samples:
            phase.threads, phase.fds, phase.connections = (
                min(sample[name] for sample in samples) for name in RESOURCES)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


#: The client library each registry's driver needs (any one of them), and its extra.
_CLIENTS = {"etcd": (("pyetcd", "etcd3"), "etcd"), "consul": (("consul",), "consul")}


def _require_client(registry: str) -> None:
    """Raise ``ValueError`` naming the extra when ``registry``'s client library is missing:
    checked before anything starts (the instance processes and the client need it)."""
    if registry not in _CLIENTS:
        return
    modules, extra = _CLIENTS[registry]
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        return
    raise ValueError(f"chaos on {registry} needs its client library ({' or '.join(modules)}): "
                     f"pip install 'kitsd[{extra}]'")


def _rolling(phase: PhaseReport, members: Sequence[Any], view: _View, everyone: set[str],
             say: Callable[[str], None]) -> None:
    """Restart every member in turn (SIGTERM: it drains; then on its port again)."""
    phase.fault = f"rolling restart of {len(members)} instances (SIGTERM, drained)"
    say(f"phase rolling: {phase.fault}")
    slowest = 0.0
    for member in members:
        began = time.monotonic()
        member.restart()  # SIGTERM, wait for the drained exit, start, wait until registered
        took = _converge(lambda: view.shows(everyone), began, CONVERGE_TIMEOUT)
        if took is None:
            phase.converged = False
            say(f"  rolling: {member.instance} did NOT come back: {view.event}")
            return
        slowest = max(slowest, took)
        say(f"  rolling: {member.instance} restarted and seen again after {took:.2f}s")
    phase.converge_fault_s = slowest


def _run_phase(fault: str, phase: PhaseReport, chaos: Any, victim: Any, view: _View,
               everyone: set[str], length: float, say: Callable[[str], None],
               everybody: Sequence[Any] = ()) -> None:
    start = time.monotonic()
    if fault == "rolling":
        if isinstance(victim, _Remote):
            phase.skipped = "the instances are not ours to restart (--service)"
            say(f"phase {fault}: skipped ({phase.skipped})")
            _interruptible.sleep(length)
        else:
            _rolling(phase, everybody, view, everyone, say)
            _sleep_until(start + length)
        return
    others = everyone - {victim.instance}
    after_fault: set[str] = everyone
    heal: Callable[[], object] = lambda: None  # noqa: E731
    fault_check: Callable[[], bool] | None = None
    blind = False
    local = isinstance(victim, _Remote) is False
    if fault in ("kill", "hang", "slow") and not local:
        phase.skipped = "the instances are not ours to hurt (--service)"
    elif fault == "kill":
        victim.kill()
        phase.fault = f"SIGKILL {victim.instance}, restart"
        after_fault = others
        heal = victim.restart
    elif fault == "hang":
        victim.pause()
        phase.fault = f"SIGSTOP {victim.instance}, SIGCONT"
        after_fault = others
        heal = victim.resume
    elif fault == "slow":
        victim.slow(True)
        phase.fault = f"{victim.instance} {_SLOW * 1000:.0f} ms late"
        heal = lambda: victim.slow(False)  # noqa: E731
    elif fault == "leader":
        if not chaos.can_kill_leader:
            phase.skipped = f"{chaos.name}: no leader of ours to kill"
        else:
            phase.fault = f"SIGKILL {chaos.kill_leader()}, restart"
            heal = chaos.restart_leader
    elif fault == "cut":
        if not chaos.can_cut:
            phase.skipped = f"{chaos.name}: in-process, nothing to cut"
        else:
            # Blind to the registry, the client must hide a crash by retries and ejection
            # alone, then catch up once it reconnects.
            chaos.cut(True)
            phase.fault = "client cut off the registry"
            if local:
                victim.kill()
                phase.fault += f"; SIGKILL {victim.instance}"
                blind = True
            heal = lambda: chaos.cut(False)  # noqa: E731
    elif fault == "lost":
        chaos.lose_registration(victim.instance)
        phase.fault = f"registration of {victim.instance} removed behind its registrar"
        fault_check = lambda: chaos.registered(victim.instance) and view.shows(everyone)  # noqa: E731
    if phase.skipped:
        say(f"phase {fault}: skipped ({phase.skipped})")
        _interruptible.sleep(length)
        return
    say(f"phase {fault}: {phase.fault}")
    if not blind:
        check = fault_check or (lambda: view.shows(after_fault))
        phase.converge_fault_s = _converge(check, start, max(CONVERGE_TIMEOUT, length))
        if phase.converge_fault_s is None:
            phase.converged = False
            say(f"  {fault}: instance set did NOT converge on {sorted(after_fault)}: "
                f"{view.event}")
        else:
            say(f"  {fault}: instance set converged after {phase.converge_fault_s:.2f}s")
    _sleep_until(start + length / 2)
    healed = time.monotonic()
    heal()
    if blind:  # reconnected: catch up on the crash, then see the victim come back
        phase.converge_heal_s = _converge(lambda: view.shows(others), healed, CONVERGE_TIMEOUT)
        say(f"  {fault} healed: " + ("did NOT converge" if phase.converge_heal_s is None else
                                     f"converged after {phase.converge_heal_s:.2f}s"))
        phase.converged = phase.converge_heal_s is not None
        victim.restart()
        if _converge(lambda: view.shows(everyone), time.monotonic(), CONVERGE_TIMEOUT) is None:
            phase.converged = False
    elif fault not in ("lost",):
        phase.converge_heal_s = _converge(lambda: view.shows(everyone), healed, CONVERGE_TIMEOUT)
        if phase.converge_heal_s is None:
            phase.converged = False
            say(f"  {fault} healed: instance set did NOT converge: {view.event}")
        else:
            say(f"  {fault} healed: converged after {phase.converge_heal_s:.2f}s")
    _sleep_until(start + length)


def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        _interruptible.sleep(delay)  # the main thread: Ctrl-C and SIGTERM must reach it


def _progress(load: _Load, view: _View, report: ChaosReport, emit: Callable[[str], None],
              stop: threading.Event, began: float) -> None:
    while not stop.wait(0.5):
        with load.lock:
            phase = load.phase
            calls, failed = phase.calls, phase.failed
            total = sum(p.calls for p in report.phases)
            total_failed = sum(p.failed for p in report.phases)
        shown = len(view.event.instances)
        emit(f"{time.monotonic() - began:6.1f}s  phase {phase.name:<8} {calls:6d} calls "
             f"{failed} failed | total {total} calls, {total_failed} failed | "
             f"client sees {shown} instances")


def _cell(value: float | None, fmt: str, missing: str = "-") -> str:
    return missing if value is None else format(value, fmt)


def format_table(report: ChaosReport, out: TextIO) -> None:
    """Write the report as a table read at a glance."""
    headers = ("phase", "fault", "calls", "failed", "retries", "ejections", "p50 ms", "p99 ms",
               "converged (fault)", "converged (heal)", "threads", "fds", "conns")
    rows = []
    for phase in report.phases:
        used = (_cell(phase.threads, "d"), _cell(phase.fds, "d"), _cell(phase.connections, "d"))
        if phase.skipped:
            rows.append((phase.name, f"skipped: {phase.skipped}", str(phase.calls),
                         str(phase.failed), str(phase.retries), str(phase.ejections),
                         _cell(phase.p50_ms, ".1f"), _cell(phase.p99_ms, ".1f"), "-", "-",
                         *used))
            continue
        not_conv = "NO" if not phase.converged else "-"
        rows.append((phase.name, phase.fault, str(phase.calls), str(phase.failed),
                     str(phase.retries), str(phase.ejections), _cell(phase.p50_ms, ".1f"),
                     _cell(phase.p99_ms, ".1f"),
                     _cell(phase.converge_fault_s, ".2f", not_conv) +
                     ("s" if phase.converge_fault_s is not None else ""),
                     _cell(phase.converge_heal_s, ".2f", not_conv if phase.name != "lost"
                           else "-") + ("s" if phase.converge_heal_s is not None else ""),
                     *used))
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(len(headers))]
    numeric = set(range(2, len(headers)))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
                         for i, cell in enumerate(cells)).rstrip()

    out.write(f"\nkitsd chaos: {report.registry}; {report.instances} instances, "
              f"{report.rate:g} calls/s, seed {report.seed}; through {report.client}\n\n")
    out.write(line(headers) + "\n")
    out.write(line(["-" * width for width in widths]) + "\n")
    for row in rows:
        out.write(line(row) + "\n")
    verdict = ("OK: no call failed and every phase converged" if report.ok else
               f"FAILED: {report.failed} of {report.calls} calls failed"
               + ("" if all(p.converged for p in report.phases) else
                  "; some phase did not converge"))
    out.write(f"\n{report.calls} calls in {report.wall_s:.1f}s. {verdict}.\n")
    measured = [phase for phase in report.phases if phase.threads is not None]
    if len(measured) >= 2:
        grown = report.growth
        out.write("From the first phase to the last: "
                  + (", ".join(f"{name} +{more}" for name, more in grown.items()) if grown
                     else "no growth of threads, file descriptors or connections") + ".\n")
    failures = {key: count for phase in report.phases for key, count in phase.errors.items()
                if key.startswith("FAILED")}
    for key, count in failures.items():
        out.write(f"  {count} x {key}\n")


def main_chaos(args: Any) -> int:
    """The ``kitsd chaos`` command (``args`` from :mod:`kitsd.cli`); returns the exit code."""
    faults = [fault.strip() for fault in args.faults.split(",") if fault.strip()]
    library = logging.getLogger("kitsd")
    previous_level = library.level
    if not args.verbose:  # the drivers' recovery warnings are the expected story here
        library.setLevel(logging.ERROR)
    try:
        return _run_and_report(args, faults)
    finally:  # main_chaos also runs in-process (tests, embedding): leave logging as found
        library.setLevel(previous_level)


def _run_and_report(args: Any, faults: list[str]) -> int:
    is_tty = sys.stderr.isatty()

    def say(line: str) -> None:
        print(("\r\x1b[K" if is_tty else "") + line, file=sys.stderr if args.json else sys.stdout,
              flush=True)

    def progress(line: str) -> None:
        if is_tty:
            print("\r\x1b[K" + line, end="", file=sys.stderr, flush=True)

    try:
        report = run_chaos(registry=args.registry, registry_url=args.registry_url,
                           instances=args.instances, duration=args.duration, rate=args.rate,
                           faults=faults, seed=args.seed, service=args.service, say=say,
                           progress=progress, transport=getattr(args, "transport", False),
                           hedge=getattr(args, "hedge", None))
    except sd.RegistryUnavailableError as error:  # --registry-url: nobody answers there
        print(f"kitsd chaos: the registry was never reached: {error}", file=sys.stderr)
        return 1
    except (FileNotFoundError, RuntimeError, OSError) as error:  # a server that cannot start
        print(f"\nkitsd chaos: could not run: {error}", file=sys.stderr)
        return 2
    if is_tty:
        print("\r\x1b[K", end="", file=sys.stderr)
    if args.json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        format_table(report, sys.stdout)
    return 0 if report.ok else 1
