"""Active health checking: the probers of one owner, on threads (:class:`HealthCheckers`)
or on an asyncio event loop (:class:`AsyncHealthCheckers`).

One prober per instance and check, shared by every stack that watches the
instance: two balancers over the same service (two clients, or two transports'
stacks given the same checkers) probe each instance once per interval, not
twice.  The probers belong to the object that runs them — nothing is
process-wide — and stop when it is closed or when no stack watches their
instance any more (a stack that is garbage collected stops watching).

How it runs.  What both flavours share is decided under one lock, in plain
methods of ``_Checkers``: who watches what, the verdict tables
(:class:`lb.health_checkers_policy.HealthTable`, one per check), and a heap of
the probes due.  A driver takes the next due probe, runs the check (the I/O)
outside the lock, and books its result; listeners are called outside the lock.

* :class:`HealthCheckers`: one scheduler thread hands each due probe to a small
  pool of worker threads (``concurrency``, default 8), so a hundred instances
  cost two threads plus the pool, and a slow probe never delays the others.
* :class:`AsyncHealthCheckers`: a scheduler task on the event loop starts each due
  probe as a task (at most ``concurrency`` at once); HTTP checks go through an
  ``httpx.AsyncClient``, gRPC checks through ``grpc.aio`` channels: no thread.
  This is what :class:`kitsd.AsyncTransport` uses, so that its checks go through
  its own (asyncio) inner transport — the connections, TLS settings and client
  certificate of its calls — and an asyncio service gets no probe threads.

Each check's first probe comes after a random part of one interval, then every
``interval * (1 ± jitter)``.  A probe is bounded as a whole by its check's
``timeout`` (every socket wait of the checkers' own HTTP transport, and of a
transport built by kitsd, ends by it: a health route that trickles its answer
cannot hold a prober), HTTP checks share one client (connection reuse, as Envoy's
checker does), gRPC checks keep one channel per instance.

TLS: an ``https`` :class:`lb.HttpCheck` is verified as the checkers' HTTP
transport says (``transport=``: give it the one your calls use, with its
``verify`` and client certificate; default httpx's, the system's CAs), against
the check's ``server_name`` (SNI; default the instance's host).  A
:class:`lb.GrpcCheck` uses its own ``credentials`` and ``server_name``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from kitsd.core import validate
from kitsd.lb.deadline import deadline
from kitsd.lb.health_check import GrpcCheck, HealthCheck, HttpCheck
from kitsd.lb.health_checkers_policy import Change, HealthTable, Verdict

__all__ = [
    "AsyncHealthCheckers",
    "HealthCheckers",
    "Listener",
    "Subscription",
    "check_health_check",
]

logger = logging.getLogger(__name__)

#: ``listener(instance, passed, started, change)``: one check's result, called from a
#: worker thread (the event loop's thread for :class:`AsyncHealthCheckers`) after
#: the verdicts are updated.
Listener = Callable[[str, bool, float, Change], None]

_HEALTH_METHOD = "/grpc.health.v1.Health/Check"
_SERVING = 1
#: The longest the schedulers sleep: collected subscriptions are released then.
_TICK = 1.0


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


def _http_request(check: HttpCheck, instance: str) -> tuple[str, dict[str, str],
                                                             dict[str, Any]]:
    """The URL, headers and httpx extensions of one HTTP check of ``instance``."""
    extensions: dict[str, Any] = {}
    if check.scheme == "https" and check.server_name is not None:
        extensions["sni_hostname"] = check.server_name  # SNI and certificate verification
    return f"{check.scheme}://{instance}{check.path}", dict(check.headers), extensions


def _channel_options(check: GrpcCheck) -> list[tuple[str, str]]:
    """A gRPC check's channel options: the name its server's certificate must carry."""
    if check.server_name is None or check.credentials is None:
        return []
    return [("grpc.ssl_target_name_override", check.server_name),
            ("grpc.default_authority", check.server_name)]


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
    """One stack's view of the probers of a :class:`HealthCheckers` (or
    :class:`AsyncHealthCheckers`) under one check.

    :meth:`watch` says which instances the stack has (a balancer calls it when its
    set changes); the listener hears every result for them.  Closed by
    :meth:`close`, or when garbage collected.  Thread-safe.
    """

    __slots__ = ("__weakref__", "_checkers", "_finalizer", "_watch", "check", "listener")

    def __init__(self, checkers: _Checkers, check: HealthCheck, listener: Listener) -> None:
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


class _Checkers:
    """What :class:`HealthCheckers` and :class:`AsyncHealthCheckers` share: who watches
    what, the verdicts and the heap of due probes, decided under one lock.  A
    driver implements ``_start_locked`` (start the scheduler if it is not running),
    ``_wake_locked`` (a probe was scheduled), ``_discard`` (close what a dropped
    probe opened) and runs the probes."""

    def __init__(self, concurrency: int, seed: int | None, clock: Callable[[], float]) -> None:
        validate.integer("concurrency", concurrency, minimum=1, maximum=256)
        if not callable(clock):
            raise TypeError(f"clock must be callable() -> seconds, got {clock!r}")
        self._concurrency = concurrency
        self._clock = clock
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._tables: dict[tuple[object, ...], HealthTable] = {}
        self._probes: dict[tuple[tuple[object, ...], str], _Probe] = {}
        self._subscribers: dict[tuple[object, ...], weakref.WeakSet[Subscription]] = {}
        self._heap: list[tuple[float, int, int, tuple[tuple[object, ...], str]]] = []
        self._order = itertools.count()
        self._closed = False
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
                raise RuntimeError(f"these {type(self).__name__} are closed")
            self._tables.setdefault(checked.key, HealthTable(checked))
            self._subscribers.setdefault(checked.key, weakref.WeakSet()).add(subscription)
        return subscription

    @property
    def probes(self) -> int:
        """How many probers run now (one per instance and check)."""
        self._release_collected()
        with self._lock:
            return len(self._probes)

    def __repr__(self) -> str:
        closed = ", closed" if self._closed else ""
        return f"<{type(self).__name__}: {len(self._probes)} probes{closed}>"

    # --- for the drivers ----------------------------------------------------------------

    def _start_locked(self) -> None:
        raise NotImplementedError

    def _wake_locked(self) -> None:
        raise NotImplementedError

    def _discard(self, probe: _Probe) -> None:
        raise NotImplementedError

    # --- for subscriptions ------------------------------------------------------------

    def _watch(self, subscription: Subscription, instances: set[str]) -> None:
        watch = subscription._watch
        dropped: list[_Probe] = []
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
                    dropped.append(closed)
            watch.instances = instances
            if self._probes:
                self._start_locked()
        for probe in dropped:
            self._discard(probe)

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
        dropped: list[_Probe] = []
        with self._lock:
            if watch.closed:
                return
            watch.closed = True
            for instance in watch.instances:
                closed = self._drop(watch.key, instance)
                if closed is not None:
                    dropped.append(closed)
            watch.instances = set()
        for probe in dropped:
            self._discard(probe)

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

    # --- scheduling -------------------------------------------------------------------

    def _schedule(self, probe: _Probe, due: float) -> None:
        """Put ``probe`` in the heap for ``due`` (under the lock)."""
        probe.due = due
        heapq.heappush(self._heap, (due, next(self._order), probe.serial,
                                    (probe.check.key, probe.instance)))
        self._wake_locked()

    def _next(self, now: float) -> tuple[_Probe, int] | float:
        """The next probe to run now, marked running, with its serial; else how long
        to wait for one (under the lock)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, serial, key = heapq.heappop(heap)
            probe = self._probes.get(key)
            if probe is None or probe.serial != serial or probe.running:
                continue  # dropped since, or rescheduled
            probe.running = True
            return probe, serial
        return _TICK if not heap else min(heap[0][0] - now, _TICK)

    def _finish(self, probe: _Probe, serial: int, started: float,
                passed: bool) -> tuple[Change, list[Subscription]] | None:
        """Book one probe's result and schedule its next run (under the lock); the
        change and who to tell, or ``None`` when nobody wants the answer."""
        probe.running = False
        key = (probe.check.key, probe.instance)
        if self._probes.get(key) is not probe or probe.serial != serial or self._closed:
            return None
        change = self._tables[probe.check.key].result(probe.instance, passed, started)
        listeners = [subscription for subscription in
                     self._subscribers.get(probe.check.key, ())
                     if probe.instance in subscription._watch.instances]
        self._schedule(probe, started + probe.check.next_delay(self._rng.random()))
        return change, listeners

    def _booked(self, probe: _Probe, serial: int, started: float, passed: bool) -> None:
        """Book a result and tell the listeners (not under the lock)."""
        with self._lock:
            told = self._finish(probe, serial, started, passed)
            orphan = told is None and not self._closed and (
                self._probes.get((probe.check.key, probe.instance)) is not probe)
        if orphan:
            self._discard(probe)  # dropped while it ran: nobody else will close it
        if told is None:
            return
        change, listeners = told
        if change is Change.UNHEALTHY:
            logger.info("health check: %s is unhealthy", probe.instance)
        elif change is Change.RECOVERED:
            logger.info("health check: %s is healthy again", probe.instance)
        for subscription in listeners:
            try:
                subscription.listener(probe.instance, passed, started, change)
            except Exception:
                logger.exception("health check listener failed")

    def _take_all(self) -> list[_Probe] | None:
        """Close (under the lock): the probes to discard, or ``None`` if closed already."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            probes = list(self._probes.values())
            self._probes.clear()
            self._heap.clear()
            self._wake_locked()
            return probes


class HealthCheckers(_Checkers):
    """Runs active health checks (:class:`lb.HttpCheck`, :class:`lb.GrpcCheck`) on
    threads for the stacks given it: one prober per instance and check, however
    many stacks watch the instance (see the module docstring).

    Create one, give it to balancers with their check (``health_check=``,
    ``health_checkers=``), and close it when done (``close()``, or use it as a
    context manager): every thread, connection and channel it started stops
    then.  ``concurrency`` probes run at once at most (default 8).  ``seed``
    makes the jitter repeatable; ``clock`` (monotonic seconds) must be the clock
    the balancers eject by (``time.monotonic``, the default) and is for tests.
    HTTP checks go through ``http_client`` (an ``httpx.Client``, left open), or a
    client of their own over ``transport`` (an ``httpx.BaseTransport``: the one your
    calls use, so checks have its TLS settings and client certificate; left
    open), or over an ``httpx.HTTPTransport`` of their own.  Thread-safe; works
    for asyncio stacks too (see :class:`AsyncHealthCheckers` to probe on the loop).
    """

    def __init__(self, *, concurrency: int = 8, seed: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 http_client: httpx.Client | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(concurrency, seed, clock)
        if http_client is not None and not isinstance(http_client, httpx.Client):
            raise TypeError(f"http_client must be an httpx.Client, got {http_client!r}")
        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            raise TypeError(f"transport must be an httpx.BaseTransport, got {transport!r}")
        if http_client is not None and transport is not None:
            raise TypeError("transport is for a client of the checkers' own: give "
                            "http_client or transport, not both")
        self._wake = threading.Condition(self._lock)
        self._scheduler: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._client = http_client
        self._own_client = http_client is None
        self._transport = transport

    def start(self) -> None:
        """Start the scheduler now (it starts with the first instance watched anyway).
        Idempotent; ``RuntimeError`` once closed."""
        with self._lock:
            if self._closed:
                raise RuntimeError("these HealthCheckers are closed")
            self._start_locked()

    def close(self) -> None:
        """Stop every prober and close what they opened; waits for probes in progress
        (each bounded by its check's timeout).  Idempotent."""
        probes = self._take_all()
        if probes is None:
            return
        with self._lock:
            scheduler, pool = self._scheduler, self._pool
        if scheduler is not None:
            scheduler.join()
        if pool is not None:
            pool.shutdown(wait=True)
        for probe in probes:
            self._discard(probe)
        client = self._client
        if client is not None and self._own_client and self._transport is None:
            client.close()  # a transport given is the caller's to close

    def __enter__(self) -> HealthCheckers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the driver -------------------------------------------------------------------

    def _start_locked(self) -> None:
        if self._scheduler is None and not self._closed:
            self._pool = ThreadPoolExecutor(max_workers=self._concurrency,
                                            thread_name_prefix="kitsd-health-check")
            self._scheduler = threading.Thread(target=self._run, name="kitsd-health-checkers",
                                               daemon=True)
            self._scheduler.start()

    def _wake_locked(self) -> None:
        self._wake.notify()

    def _run(self) -> None:
        """The scheduler: submit each probe when it is due."""
        pool = self._pool
        assert pool is not None  # noqa: S101 - started with the scheduler
        while not self._closed:
            self._release_collected()
            with self._lock:
                if self._closed:
                    return
                found = self._next(self._clock())
                if isinstance(found, float):
                    self._wake.wait(found)
                    continue
                try:
                    pool.submit(self._probe, *found)
                except RuntimeError:  # the pool shut down under us: closing
                    return

    def _probe(self, probe: _Probe, serial: int) -> None:
        """Run one check (a worker thread) and book its result."""
        started = self._clock()
        try:
            with deadline(probe.check.timeout):
                passed = self._check(probe)
        except Exception:
            logger.debug("health check of %s failed", probe.instance, exc_info=True)
            passed = False
        self._booked(probe, serial, started, passed)

    def _http(self) -> httpx.Client:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    transport = self._transport
                    if transport is None:
                        transport = httpx.HTTPTransport()
                        install(transport)
                    self._client = httpx.Client(transport=transport, trust_env=False)
                client = self._client
        return client

    def _check(self, probe: _Probe) -> bool:
        check = probe.check
        if isinstance(check, HttpCheck):
            url, headers, extensions = _http_request(check, probe.instance)
            response = self._http().get(url, headers=headers, timeout=check.timeout,
                                        extensions=extensions)
            response.close()
            return response.status_code in check.statuses
        if isinstance(check, GrpcCheck):
            grpc = _grpc()
            if probe.channel is None:
                options = _channel_options(check)
                probe.channel = (grpc.insecure_channel(probe.instance) if check.credentials is None
                                 else grpc.secure_channel(probe.instance, check.credentials,
                                                          options=options))
            method = probe.channel.unary_unary(_HEALTH_METHOD)
            answer = method(_health_request(check.service), timeout=check.timeout)
            return _health_status(answer) == _SERVING
        raise TypeError(f"unknown check {check!r}")  # pragma: no cover - checked earlier

    def _discard(self, probe: _Probe) -> None:
        channel, probe.channel = probe.channel, None
        if channel is not None:
            channel.close()


class AsyncHealthCheckers(_Checkers):
    """Runs active health checks on an asyncio event loop: the twin of
    :class:`HealthCheckers` for asyncio services, with no thread (see the module
    docstring).  :class:`kitsd.AsyncTransport` makes one over its inner transport.

    It probes on the loop it is started on: :meth:`start` (from a coroutine), or
    the first watch made from a coroutine (a balancer built on the loop); before
    that nothing is probed.  Close it with :meth:`aclose` (or ``async with``) on
    that loop: every task, connection and channel it started stops then.  HTTP
    checks go through ``http_client`` (an ``httpx.AsyncClient``, left open), or a
    client of their own over ``transport`` (an ``httpx.AsyncBaseTransport``: the one
    your calls use; left open), or over an ``httpx.AsyncHTTPTransport`` of their
    own.  ``concurrency``, ``seed`` and ``clock`` as for :class:`HealthCheckers`.
    Subscriptions and verdicts are thread-safe; listeners are called on the loop.
    """

    def __init__(self, *, concurrency: int = 8, seed: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 http_client: httpx.AsyncClient | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(concurrency, seed, clock)
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError(f"http_client must be an httpx.AsyncClient, got {http_client!r}")
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(f"transport must be an httpx.AsyncBaseTransport, got {transport!r}")
        if http_client is not None and transport is not None:
            raise TypeError("transport is for a client of the checkers' own: give "
                            "http_client or transport, not both")
        self._client = http_client
        self._own_client = http_client is None
        self._transport = transport
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop it probes on (``None``: not started yet)."""
        return self._loop

    def start(self) -> None:
        """Probe on the running event loop from now on (call it from a coroutine).
        Idempotent on that loop; ``RuntimeError`` outside a loop, on another loop
        than the one it started on, or once closed."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closed:
                raise RuntimeError("these AsyncHealthCheckers are closed")
            if self._loop is not None and self._loop is not loop:
                raise RuntimeError("these AsyncHealthCheckers probe on another event loop")
            self._bind(loop)

    async def aclose(self) -> None:
        """Stop every prober and close what they opened; waits for probes in progress
        (each bounded by its check's timeout).  Call it on the checkers' loop.
        Idempotent."""
        probes = self._take_all()
        if probes is None:
            return
        scheduler = self._scheduler
        if scheduler is not None and not scheduler.done():
            await asyncio.wait([scheduler])
        while self._tasks:  # probes in progress, and channels being closed
            await asyncio.wait(list(self._tasks))
        for probe in probes:
            channel, probe.channel = probe.channel, None
            if channel is not None:
                await channel.close()
        client = self._client
        if client is not None and self._own_client and self._transport is None:
            await client.aclose()  # a transport given is the caller's to close

    async def __aenter__(self) -> AsyncHealthCheckers:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- the driver -------------------------------------------------------------------

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the scheduler on ``loop``, this thread's running loop (under the lock)."""
        if self._loop is None:
            self._loop = loop
            self._event = asyncio.Event()
            self._semaphore = asyncio.Semaphore(self._concurrency)
            self._scheduler = loop.create_task(self._run(), name="kitsd-health-checkers")

    def _start_locked(self) -> None:
        if self._loop is not None or self._closed:
            return
        with contextlib.suppress(RuntimeError):  # no loop in this thread: wait for start()
            self._bind(asyncio.get_running_loop())

    def _wake_locked(self) -> None:
        self._call_soon(self._set_event)

    def _set_event(self) -> None:
        if self._event is not None:
            self._event.set()

    def _call_soon(self, callback: Callable[[], object]) -> None:
        """``callback()`` on the loop: now if this is its thread, else soon."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            callback()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(callback)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task of the checkers (on the loop's thread)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        """The scheduler: start each probe when it is due."""
        event = self._event
        assert event is not None  # noqa: S101 - made with the task
        while True:
            self._release_collected()
            with self._lock:
                if self._closed:
                    return
                found = self._next(self._clock())
                if not isinstance(found, float):
                    self._spawn(self._probe(*found))
                    continue
                event.clear()  # under the lock: a probe scheduled from now on sets it
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(found):
                    await event.wait()

    async def _probe(self, probe: _Probe, serial: int) -> None:
        """Run one check (a task) and book its result."""
        semaphore = self._semaphore
        assert semaphore is not None  # noqa: S101 - made with the scheduler
        async with semaphore:
            started = self._clock()
            try:
                with deadline(probe.check.timeout):
                    passed = await self._check(probe)
            except Exception:
                logger.debug("health check of %s failed", probe.instance, exc_info=True)
                passed = False
        self._booked(probe, serial, started, passed)

    def _http(self) -> httpx.AsyncClient:
        client = self._client
        if client is None:
            transport = self._transport
            if transport is None:
                transport = httpx.AsyncHTTPTransport()
                install_async(transport)
            client = self._client = httpx.AsyncClient(transport=transport, trust_env=False)
        return client

    async def _check(self, probe: _Probe) -> bool:
        check = probe.check
        if isinstance(check, HttpCheck):
            url, headers, extensions = _http_request(check, probe.instance)
            response = await self._http().get(url, headers=headers, timeout=check.timeout,
                                              extensions=extensions)
            await response.aclose()
            return response.status_code in check.statuses
        if isinstance(check, GrpcCheck):
            grpc = _grpc()
            if probe.channel is None:
                options = _channel_options(check)
                probe.channel = (
                    grpc.aio.insecure_channel(probe.instance) if check.credentials is None
                    else grpc.aio.secure_channel(probe.instance, check.credentials,
                                                 options=options))
            method = probe.channel.unary_unary(_HEALTH_METHOD)
            answer = await method(_health_request(check.service), timeout=check.timeout)
            return _health_status(answer) == _SERVING
        raise TypeError(f"unknown check {check!r}")  # pragma: no cover - checked earlier

    def _discard(self, probe: _Probe) -> None:
        channel, probe.channel = probe.channel, None
        if channel is not None:
            self._call_soon(lambda: self._spawn(channel.close()))


def install(transport: httpx.HTTPTransport) -> None:
    """End every socket wait of the checkers' own ``transport`` by the probe's deadline."""
    from kitsd.sd.http._deadline import install as install_deadline

    install_deadline(transport)


def install_async(transport: httpx.AsyncHTTPTransport) -> None:
    """:func:`install` for the asyncio transport."""
    from kitsd.sd.http._deadline import install_async as install_deadline

    install_deadline(transport)
