"""What :class:`kitsd.Transport` and :class:`kitsd.AsyncTransport` share: :class:`_Core`
(the options, the bounded table of per-service stacks, how a finished call becomes
a response or an error).  The transports themselves are ``_async/transport.py``
and its generated sync twin (``.ci/unasync.py``)."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import inspect
import logging
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, NamedTuple, TypeVar

import httpx

from kitsd import breaker, lb
from kitsd.core import validate
from kitsd.core.deadline import current_deadline
from kitsd.core.errors import BackendError, MisuseError
from kitsd.core.observe import WatchLabel, labelling_watches
from kitsd.sd.endpointer import Endpointer
from kitsd.sd.http._attempt import StatusError
from kitsd.sd.instancer import Instancer
from kitsd.sd.memory import MemoryRegistry
from kitsd.transport import _policy
from kitsd.transport._discovery import Discovery, discovery
from kitsd.transport._options import DEFAULT, TransportKeywords, TransportOptions
from kitsd.transport._policy import AttemptFailed
from kitsd.transport._pools import Pools
from kitsd.transport._services import OTHER, Labels, TooManyServicesError, expired, plan_room
from kitsd.transport._stack import Forwarder, Stack, not_reached

__all__ = [
    "DEFAULT_BALANCER", "OUTLIER_DETECTION", "SLOW_START", "Discover", "call_deadline",
    "h2_available",
]

logger = logging.getLogger(__name__)

#: The balancer a transport uses unless told otherwise: the best this project has
#: for latency.  PeakEWMA (latency-aware) where lb has it, else LeastLoaded.
DEFAULT_BALANCER: Callable[..., lb.Balancer] = getattr(lb, "PeakEWMA", lb.LeastLoaded)

#: The transport's ejection policy unless told otherwise: a refused connection
#: ejects at once, and so do 5 consecutive 5xx answers or attempt timeouts (Envoy's
#: ``consecutive_5xx`` default; Finagle's failure accrual is on by default too).
#: Given to any balancer whose factory takes ``outlier_detection=``.
OUTLIER_DETECTION = lb.OutlierDetection(consecutive_errors=5)

#: The transport's slow start unless told otherwise (``slow_start=None`` turns it
#: off): a new instance's share ramps over 30 s.  Given to any balancer whose
#: factory takes ``slow_start=``.  It costs a pick nothing while no instance ramps
#: (``bench_pick_options``: x0.90-1.04 of a plain pick, noise) and cuts the p99 of a
#: scale-up with cold newcomers several times (``bench_slow_start``).
SLOW_START = lb.SlowStart()

#: Seconds a service whose registry answered "no instances" is kept (at most
#: ``idle_timeout``), so that a name that is nobody's does not keep its watch.
EMPTY_TIMEOUT = 10.0
#: Distinct service names a transport gives out as metric labels, at most.
MAX_LABELS = 1000
# Seconds between two looks for expired services on the request path.
_SWEEP_INTERVAL = 1.0

Discover = str | Callable[[str], Instancer] | MemoryRegistry
StackT = TypeVar("StackT", bound=Stack)
CheckersT = TypeVar("CheckersT", lb.HealthCheckers, lb.AsyncHealthCheckers)


class _Entry(NamedTuple, Generic[StackT]):
    """What :meth:`_Core._enter` found: the stack (entered), or a future to wait for
    (another caller builds it), or a future to fulfil (this caller builds it); and
    stacks retired to make room, for the caller to close."""

    stack: StackT | None
    name: str
    wait: Future[StackT] | None = None
    build: Future[StackT] | None = None
    retired: list[StackT] = []  # noqa: RUF012 - never mutated
    #: per-instance inner transports retired and idle, for the caller to close
    idle_pools: list[Any] = []  # noqa: RUF012 - never mutated


def _takes_outlier_detection(make: Callable[..., object]) -> bool:
    """Whether a balancer factory accepts ``outlier_detection=`` (lb's balancers do)."""
    return _takes(make, "outlier_detection")


def _takes(make: Callable[..., object], name: str) -> bool:
    """Whether a balancer factory accepts the keyword ``name``."""
    try:
        parameters = inspect.signature(make).parameters
    except (TypeError, ValueError):  # a callable without a signature: do not guess
        return False
    return name in parameters or any(
        each.kind is inspect.Parameter.VAR_KEYWORD for each in parameters.values())


def call_deadline(seconds: float) -> float:
    """The deadline of a call that may take ``seconds``, on the ``time.monotonic()``
    clock: ``lb.deadline``'s rule (an enclosing deadline that comes earlier wins),
    without its per-call object (``seconds`` is already a checked, finite number)."""
    at = time.monotonic() + seconds
    outer = current_deadline()
    return outer if outer is not None and outer < at else at


def h2_available() -> bool:
    """Whether ``h2`` is installed (the default inner transport then speaks HTTP/2)."""
    return importlib.util.find_spec("h2") is not None


class _Core(Generic[StackT, CheckersT]):
    """What both transports share."""

    def __init__(self, discover: Discover, options: TransportKeywords,
                 checkers: Callable[[], CheckersT]) -> None:
        """``checkers()`` makes the probers of ``health_check=`` (over the inner
        transport: the checks have its TLS settings), called only when it is set."""
        validate.keywords(f"kitsd.{type(self).__name__}", options, TransportKeywords)
        self.options = TransportOptions(**options)
        self._discovery: Discovery = discovery(discover)
        opts = self.options
        make = DEFAULT_BALANCER if opts.balancer is None else opts.balancer
        detection = opts.outlier_detection
        if detection is DEFAULT:
            detection = OUTLIER_DETECTION if _takes_outlier_detection(make) else DEFAULT
        extra: dict[str, Any] = opts.balancing()
        for name in extra:
            if not _takes(make, name):
                raise TypeError(f"{name} needs a balancer that takes {name}= (lb's "
                                f"balancers do); {make!r} does not")
        if opts.slow_start is DEFAULT and _takes(make, "slow_start"):
            extra["slow_start"] = SLOW_START
        #: the probers of health_check=, owned (and closed) by this transport
        self._checkers: CheckersT | None = None
        check = extra.get("health_check")
        if check is not None:
            self._checkers = extra["health_checkers"] = checkers()
        if detection is not DEFAULT:
            extra["outlier_detection"] = detection
        self._make = make
        self._extra = extra
        #: a check over TLS is told the name its instances' certificates carry
        self._named_check = (isinstance(check, lb.HttpCheck) and check.scheme == "https") or (
            isinstance(check, lb.GrpcCheck) and check.credentials is not None)
        self._forwarder = Forwarder(opts)
        self._timeout = opts.timeout
        # the inner transport given, or (None) one pool per instance address (drivers)
        self._inner: Any = None
        self._pools: Pools[Any] | None = None
        self._tls: ssl.SSLContext | None = None
        self._stacks: dict[str, StackT] = {}
        # the services being built (counted against max_services), and their futures
        self._building: dict[str, Future[StackT]] = {}
        self._labels = Labels(MAX_LABELS)
        self._lock = threading.Lock()
        self._closed = False
        self._swept = time.monotonic()
        self._empty_timeout = min(opts.idle_timeout, EMPTY_TIMEOUT)

    # --- the table of services ------------------------------------------------------
    #
    # Decided under self._lock, in plain methods; building and closing stacks (which
    # may start or stop a watch) happen outside it, in the drivers.  One caller builds
    # a new service's stack; others asking for it meanwhile wait for its future.

    def _enter(self, request: httpx.Request) -> StackT | _Entry[StackT]:
        """The stack for ``request``, entered, or (an :class:`_Entry`) what to do
        first: close retired stacks and pools, wait for another's build or build.
        Raises for a request no stack may serve."""
        url = request.url
        if url.port is not None:
            raise MisuseError(
                f"kitsd transport: the request URL names port {url.port} for service "
                f"{url.host!r}; each instance's port comes from the registry: leave the "
                "port out (http://users/path)")
        host = url.host
        now = time.monotonic()
        stack = self._stacks.get(host)
        if stack is not None and stack.enter(now):
            if now - self._swept < _SWEEP_INTERVAL:
                return stack
            return _Entry(stack, host, retired=self._sweep(now), idle_pools=self._idle_pools())
        name = _policy.service_name(host)
        if not self.options.allows(name):
            raise lb.NoEndpointsError(
                f"no endpoints available for service {name!r}: it is not one of the "
                "transport's services= (a request may name only those)")
        with self._lock:
            if self._closed:
                raise RuntimeError("kitsd transport is closed")
            stack = self._stacks.get(name)
            if stack is not None and stack.enter(now):
                return stack
            if stack is not None:  # retired meanwhile
                del self._stacks[name]
            pending = self._building.get(name)
            if pending is not None:
                return _Entry(None, name, wait=pending)
            capacity = self.options.max_services - len(self._building)
            names, fits = plan_room(
                (each.usage() for each in self._stacks.values()), capacity, now,
                self.options.idle_timeout, self._empty_timeout)
            retired = self._retire(names)
            if fits and len(self._stacks) < capacity:
                future: Future[StackT] = Future()
                self._building[name] = future
                return _Entry(None, name, build=future, retired=retired)
        self._close_later(retired)
        raise TooManyServicesError(name, self.options.max_services)

    def _retire(self, names: list[str]) -> list[StackT]:
        """Retire the named stacks that are idle and drop them (the caller holds the lock)."""
        retired = []
        for name in names:
            stack = self._stacks.get(name)
            if stack is not None and stack.retire_if_idle():
                del self._stacks[name]
                retired.append(stack)
        return retired

    def _sweep(self, now: float) -> list[StackT]:
        """Retire the services past their time (see :mod:`kitsd.transport._services`)."""
        with self._lock:
            self._swept = now
            names = [name for name, stack in self._stacks.items()
                     if expired(stack.usage(), now, self.options.idle_timeout,
                                self._empty_timeout)]
            return self._retire(names)

    def _idle_pools(self) -> list[Any]:
        """The per-instance inner transports whose instance left and whose
        connections are all idle (see :mod:`kitsd.transport._pools`)."""
        return [] if self._pools is None else self._pools.sweep()

    def _inner_transports(self) -> list[Any]:
        """Every inner transport, forgotten: the transport is closing."""
        closing: list[Any] = [] if self._pools is None else self._pools.take_all()
        if self._inner is not None:
            closing.append(self._inner)
        return closing

    def _ssl_context(self) -> ssl.SSLContext:
        """The TLS settings every per-instance pool shares (httpx's defaults: certifi's
        bundle, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), made once, on first use."""
        context = self._tls
        if context is None:
            with self._lock:
                context = self._tls
                if context is None:
                    context = self._tls = httpx.create_ssl_context()
        return context

    def _built(self, name: str, future: Future[StackT], built: StackT) -> bool:
        """Put a freshly built stack in the table, entered once for its builder, and
        hand it to the callers waiting for it; ``False`` when the transport closed
        meanwhile (the caller closes the stack and raises)."""
        with self._lock:
            del self._building[name]
            closed = self._closed
            if not closed:
                self._stacks[name] = built
                built.enter(time.monotonic())
        if closed:
            future.set_exception(RuntimeError("kitsd transport is closed"))
            return False
        future.set_result(built)
        return True

    def _build_failed(self, name: str, future: Future[StackT], error: BaseException) -> None:
        with self._lock:
            del self._building[name]
        future.set_exception(error)
        future.exception()  # retrieved: no "never retrieved" warning when nobody waited

    def _close_later(self, stacks: list[StackT]) -> None:
        for stack in stacks:  # a retired stack has no call in flight: nothing to wait for
            stack.close()

    def _label(self, stack: Stack) -> str:
        """The metric label for calls to ``stack``'s service (``other`` until admitted);
        once admitted, its registry watch is labelled so too."""
        if stack.label != OTHER or not (stack.had_instances or self._listed(stack.name)):
            return stack.label
        with self._lock:
            label = self._labels.label(stack.name, admitted=True)
        stack.watch_label.rename(label)
        return label

    def _watch_label(self, name: str) -> str:
        """What a new watch of ``name`` is labelled in observations before its first
        answer: the name if the user listed it or it was admitted before, else ``other``
        (a request's host is no metric label until the registry vouched for it)."""
        with self._lock:
            if self._labels.given(name):
                return name
            return self._labels.label(name, admitted=self._listed(name))

    def _listed(self, name: str) -> bool:
        services = self.options.services
        return services is not None and self.options.allows(name)

    def _factory(self, endpoint: Callable[[str], Any]) -> Callable[[str], Any]:
        breakers = self.options.breakers
        if breakers is None:
            return endpoint
        return breaker.per_instance(endpoint, breakers)

    def _stack_for(
        self, name: str, endpoint: Callable[[str], Any], make_retry: Callable[..., Any]
    ) -> Stack:
        discovery = self._discovery
        label = WatchLabel(self._watch_label(name))
        try:
            if discovery.labelled:
                with labelling_watches(label):
                    instancer = discovery.instancer(name)
            else:
                instancer = discovery.instancer(name)
        except MisuseError:
            raise
        except BackendError as error:  # a registry client that cannot log in, say
            raise lb.NoEndpointsError(
                f"no endpoints available for service {name!r}: "
                f"{not_reached(discovery.registry, error)}") from None
        return Stack(
            name, instancer, self._factory(endpoint), functools.partial(self._balancer, name),
            make_retry, self.options, registry=discovery.registry, now=time.monotonic(),
            watch_label=label)

    def _balancer(self, service: str, endpointer: Endpointer) -> lb.Balancer:
        """``service``'s balancer, with the transport's options; an active check over TLS
        expects the name the transport's calls do (``server_name``, else the service)."""
        extra = self._extra
        if not extra:
            return self._make(endpointer)
        check = extra.get("health_check")
        if self._named_check and check is not None and check.server_name is None:
            name = self.options.server_name
            extra = {**extra, "health_check": dataclasses.replace(
                check, server_name=service if name is None
                else name if isinstance(name, str) else name(service))}
        return self._make(endpointer, **extra)

    def _take_all(self) -> list[StackT]:
        with self._lock:
            self._closed = True
            stacks, self._stacks = list(self._stacks.values()), {}
        return stacks

    @property
    def services(self) -> list[str]:
        """The services watched now (for inspection and tests)."""
        with self._lock:
            return sorted(self._stacks)

    def _settle(
        self, error: lb.RetryError | lb.RetryTimeout, stack: Stack, request: httpx.Request
    ) -> httpx.Response:
        """What a call that did not succeed gives the caller: the response it ended
        on, else an httpx error (or :class:`lb.NoEndpointsError` naming the service)."""
        last = error.final if isinstance(error, lb.RetryError) else (
            error.errors[-1] if error.errors else None)
        if isinstance(last, StatusError):
            response: httpx.Response = last.response
            response.request = request
            return response
        if isinstance(last, lb.NoEndpointsError):
            raise lb.NoEndpointsError(stack.no_endpoints()) from None
        if isinstance(error, lb.RetryTimeout):
            raise httpx.TimeoutException(
                f"service {stack.name!r}: {error}", request=request) from error
        if isinstance(last, AttemptFailed):
            original = last.error
            if len(error.errors) > 1:
                original.add_note(f"kitsd: service {stack.name!r}, {error}")
            raise original
        raise last if last is not None else error
