"""The transport's options, spelled once: :class:`TransportOptions`.

:class:`TransportOptions` is the frozen, checked object both transports keep;
:class:`TransportKeywords` is the same set as a ``TypedDict``, so that
``Transport(discover, **options)`` is typed keyword by keyword (``Unpack``) and
a wrapper of your own can pass them through typed as well.  A test keeps the
two in step.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields
from typing import Any, Final, Literal, TypedDict

import pybreaker

from kitsd import lb
from kitsd.core import validate
from kitsd.core.errors import MisuseError, shown_value
from kitsd.lb.concurrency_limit import check_limit
from kitsd.lb.health_checkers import check_health_check
from kitsd.transport._policy import IDEMPOTENT_METHODS, RETRY_STATUSES

__all__ = [
    "DEFAULT",
    "DEFAULT_BUFFER_BODY",
    "BalancerFactory",
    "Default",
    "HostHeader",
    "ServerName",
    "Services",
    "TransportKeywords",
    "TransportOptions",
]


class Default(enum.Enum):
    """The type of :data:`DEFAULT`."""

    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


#: ``outlier_detection=DEFAULT`` / ``slow_start=DEFAULT``: the transport's own default
#: (:data:`kitsd.transport.OUTLIER_DETECTION`, :data:`kitsd.transport.SLOW_START`) for
#: any balancer whose factory takes ``outlier_detection=`` / ``slow_start=``; another
#: is built without it.
DEFAULT: Final = Default.DEFAULT

#: ``buffer_body``'s default: bodies of up to 64 KiB are read within the attempt.
DEFAULT_BUFFER_BODY: Final = 65_536

#: ``balancer(endpointer) -> lb.Balancer``; called with ``outlier_detection=`` too
#: when that option is set (the lb balancer classes take it).
BalancerFactory = Callable[..., lb.Balancer]
#: ``host_header``: a fixed ``Host``, or ``host_header(service, instance) -> str``.
HostHeader = Callable[[str, str], str] | str
#: ``server_name``: a fixed name, or ``server_name(service) -> str``.
ServerName = Callable[[str], str] | str
#: ``services``: the service names allowed, or ``services(name) -> bool``.
Services = Collection[str] | Callable[[str], bool]


class TransportKeywords(TypedDict, total=False):
    """The keyword options of :class:`kitsd.Transport` and :class:`kitsd.AsyncTransport`
    (see :class:`TransportOptions` for each)."""

    balancer: BalancerFactory | None
    max_attempts: int
    retry_statuses: Collection[int]
    retry_methods: Collection[str]
    timeout: float
    attempt_timeout: float | None
    breakers: Callable[[str], pybreaker.CircuitBreaker] | None
    outlier_detection: lb.OutlierDetection | Literal[Default.DEFAULT] | None
    budget: lb.RetryBudget | None
    hedge: lb.Hedge | None
    slow_start: lb.SlowStart | Literal[Default.DEFAULT] | None
    zones: lb.Zones | None
    health_check: lb.HttpCheck | lb.GrpcCheck | None
    subset: lb.Aperture | None
    limit: lb.GradientLimit | lb.AIMDLimit | None
    host_header: HostHeader | None
    server_name: ServerName | None
    services: Services | None
    max_services: int
    idle_timeout: float
    buffer_body: int


def _callable_or_str(name: str, value: object, shape: str) -> None:
    if value is not None and not isinstance(value, str) and not callable(value):
        raise TypeError(f"{name} must be a string or {shape}, got {shown_value(value)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportOptions:
    """Every option of a transport, checked once and frozen.

    * ``balancer`` — ``balancer(endpointer) -> lb.Balancer`` (default
      :data:`kitsd.transport.DEFAULT_BALANCER`).
    * ``outlier_detection`` — an :class:`lb.OutlierDetection` given to the
      balancer as ``outlier_detection=``; ``None`` disables ejection;
      :data:`DEFAULT`: :data:`kitsd.transport.OUTLIER_DETECTION` (ejects after 5
      consecutive 5xx or timeouts, and at once on a refused connection) for any
      balancer that takes ``outlier_detection=``, else the balancer's own.
    * ``max_attempts`` (3), ``retry_statuses`` ({502, 503, 504}),
      ``retry_methods`` (the idempotent ones).
    * ``timeout`` — seconds for a whole call whose request has no httpx timeout
      (60); ``attempt_timeout`` — cap on each attempt (default: half the
      call's time, for requests that may be retried).
    * ``breakers`` — ``breakers(instance) -> pybreaker.CircuitBreaker``.
    * ``budget`` (an :class:`lb.RetryBudget`), ``hedge`` (an :class:`lb.Hedge`).
    * ``slow_start`` — an :class:`lb.SlowStart` (a new instance's share ramps);
      ``None`` disables it; :data:`DEFAULT`: :data:`kitsd.transport.SLOW_START`
      (``lb.SlowStart()``) for any balancer that takes ``slow_start=``.  On by
      default because it costs a pick nothing while no instance ramps, and cuts
      the p99 of a scale-up with cold newcomers (``bench_slow_start``).
    * ``zones`` (an :class:`lb.Zones`),
      ``health_check`` (an :class:`lb.HttpCheck` or :class:`lb.GrpcCheck`, run by
      probers the transport owns and closes), ``subset`` (an :class:`lb.Aperture`):
      given to each service's balancer (which must take them; lb's balancers do).
    * ``limit`` (an :class:`lb.GradientLimit` or :class:`lb.AIMDLimit`): an adaptive
      concurrency limit per service; a call past it raises :class:`lb.LimitExceeded`.
    * ``host_header``, ``server_name`` — see :class:`kitsd.Transport`.
    * ``services`` — the service names a request may name (a collection, or
      ``services(name) -> bool``); others fail with :class:`lb.NoEndpointsError`
      before anything is started for them.  ``None`` (default): any name.
    * ``max_services`` — how many services are watched at once (64); past it
      the least recently used idle one is closed, and when none is idle the
      request fails with :class:`kitsd.transport.TooManyServicesError`.
    * ``idle_timeout`` — seconds after which a service no request used is
      closed (300); one whose registry answered "no instances" is closed
      after ``min(idle_timeout, 10)`` seconds empty.
    * ``buffer_body`` — bytes (65,536): a successful response to a request that
      may be retried, whose ``Content-Length`` is at most this, has its body read
      within the attempt, so that a body cut off (its instance died between the
      headers and the body) is retried on another instance instead of failing
      the caller; larger or unsized bodies stream as with plain httpx.  0: never.

    Raises ``TypeError`` for a wrong type and :class:`sd.MisuseError` (a
    ``ValueError``) for a wrong value, naming the option.
    """

    balancer: BalancerFactory | None = None
    max_attempts: int = 3
    retry_statuses: Collection[int] = RETRY_STATUSES  # a frozenset once checked
    retry_methods: Collection[str] = IDEMPOTENT_METHODS  # a frozenset, upper case
    timeout: float = 60.0
    attempt_timeout: float | None = None
    breakers: Callable[[str], pybreaker.CircuitBreaker] | None = None
    outlier_detection: lb.OutlierDetection | Literal[Default.DEFAULT] | None = DEFAULT
    budget: lb.RetryBudget | None = None
    hedge: lb.Hedge | None = None
    slow_start: lb.SlowStart | Literal[Default.DEFAULT] | None = DEFAULT
    zones: lb.Zones | None = None
    health_check: lb.HttpCheck | lb.GrpcCheck | None = None
    subset: lb.Aperture | None = None
    limit: lb.GradientLimit | lb.AIMDLimit | None = None
    host_header: HostHeader | None = None
    server_name: ServerName | None = None
    services: Services | None = field(default=None, repr=False)
    max_services: int = 64
    idle_timeout: float = 300.0
    buffer_body: int = DEFAULT_BUFFER_BODY

    def __post_init__(self) -> None:
        put = object.__setattr__  # frozen: normalise in place, once
        validate.integer("max_attempts", self.max_attempts, minimum=1)
        validate.integer("max_services", self.max_services, minimum=1)
        validate.integer("buffer_body", self.buffer_body, minimum=0)
        statuses = frozenset(_collection("retry_statuses", self.retry_statuses))
        for status in statuses:
            if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
                raise MisuseError(
                    f"retry_statuses must hold HTTP status codes, got {shown_value(status)}")
        put(self, "retry_statuses", statuses)
        methods = _collection("retry_methods", self.retry_methods)
        for method in methods:
            if not isinstance(method, str):
                raise TypeError(f"retry_methods must hold method names, got {shown_value(method)}")
        put(self, "retry_methods", frozenset(method.upper() for method in methods))
        put(self, "timeout", validate.seconds("timeout", self.timeout))
        put(self, "attempt_timeout",
            validate.optional_seconds("attempt_timeout", self.attempt_timeout))
        put(self, "idle_timeout", validate.seconds("idle_timeout", self.idle_timeout))
        if self.balancer is not None and not callable(self.balancer):
            raise TypeError("balancer must be callable(endpointer) -> Balancer, got "
                            f"{shown_value(self.balancer)}")
        if self.breakers is not None and not callable(self.breakers):
            raise TypeError("breakers must be callable(instance) -> CircuitBreaker, got "
                            f"{shown_value(self.breakers)}")
        detection = self.outlier_detection
        if detection is not None and detection is not DEFAULT and not isinstance(
                detection, lb.OutlierDetection):
            raise TypeError("outlier_detection must be an lb.OutlierDetection, None or DEFAULT, "
                            f"got {shown_value(detection)}")
        if self.budget is not None and not isinstance(self.budget, lb.RetryBudget):
            raise TypeError(f"budget must be an lb.RetryBudget, got {shown_value(self.budget)}")
        if self.hedge is not None and not isinstance(self.hedge, lb.Hedge):
            raise TypeError(f"hedge must be an lb.Hedge, got {shown_value(self.hedge)}")
        if self.slow_start is not DEFAULT and self.slow_start is not None and not isinstance(
                self.slow_start, lb.SlowStart):
            raise TypeError("slow_start must be an lb.SlowStart, None or DEFAULT, "
                            f"got {shown_value(self.slow_start)}")
        for name, kind, what in (("zones", lb.Zones, "an lb.Zones"),
                                 ("subset", lb.Aperture, "an lb.Aperture")):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise TypeError(f"{name} must be {what} or None, got {shown_value(value)}")
        check_health_check(self.health_check)
        check_limit(self.limit)
        _callable_or_str("host_header", self.host_header, "callable(service, instance)")
        _callable_or_str("server_name", self.server_name, "callable(service)")
        services = self.services
        if services is not None and not callable(services):
            names = _collection("services", services)
            for name in names:
                if not isinstance(name, str):
                    raise TypeError(f"services must hold service names, got {shown_value(name)}")
            put(self, "services", frozenset(names))

    def balancing(self) -> dict[str, Any]:
        """The issue-21 options each service's balancer is given (those set; a
        ``slow_start`` left to :data:`DEFAULT` is the transport's to decide)."""
        return {name: value for name in ("slow_start", "zones", "health_check", "subset")
                if (value := getattr(self, name)) is not None and value is not DEFAULT}

    def allows(self, service: str) -> bool:
        """Whether ``services`` lets a request name ``service``."""
        services = self.services
        if services is None:
            return True
        if isinstance(services, frozenset):
            return service in services
        return bool(services(service))  # type: ignore[operator]

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in order."""
        return tuple(each.name for each in fields(cls))


def _collection(name: str, value: Any) -> Collection[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Collection):
        raise TypeError(f"{name} must be a collection, got {shown_value(value)}")
    return value
