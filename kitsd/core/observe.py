"""The event seam: what the stack reports, and who hears it.

Theory of operation
-------------------
Retries, balancers, breakers and instancers report what happens to them as
small immutable *observations* (named tuples: three times cheaper to make than
frozen dataclasses) (:class:`CallFinished`, :class:`InstanceEjected`,
:class:`DiscoveryFailed` …).  An *observer* is any callable taking one
observation; adapters (``kitsd.prometheus``, ``kitsd.otel``,
``kitsd.log_middleware``) are observers.  Observers are registered process-wide
with :func:`add_observer` (or, scoped, ``with observing(observer): ...``).

Why process-wide, not per stack: most of what is worth counting does not
happen inside one stack.  One registry watch feeds every stack on the same
service (:class:`sd.instancer.SharedWatches`), one breaker may guard endpoints
of several stacks, and a process exposes one ``/metrics``; threading an
``observer=`` argument through every instancer, breaker and balancer would make
each constructor carry it and still miss the shared ones.  This is also what
users of stamina (``stamina.instrumentation.set_on_retry_hooks``),
prometheus_client (``REGISTRY``) and OpenTelemetry (global providers) expect.
What stays per stack is the *label*: ``lb.retry(..., name="users")`` names the
calls of a stack, the registry driver names the service it watches.  The seam
holds nothing but the observers the user installed: no per-stack or
per-instance state lives here.

Zero cost when nothing listens: an emitter tests ``HUB.observers`` (a tuple,
empty by default) before building an observation, so with no observer the
cost is one attribute read per call.  :class:`CallWatch` is made only when
someone listens.

Guarantees to observers:

* observations are delivered synchronously, in the thread (and asyncio task)
  where they happen, so an observer may read or set context variables (the
  OpenTelemetry adapter makes its spans current this way);
* :class:`CallStarted`/:class:`CallFinished` and
  :class:`AttemptStarted`/:class:`AttemptFinished` come in balanced, nested
  pairs, whatever ends the call (an error, a timeout, a cancellation);
  "started" observations go to observers in registration order, "finished"
  ones in reverse, like the exits of nested context managers;
* an observer that raises is logged (once per observer) and otherwise ignored:
  observing never changes the outcome of a call.

Observers must be quick and must not block: they run on the caller's path.
Labels are bounded by construction: services, instances, registry kinds,
breaker names and outcomes; nothing in an observation is derived from a request.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import get_cache_token
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar, Token
from typing import NamedTuple

from kitsd.core.errors import NoEndpoints, Rejected

__all__ = [
    "CANCELLED",
    "DEFAULT_SERVICE",
    "ERROR",
    "HUB",
    "NO_ENDPOINTS",
    "OUTCOMES",
    "REJECTED",
    "SUCCESS",
    "TIMEOUT",
    "AttemptFinished",
    "AttemptStarted",
    "BreakerStateChanged",
    "BudgetRefused",
    "CallFinished",
    "CallStarted",
    "CallWatch",
    "DiscoveryFailed",
    "DiscoveryUpdated",
    "InstanceEjected",
    "InstanceRestored",
    "Observation",
    "Observer",
    "RateLimited",
    "add_observer",
    "current_service",
    "emit",
    "error_type",
    "observing",
    "outcome_of",
    "remove_observer",
    "watch_call",
]

logger = logging.getLogger(__name__)

#: The label of calls made by a stack that was given no ``name=``.
DEFAULT_SERVICE = "default"

# --- outcomes: a closed set, so they can be metric labels --------------------------

SUCCESS = "success"
ERROR = "error"
TIMEOUT = "timeout"
CANCELLED = "cancelled"
REJECTED = "rejected"  # refused before reaching an instance: open breaker, rate limit, budget
NO_ENDPOINTS = "no_endpoints"
OUTCOMES = (SUCCESS, ERROR, TIMEOUT, CANCELLED, REJECTED, NO_ENDPOINTS)

_by_type: dict[type[BaseException], str] = {}  # cache; bounded by the error classes in use
_by_type_token: list[object] = [get_cache_token()]  # the ABC registrations it was built under


def outcome_of(error: BaseException | None) -> str:
    """The outcome label of an ending: :data:`SUCCESS` for ``None``, else one of
    :data:`OUTCOMES`.  A :class:`lb.RetryError` is judged by its ``final`` error.

    The rules, by the marker types of :mod:`kitsd.core.errors` (never by class
    names, never by what the process imported): not an ``Exception``
    (``CancelledError``, ``KeyboardInterrupt``) → :data:`CANCELLED`; a
    :class:`~kitsd.core.errors.NoEndpoints` → :data:`NO_ENDPOINTS`; a
    :class:`~kitsd.core.errors.Rejected` → :data:`REJECTED`; a ``TimeoutError``,
    or a class named ``…Timeout`` / ``…TimeoutException`` (httpx's timeouts
    are not ``TimeoutError``) → :data:`TIMEOUT`; anything else → :data:`ERROR`."""
    if error is None:
        return SUCCESS
    final = getattr(error, "final", None)
    if isinstance(final, BaseException):
        error = final
    kind = type(error)
    token = get_cache_token()
    if token != _by_type_token[0]:  # an ABC registration since: judge afresh
        _by_type.clear()
        _by_type_token[0] = token
    outcome = _by_type.get(kind)
    if outcome is None:
        outcome = _classify(error)
        _by_type[kind] = outcome
    return outcome


def _classify(error: BaseException) -> str:
    if not isinstance(error, Exception):
        return CANCELLED  # asyncio.CancelledError, KeyboardInterrupt, SystemExit ...
    if isinstance(error, NoEndpoints):
        return NO_ENDPOINTS
    if isinstance(error, Rejected):
        return REJECTED
    if isinstance(error, TimeoutError):
        return TIMEOUT
    name = type(error).__name__
    if name.endswith(("Timeout", "TimeoutException")):
        return TIMEOUT  # httpx.TimeoutException and its kin are not TimeoutErrors
    return ERROR


def error_type(error: BaseException | None) -> str:
    """The fully qualified class name of ``error`` (OpenTelemetry's ``error.type``)."""
    if error is None:
        return ""
    kind = type(error)
    return kind.__qualname__ if kind.__module__ == "builtins" else (
        f"{kind.__module__}.{kind.__qualname__}"
    )


# --- observations ------------------------------------------------------------------


class CallStarted(NamedTuple):
    """A retried call began (``service``: the stack's ``name=``)."""

    service: str


class CallFinished(NamedTuple):
    """A retried call ended.  ``attempts`` counts every attempt (balancer errors
    too); ``instance`` is the last one tried (``""`` if none was picked);
    ``duration`` is in seconds; ``error`` is what the caller got (``None``: success)."""

    service: str
    outcome: str
    duration: float
    attempts: int
    instance: str
    error: BaseException | None = None


class AttemptStarted(NamedTuple):
    """An attempt on ``instance`` began; ``resend_count`` is 0 for the first attempt
    of the call, n for its n-th retry (OpenTelemetry's ``http.request.resend_count``)."""

    service: str
    instance: str
    resend_count: int


class AttemptFinished(NamedTuple):
    """An attempt on ``instance`` ended after ``duration`` seconds."""

    service: str
    instance: str
    outcome: str
    duration: float
    resend_count: int
    error: BaseException | None = None


class InstanceEjected(NamedTuple):
    """A balancer took ``instance`` out of rotation for ``duration`` seconds, from
    ``at`` (``time.monotonic()``); ``service`` is the calling stack's name."""

    service: str
    instance: str
    duration: float
    at: float


class InstanceRestored(NamedTuple):
    """An instance that had been ejected answered again."""

    service: str
    instance: str


class BreakerStateChanged(NamedTuple):
    """A circuit breaker went from ``old`` to ``new`` (pybreaker's state names;
    ``old`` is ``None`` when kitsd first sees the breaker).  ``breaker`` is the
    breaker itself: hold it weakly, if at all."""

    name: str
    old: str | None
    new: str
    breaker: object = None


class DiscoveryUpdated(NamedTuple):
    """A registry watch published a new state: ``instances`` is how many instances
    it holds now; ``kind`` names the registry (``memory``, ``consul``, ``etcd`` …)."""

    kind: str
    service: str
    instances: int


class DiscoveryFailed(NamedTuple):
    """A registry watch failed (every failure, not only the first); the last
    ``instances`` stay in use."""

    kind: str
    service: str
    instances: int
    error: BaseException


class BudgetRefused(NamedTuple):
    """A retry budget refused a retry (or a hedge) of a call of ``service``."""

    service: str


class RateLimited(NamedTuple):
    """A rate limiter named ``limiter`` rejected a call (``waited`` 0) or made it wait
    ``waited`` seconds for a token; ``rejected`` says which."""

    limiter: str
    rejected: bool
    waited: float


Observation = (
    CallStarted | CallFinished | AttemptStarted | AttemptFinished | InstanceEjected
    | InstanceRestored | BreakerStateChanged | DiscoveryUpdated | DiscoveryFailed
    | BudgetRefused | RateLimited
)
#: An observer: called with each observation (ignore the kinds you do not know).
Observer = Callable[[Observation], object]


# --- the hub -------------------------------------------------------------------------


class _Hub:
    """The installed observers, as tuples swapped whole (readers take no lock)."""

    __slots__ = ("_complained", "_lock", "observers", "reversed")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.observers: tuple[Observer, ...] = ()
        self.reversed: tuple[Observer, ...] = ()
        self._complained: set[int] = set()  # ids of installed observers that raised

    def add(self, observer: Observer) -> None:
        if not callable(observer):
            raise TypeError(f"an observer must be callable(observation), got {observer!r}")
        with self._lock:
            self._set((*self.observers, observer))

    def remove(self, observer: Observer) -> None:
        with self._lock:
            observers = list(self.observers)
            for index, installed in enumerate(observers):
                if installed is observer:
                    del observers[index]
                    self._complained.discard(id(observer))
                    self._set(tuple(observers))
                    return

    def _set(self, observers: tuple[Observer, ...]) -> None:
        self.observers = observers
        self.reversed = observers[::-1]

    def first_complaint(self, observer: Observer) -> bool:
        """Whether this is the first error of ``observer`` since it was installed."""
        key = id(observer)  # only while installed: remove() forgets it
        if key in self._complained:
            return False
        self._complained.add(key)
        return True


#: The process-wide hub.  Emitters test ``HUB.observers`` before building anything.
HUB = _Hub()


def add_observer(observer: Observer) -> None:
    """Install ``observer`` process-wide (installing one twice makes it hear twice).
    Raises ``TypeError`` if it is not callable.  Thread-safe."""
    HUB.add(observer)


def remove_observer(observer: Observer) -> None:
    """Uninstall one installation of ``observer``; unknown observers are ignored."""
    HUB.remove(observer)


@contextmanager
def observing(*observers: Observer) -> Iterator[None]:
    """Install ``observers`` for the ``with`` block (handy in tests)."""
    installed: list[Observer] = []
    try:
        for observer in observers:
            HUB.add(observer)
            installed.append(observer)
        yield
    finally:
        for observer in reversed(installed):
            HUB.remove(observer)


def emit(observation: Observation, *, finished: bool = False) -> None:
    """Deliver ``observation`` to every installed observer (``finished``: in reverse
    order).  Never raises on an observer's behalf."""
    for observer in HUB.reversed if finished else HUB.observers:
        try:
            observer(observation)
        except Exception:  # observing must not change the call's outcome
            if HUB.first_complaint(observer):
                logger.exception("observer %r raised on %s; its further errors are not logged",
                                 observer, type(observation).__name__)


# --- the calling stack's name, for what happens below it (ejections) -----------------

_service: ContextVar[str] = ContextVar("kitsd_observed_service", default=DEFAULT_SERVICE)


def current_service() -> str:
    """The ``name=`` of the retry stack whose call is running (set only while someone
    listens), else :data:`DEFAULT_SERVICE`."""
    return _service.get()


class CallWatch:
    """One observed call: what a retry driver reports through.  Made by
    :func:`watch_call` only when someone listens; used from one thread or task."""

    __slots__ = ("_attempt_start", "_token", "attempts", "instance", "service", "start")

    def __init__(self, service: str, start: float) -> None:
        self.service = service
        self.start = start
        self.attempts = 0
        self.instance = ""
        self._attempt_start = -1.0  # -1: no attempt of an instance in flight
        self._token: Token[str] | None = _service.set(service)
        emit(CallStarted(service))

    def attempt(self, instance: str) -> None:
        """An attempt on ``instance`` is about to call its endpoint."""
        self.instance = instance
        self._attempt_start = time.monotonic()
        emit(AttemptStarted(self.service, instance, self.attempts))

    def attempt_ended(self, error: BaseException | None) -> None:
        """The attempt (or the pick before it, if :meth:`attempt` was not called)
        ended; ``error`` ``None``: it succeeded."""
        self.attempts += 1
        started, self._attempt_start = self._attempt_start, -1.0
        if started >= 0:
            emit(AttemptFinished(self.service, self.instance, outcome_of(error),
                                 time.monotonic() - started, self.attempts - 1, error),
                 finished=True)

    def finished(self, error: BaseException | None) -> None:
        """The call ended (``error``: what the caller gets).  Idempotent."""
        token, self._token = self._token, None
        if token is None:
            return
        if self._attempt_start >= 0:  # interrupted mid-attempt (cancelled, timed out)
            self.attempt_ended(error)
        emit(CallFinished(self.service, outcome_of(error), time.monotonic() - self.start,
                          self.attempts, self.instance, error), finished=True)
        with suppress(ValueError):  # finished in another context: nothing to undo
            _service.reset(token)


def watch_call(service: str, start: float) -> CallWatch | None:
    """A :class:`CallWatch` for a call that began at ``start`` (``time.monotonic()``),
    or ``None`` when nobody listens (the caller then reports nothing)."""
    if not HUB.observers:
        return None
    return CallWatch(service, start)
