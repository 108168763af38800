"""Active health checking: :class:`HealthCheckers`, the probers of one owner.

One prober per instance and check, shared by every stack that watches the
instance: two balancers over the same service (a sync and an async client, or
two transports' stacks given the same ``HealthCheckers``) probe each instance
once per interval, not twice.  The probers belong to the :class:`HealthCheckers`
object that runs them — nothing is process-wide — and stop when it is closed or
when no stack watches their instance any more (a stack that is garbage
collected stops watching).

How it runs: one scheduler thread keeps the probes due in a heap and hands each
to a small pool of worker threads (``concurrency``, default 8), so a hundred
instances cost two threads plus the pool, and a slow probe never delays the
others.  Each check's first probe comes after a random part of one interval,
then every ``interval * (1 ± jitter)``.  HTTP checks share one ``httpx.Client``
(connection reuse, as Envoy's checker does); gRPC checks keep one channel per
instance.  The verdicts (:class:`lb.health_checkers_policy.HealthTable`, one per
check) are kept under one lock; listeners are called outside it, from a worker
thread.

Sync and asyncio stacks use the same probers: probing runs on these threads
whatever the flavour of the calls.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from kitsd.core import validate
from kitsd.lb.health_check import GrpcCheck, HealthCheck, HttpCheck
from kitsd.lb.health_checkers_policy import Change, HealthTable, Verdict

__all__ = ["HealthCheckers", "Listener", "Subscription", "check_health_check"]

logger = logging.getLogger(__name__)

#: ``listener(instance, passed, started, change)``: one check's result, called from a
#: worker thread after the verdicts are updated.
Listener = Callable[[str, bool, float, Change], None]

_HEALTH_METHOD = "/grpc.health.v1.Health/Check"
_SERVING = 1


def check_health_check(check: object, name: str = "health_check") -> HealthCheck | None:
    """``check`` if it is ``None`` or an :class:`lb.HttpCheck` / :class:`lb.GrpcCheck`;
    else ``TypeError`` naming ``name``.  A gRPC check without grpcio installed raises
    ``ModuleNotFoundError`` naming the extra."""
    if check is None:
        return None
    if not isinstance(check, HttpCheck | GrpcCheck):
        raise TypeError(f"{name} must be an lb.HttpCheck, an lb.GrpcCheck or None, "
                        f"not {type(check).__name__}")
    if isinstance(check, GrpcCheck):
        _grpc()
    return check


def _grpc() -> Any:
    try:
        import grpc
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"lb.GrpcCheck needs grpcio: pip install 'kitsd[grpc]' ({error})",
            name="grpc") from error
    return grpc


def _health_request(service: str) -> bytes:
    """A ``grpc.health.v1.HealthCheckRequest`` (field 1, ``service``), encoded by hand:
    one length-delimited field needs no protobuf runtime."""
    data = service.encode("utf-8")
    if not data:
        return b""
    size = bytearray()
    length = len(data)
    while True:
        byte = length & 0x7F
        length >>= 7
        size.append(byte | (0x80 if length else 0))
        if not length:
            break
    return b"\x0a" + bytes(size) + data


def _health_status(message: bytes) -> int:
    """The ``status`` (field 1, an enum) of a ``HealthCheckResponse``; 0 (UNKNOWN) when absent."""
    position = 0
    while position < len(message):
        key = message[position]
        position += 1
        field_number, wire = key >> 3, key & 7
        if wire == 0:  # varint
            value = shift = 0
            while position < len(message):
                byte = message[position]
                position += 1
                value |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            if field_number == 1:
                return value
        elif wire == 2:  # length-delimited: skip
            length = shift = 0
            while position < len(message):
                byte = message[position]
                position += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            position += length
        else:
            return 0  # a field kind this message never has
    return 0


@dataclass(eq=False)
class _Probe:
    """The prober of one instance under one check."""

    check: HealthCheck
    instance: str
    watchers: int = 0
    due: float = 0.0
    running: bool = False
    serial: int = 0  # bumped when the probe is dropped, so a late heap entry is ignored
    channel: Any = None  # a gRPC check's channel to the instance


@dataclass(eq=False)
class _Watch:
    """What one subscription watches (shared with the finalizer, which must not hold
    the subscription itself)."""

    key: tuple[object, ...]
    instances: set[str] = field(default_factory=set)
    closed: bool = False


class Subscription:
    """One stack's view of the probers of a :class:`HealthCheckers` under one check.

    :meth:`watch` says which instances the stack has (a balancer calls it when its
    set changes); the listener hears every result for them.  Closed by
    :meth:`close`, or when garbage collected.  Thread-safe.
    """

    __slots__ = ("__weakref__", "_checkers", "_finalizer", "_watch", "check", "listener")

    def __init__(self, checkers: HealthCheckers, check: HealthCheck, listener: Listener) -> None:
        self._checkers = checkers
        self.check = check
        self.listener = listener
        self._watch = _Watch(check.key)
        # Collected: released later, by the scheduler (a finalizer may run inside any
        # code of this thread, even under the checkers' own lock).
        self._finalizer = weakref.finalize(self, checkers._released.append, self._watch)

    def watch(self, instances: Iterable[str]) -> None:
        """Watch exactly ``instances`` from now on: probers start for newcomers and
        stop for instances nobody else watches."""
        self._checkers._watch(self, set(instances))

    def healthy(self, instance: str) -> bool:
        """Whether ``instance`` is in rotation as far as its checks go."""
        return self._checkers._verdict(self.check, instance) is not Verdict.UNHEALTHY

    def verdict(self, instance: str) -> Verdict:
        """``instance``'s verdict under this check."""
        return self._checkers._verdict(self.check, instance)

    def unejects(self, instance: str, cause: str, ejected_at: float) -> bool:
        """Whether the checks so far bring back ``instance``, ejected at ``ejected_at``
        (the checkers' clock) for ``cause`` (see :mod:`lb.health_checkers_policy`)."""
        return self._checkers._unejects(self.check, instance, cause, ejected_at)

    def close(self) -> None:
        """Stop watching (idempotent)."""
        if self._finalizer.detach() is not None:
            self._checkers._release(self._watch)

    def __repr__(self) -> str:
        return f"<Subscription {self.check!r}: {len(self._watch.instances)} instances>"


class HealthCheckers:
    """Runs active health checks (:class:`lb.HttpCheck`, :class:`lb.GrpcCheck`) for the
    stacks given it: one prober per instance and check, however many stacks
    watch the instance.

    Create one, give it to balancers with their check (``health_check=``,
    ``health_checkers=``), and close it when done (``close()``, or use it as a
    context manager): every thread, connection and channel it started stops
    then.  ``concurrency`` probes run at once at most (default 8).  ``seed``
    makes the jitter repeatable; ``clock`` (monotonic seconds) must be the clock
    the balancers eject by (``time.monotonic``, the default) and is for tests.
    ``http_client`` (an ``httpx.Client``) replaces the one it would make (it is not
    closed then).  Thread-safe.
    """

    def __init__(self, *, concurrency: int = 8, seed: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 http_client: httpx.Client | None = None) -> None:
        validate.integer("concurrency", concurrency, minimum=1, maximum=256)
        if not callable(clock):
            raise TypeError(f"clock must be callable() -> seconds, got {clock!r}")
        if http_client is not None and not isinstance(http_client, httpx.Client):
            raise TypeError(f"http_client must be an httpx.Client, got {http_client!r}")
        self._concurrency = concurrency
        self._clock = clock
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._tables: dict[tuple[object, ...], HealthTable] = {}
        self._probes: dict[tuple[tuple[object, ...], str], _Probe] = {}
        self._subscribers: dict[tuple[object, ...], weakref.WeakSet[Subscription]] = {}
        self._heap: list[tuple[float, int, int, tuple[tuple[object, ...], str]]] = []
        self._order = itertools.count()
        self._closed = False
        self._scheduler: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._own_client = http_client is None
        self._client = http_client
        #: watches of subscriptions garbage collected, for the scheduler to release
        self._released: list[_Watch] = []

    # --- the public surface -----------------------------------------------------------

    def subscribe(self, check: HealthCheck, listener: Listener) -> Subscription:
        """A new stack's view under ``check``: ``listener(instance, passed, started,
        change)`` hears every result of the instances it watches.  Keep the returned
        :class:`Subscription` (it stops watching when collected).  ``TypeError`` for
        a bad check or listener; ``RuntimeError`` once closed."""
        checked = check_health_check(check, "check")
        if checked is None:
            raise TypeError("check must be an lb.HttpCheck or an lb.GrpcCheck, not None")
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        subscription = Subscription(self, checked, listener)
        with self._lock:
            if self._closed:
                subscription._finalizer.detach()
                raise RuntimeError("these HealthCheckers are closed")
            self._tables.setdefault(checked.key, HealthTable(checked))
            self._subscribers.setdefault(checked.key, weakref.WeakSet()).add(subscription)
        return subscription

    @property
    def probes(self) -> int:
        """How many probers run now (one per instance and check)."""
        self._release_collected()
        with self._lock:
            return len(self._probes)

    def close(self) -> None:
        """Stop every prober and close what they opened; waits for probes in progress
        (each bounded by its check's timeout).  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            probes = list(self._probes.values())
            self._probes.clear()
            self._heap.clear()
            self._wake.notify_all()
            scheduler, pool = self._scheduler, self._pool
        if scheduler is not None:
            scheduler.join()
        if pool is not None:
            pool.shutdown(wait=True)
        for probe in probes:
            self._close_channel(probe)
        if self._own_client and self._client is not None:
            self._client.close()

    def __enter__(self) -> HealthCheckers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<HealthCheckers: {len(self._probes)} probes{', closed' if self._closed else ''}>"

    # --- for subscriptions ------------------------------------------------------------

    def _watch(self, subscription: Subscription, instances: set[str]) -> None:
        watch = subscription._watch
        to_close: list[_Probe] = []
        with self._lock:
            if self._closed or watch.closed:
                return
            key = watch.key
            for instance in instances - watch.instances:
                probe = self._probes.get((key, instance))
                if probe is None:
                    probe = self._probes[(key, instance)] = _Probe(subscription.check, instance)
                    self._schedule(probe, self._clock() + subscription.check.first_delay(
                        self._rng.random()))
                probe.watchers += 1
            for instance in watch.instances - instances:
                closed = self._drop(key, instance)
                if closed is not None:
                    to_close.append(closed)
            watch.instances = instances
            self._start()
        for probe in to_close:
            self._close_channel(probe)

    def _release_collected(self) -> None:
        """Release the watches of subscriptions collected since the last look (not
        under the lock)."""
        while True:
            try:
                watch = self._released.pop()  # atomic: another thread may take one too
            except IndexError:
                return
            self._release(watch)

    def _release(self, watch: _Watch) -> None:
        """A subscription closed or was collected: stop watching its instances."""
        to_close: list[_Probe] = []
        with self._lock:
            if watch.closed:
                return
            watch.closed = True
            for instance in watch.instances:
                closed = self._drop(watch.key, instance)
                if closed is not None:
                    to_close.append(closed)
            watch.instances = set()
        for probe in to_close:
            self._close_channel(probe)

    def _drop(self, key: tuple[object, ...], instance: str) -> _Probe | None:
        """One watcher fewer (under the lock); the probe if nobody watches any more."""
        probe = self._probes.get((key, instance))
        if probe is None:
            return None
        probe.watchers -= 1
        if probe.watchers > 0:
            return None
        del self._probes[(key, instance)]
        probe.serial += 1
        table = self._tables.get(key)
        if table is not None:
            table.forget(instance)
        return probe

    def _verdict(self, check: HealthCheck, instance: str) -> Verdict:
        with self._lock:
            table = self._tables.get(check.key)
            return Verdict.UNKNOWN if table is None else table.verdict(instance)

    def _unejects(self, check: HealthCheck, instance: str, cause: str, ejected_at: float) -> bool:
        with self._lock:
            table = self._tables.get(check.key)
            return table is not None and table.unejects(instance, cause, ejected_at,
                                                        covers=frozenset(check.covers))

    # --- the machinery ----------------------------------------------------------------

    def _schedule(self, probe: _Probe, due: float) -> None:
        """Put ``probe`` in the heap for ``due`` (under the lock)."""
        probe.due = due
        heapq.heappush(self._heap, (due, next(self._order), probe.serial,
                                    (probe.check.key, probe.instance)))
        self._wake.notify()

    def _start(self) -> None:
        """Start the scheduler and the pool on first use (under the lock)."""
        if self._scheduler is None and self._probes:
            self._pool = ThreadPoolExecutor(max_workers=self._concurrency,
                                            thread_name_prefix="kitsd-health-check")
            self._scheduler = threading.Thread(target=self._run, name="kitsd-health-checkers",
                                               daemon=True)
            self._scheduler.start()

    def _run(self) -> None:
        """The scheduler: submit each probe when it is due."""
        pool = self._pool
        assert pool is not None  # noqa: S101 - started with the scheduler
        while not self._closed:
            self._release_collected()
            with self._lock:
                if self._closed:
                    return
                heap = self._heap
                now = self._clock()
                if not heap or heap[0][0] > now:
                    # at least once a second: collected subscriptions are released then
                    self._wake.wait(1.0 if not heap else min(heap[0][0] - now, 1.0))
                    continue
                _, _, serial, key = heapq.heappop(heap)
                probe = self._probes.get(key)
                if probe is None or probe.serial != serial or probe.running:
                    continue  # dropped since, or rescheduled
                probe.running = True
                try:
                    pool.submit(self._probe, probe, serial)
                except RuntimeError:  # the pool shut down under us: closing
                    return

    def _probe(self, probe: _Probe, serial: int) -> None:
        """Run one check (a worker thread) and book its result."""
        started = self._clock()
        try:
            passed = self._check(probe)
        except Exception:
            logger.debug("health check of %s failed", probe.instance, exc_info=True)
            passed = False
        with self._lock:
            probe.running = False
            key = (probe.check.key, probe.instance)
            dropped = self._probes.get(key) is not probe or probe.serial != serial
            if dropped or self._closed:
                if dropped and not self._closed:
                    self._close_channel(probe)  # opened while it ran: nobody else will
                return  # nobody wants the answer
            table = self._tables[probe.check.key]
            change = table.result(probe.instance, passed, started)
            listeners = [subscription for subscription in
                         self._subscribers.get(probe.check.key, ())
                         if probe.instance in subscription._watch.instances]
            self._schedule(probe, started + probe.check.next_delay(self._rng.random()))
        if change is Change.UNHEALTHY:
            logger.info("health check: %s is unhealthy", probe.instance)
        elif change is Change.RECOVERED:
            logger.info("health check: %s is healthy again", probe.instance)
        for subscription in listeners:
            try:
                subscription.listener(probe.instance, passed, started, change)
            except Exception:
                logger.exception("health check listener failed")

    def _check(self, probe: _Probe) -> bool:
        check = probe.check
        if isinstance(check, HttpCheck):
            client = self._client
            if client is None:
                with self._lock:
                    if self._client is None:
                        self._client = httpx.Client(trust_env=False)
                    client = self._client
            response = client.get(f"{check.scheme}://{probe.instance}{check.path}",
                                  headers=dict(check.headers), timeout=check.timeout)
            response.close()
            return response.status_code in check.statuses
        if isinstance(check, GrpcCheck):
            grpc = _grpc()
            if probe.channel is None:
                probe.channel = grpc.insecure_channel(probe.instance)
            method = probe.channel.unary_unary(_HEALTH_METHOD)
            answer = method(_health_request(check.service), timeout=check.timeout)
            return _health_status(answer) == _SERVING
        raise TypeError(f"unknown check {check!r}")  # pragma: no cover - checked earlier

    @staticmethod
    def _close_channel(probe: _Probe) -> None:
        channel, probe.channel = probe.channel, None
        if channel is not None:
            channel.close()
