"""OpenTelemetry metrics and traces for kitsd (extra ``otel``, on ``opentelemetry-api``).

::

    import kitsd.otel
    telemetry = kitsd.otel.install()   # the global meter and tracer providers
    factory = sd.http.factory("GET", "/", encode=..., decode=...,
                              client_kwargs=kitsd.otel.client_kwargs())  # traceparent
    ...
    telemetry.close()

:class:`OtelObserver` is an :mod:`kitsd.core.observe` observer.  Only the API is needed
at run time; an SDK (or nothing: the API's no-op providers) decides where the
data goes.

Traces: one span per retried call (``INTERNAL``, named after the stack's
``name=``), and under it one ``CLIENT`` span per attempt (``"{service} attempt"``)
with ``server.address``/``server.port`` of the instance,
``http.request.resend_count`` on retries and ``error.type`` on failure.  The
attempt span is current while the endpoint runs, so whatever the endpoint does
nests under it and :func:`inject` (see :func:`client_kwargs`) sends its W3C
``traceparent``; ``kitsd.Transport`` sends it on every attempt by itself
(:meth:`OtelObserver.inject_headers`).  When the official ``opentelemetry-instrumentation-httpx`` is
active, it already makes one ``CLIENT`` span per HTTP request and injects the
header: kitsd then makes no attempt spans of its own (the instrumentation's
spans nest under the call span; give it :func:`request_hook` to mark retries
with ``http.request.resend_count``), and no ``http.client.request.duration``
of its own either, which the instrumentation records.

Metrics (instrument: kind, unit, attributes):

* ``http.client.request.duration``: histogram, ``s``, per attempt (its count is the
  attempts by instance and error type: no separate attempt counter, each record
  costs the SDK microseconds): ``server.address``, ``server.port``, ``error.type``
  (on failure), ``kitsd.service``;
* ``kitsd.call.duration``: histogram, ``s``: ``kitsd.service``, ``kitsd.outcome``;
* ``kitsd.retries``, ``kitsd.budget.refusals``: counters: ``kitsd.service``;
* ``kitsd.ejections``: counter: ``kitsd.service``, ``kitsd.instance``;
* ``kitsd.discovery.errors``: counter: ``kitsd.registry.kind``, ``kitsd.service``;
* ``kitsd.rate_limited``: counter: ``kitsd.limiter``, ``kitsd.outcome``;
* ``kitsd.instances``: observable gauge: ``kitsd.service``, ``kitsd.instance.state``
  (``discovered`` / ``ejected``);
* ``kitsd.breaker.state``: observable gauge, 1/0: ``kitsd.breaker``, ``kitsd.breaker.state``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import Any, NamedTuple, Self

import httpx

from kitsd._extras import missing_extra

try:
    import opentelemetry  # noqa: F401 - checked here so the error names the extra
except ModuleNotFoundError as _error:
    raise missing_extra(_error, "kitsd.otel", "otel") from _error
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, MeterProvider, get_meter
from opentelemetry.metrics import Observation as Measurement
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from kitsd._states import BREAKER_STATES, States
from kitsd.core import observe
from kitsd.core.observe import (
    AttemptFinished,
    AttemptStarted,
    BreakerStateChanged,
    BudgetRefused,
    CallFinished,
    CallStarted,
    DiscoveryFailed,
    DiscoveryStopped,
    DiscoveryUpdated,
    InstanceEjected,
    InstanceRestored,
    Observation,
    RateLimited,
    error_type,
)
from kitsd.sd.instance import split_instance

__all__ = [
    "REQUEST_DURATION_BUCKETS",
    "OtelObserver",
    "ainject",
    "client_kwargs",
    "httpx_instrumented",
    "inject",
    "install",
    "request_hook",
]

#: The boundaries the HTTP semantic conventions advise for ``http.client.request.duration``.
REQUEST_DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)

_SCOPE = "kitsd"



class _Frame(NamedTuple):
    """A span this context opened: a call's or an attempt's."""

    span: trace.Span
    token: object  # the context token to detach, None when it was not made current
    context: Context | None  # a call's: the context its attempt spans are made in
    own: bool  # a call's: whether kitsd makes its attempt spans
    attempt: bool


# The spans this context opened, innermost last.
_frames: ContextVar[tuple[_Frame, ...]] = ContextVar("kitsd_otel_frames", default=())
# The resend count of the attempt running in this context, while the httpx
# instrumentation makes its spans (for request_hook).
_attempt: ContextVar[int | None] = ContextVar("kitsd_otel_attempt", default=None)

#: Attribute sets kept per cache (cleared whole past it).
MAX_ATTRIBUTE_SETS = 4096


def _remember(cache: dict[Any, Mapping[str, Any]], key: Any,
              attributes: Mapping[str, Any]) -> Mapping[str, Any]:
    if len(cache) >= MAX_ATTRIBUTE_SETS:
        cache.clear()
    cache[key] = attributes
    return attributes


_instrumentor: Any = None  # HTTPXClientInstrumentor() once looked up; False: not installed


def httpx_instrumented() -> bool:
    """Whether ``opentelemetry-instrumentation-httpx`` is installed and instrumenting."""
    global _instrumentor
    if _instrumentor is None:
        try:
            from opentelemetry.instrumentation.httpx import (
                HTTPXClientInstrumentor,
            )
        except ImportError:
            _instrumentor = False
        else:
            _instrumentor = HTTPXClientInstrumentor()  # a singleton
    return bool(_instrumentor and _instrumentor.is_instrumented_by_opentelemetry)


class OtelObserver:
    """Records kitsd's measurements and spans through OpenTelemetry; thread- and
    task-safe.  ``meter_provider``/``tracer_provider`` default to the global ones;
    ``spans=False`` records metrics only; ``attempt_spans`` ``None`` (default)
    makes attempt spans unless the httpx instrumentation is active."""

    def __init__(
        self,
        *,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
        spans: bool = True,
        attempt_spans: bool | None = None,
    ) -> None:
        meter = get_meter(_SCOPE, meter_provider=meter_provider)
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        self._spans = spans
        self._attempt_spans = attempt_spans
        self.states = States()
        self.request_duration = meter.create_histogram(
            "http.client.request.duration", unit="s",
            description="Duration of HTTP client requests (one per attempt).",
            explicit_bucket_boundaries_advisory=REQUEST_DURATION_BUCKETS)
        self.call_duration = meter.create_histogram(
            "kitsd.call.duration", unit="s",
            description="Duration of retried calls, all attempts included.")
        self.retries = meter.create_counter(
            "kitsd.retries", unit="{retry}", description="Attempts after the first of a call.")
        self.budget_refusals = meter.create_counter(
            "kitsd.budget.refusals", unit="{retry}",
            description="Retries or hedges a retry budget refused.")
        self.ejections = meter.create_counter(
            "kitsd.ejections", unit="{ejection}", description="Instances taken out of rotation.")
        self.discovery_errors = meter.create_counter(
            "kitsd.discovery.errors", unit="{error}",
            description="Failed registry reads or watches.")
        self.rate_limited = meter.create_counter(
            "kitsd.rate_limited", unit="{call}",
            description="Calls a rate limiter rejected or made wait.")
        meter.create_observable_gauge(
            "kitsd.instances", [self._instances], unit="{instance}",
            description="Instances by state: discovered, ejected.")
        meter.create_observable_gauge(
            "kitsd.breaker.state", [self._breakers], unit="1",
            description="Circuit breaker state: 1 for the current state, 0 for the others.")
        # attribute sets by key, bounded (a key's values come from registries and errors)
        self._by_service: dict[str, Mapping[str, Any]] = {}
        self._by_call: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._by_attempt: dict[tuple[str, str, str | None], Mapping[str, Any]] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {
            AttemptStarted: self._attempt_started,
            AttemptFinished: self._attempt_finished,
            CallStarted: self._call_started,
            CallFinished: self._call_finished,
            InstanceEjected: self._ejected,
            DiscoveryFailed: self._discovery_failed,
            BudgetRefused: self._budget_refused,
            RateLimited: self._rate_limited,
            InstanceRestored: self.states.observe,
            DiscoveryUpdated: self.states.observe,
            DiscoveryStopped: self.states.observe,
            BreakerStateChanged: self.states.observe,
        }

    def __call__(self, observation: Observation) -> None:
        """Book one observation (unknown kinds are ignored)."""
        handler = self._handlers.get(type(observation))
        if handler is not None:
            handler(observation)

    def _call_started(self, observation: CallStarted) -> None:
        if self._spans:
            own = self._own_attempts()  # decided once per call, kept for its attempts
            service = observation.service
            span = self._tracer.start_span(service, kind=SpanKind.INTERNAL,
                                           attributes=self._service_attributes(service))
            parent = trace.set_span_in_context(span)
            # Attempt spans of its own name the call span as their parent; made by the
            # httpx instrumentation, they find it current.
            token = None if own else context.attach(parent)
            _frames.set((*_frames.get(), _Frame(span, token, parent, own, False)))

    def _ejected(self, observation: InstanceEjected) -> None:
        self.ejections.add(1, {"kitsd.service": observation.service,
                               "kitsd.instance": observation.instance})
        self.states.observe(observation)

    def _discovery_failed(self, observation: DiscoveryFailed) -> None:
        self.discovery_errors.add(1, {"kitsd.registry.kind": observation.kind,
                                      "kitsd.service": observation.service})
        self.states.observe(observation)

    def _budget_refused(self, observation: BudgetRefused) -> None:
        self.budget_refusals.add(1, {"kitsd.service": observation.service})

    def _rate_limited(self, observation: RateLimited) -> None:
        self.rate_limited.add(1, {"kitsd.limiter": observation.limiter,
                                  "kitsd.outcome": "rejected" if observation.rejected
                                  else "waited"})

    # --- calls and attempts ----------------------------------------------------------

    def _attempt_started(self, observation: AttemptStarted) -> None:
        frames = _frames.get() if self._spans else ()
        call = frames[-1] if frames and not frames[-1].attempt else None
        own = call.own if call is not None else self._own_attempts()
        if not own:  # the httpx instrumentation's span: request_hook marks its resends
            _attempt.set(observation.resend_count)
            return
        if not self._spans:
            return
        attributes = self._attempt_attributes(observation.service, observation.instance, None)
        if observation.resend_count:
            attributes = {**attributes, "http.request.resend_count": observation.resend_count}
        span = self._tracer.start_span(
            f"{observation.service} attempt", context=None if call is None else call.context,
            kind=SpanKind.CLIENT, attributes=attributes)
        token = context.attach(trace.set_span_in_context(span))
        _frames.set((*frames, _Frame(span, token, None, True, True)))

    def _attempt_finished(self, observation: AttemptFinished) -> None:
        frames = _frames.get() if self._spans else ()
        opened = bool(frames) and frames[-1].attempt
        if not opened:
            call = frames[-1] if frames else None
            own = call.own if call is not None else self._own_attempts()
            if not own:
                _attempt.set(None)
                return
        error = observation.error
        self.request_duration.record(observation.duration, self._attempt_attributes(
            observation.service, observation.instance,
            None if error is None else error_type(error)))
        if opened:
            self._close(error)

    def _call_finished(self, observation: CallFinished) -> None:
        service = observation.service
        self.call_duration.record(observation.duration,
                                  self._call_attributes(service, observation.outcome))
        if observation.attempts > 1:
            self.retries.add(observation.attempts - 1, self._service_attributes(service))
        if self._spans:
            frames = _frames.get()
            if frames and frames[-1].attempt:  # interrupted mid-attempt: close it first
                self._close(observation.error)
                frames = _frames.get()
            if frames:
                span = frames[-1].span
                span.set_attribute("kitsd.attempts", observation.attempts)
                span.set_attribute("kitsd.outcome", observation.outcome)
            self._close(observation.error)

    def _own_attempts(self) -> bool:
        if self._attempt_spans is not None:
            return self._attempt_spans
        return not httpx_instrumented()

    def _close(self, error: BaseException | None) -> None:
        frames = _frames.get()
        if not frames:
            return
        frame = frames[-1]
        _frames.set(frames[:-1])
        span = frame.span
        if error is not None:
            span.set_attribute("error.type", error_type(error))
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()
        if frame.token is not None:
            context.detach(frame.token)  # type: ignore[arg-type]

    # --- attribute sets, made once per key (the SDK copies what it keeps) -----------

    def _service_attributes(self, service: str) -> Mapping[str, Any]:
        attributes = self._by_service.get(service)
        if attributes is None:
            attributes = _remember(self._by_service, service, {"kitsd.service": service})
        return attributes

    def _call_attributes(self, service: str, outcome: str) -> Mapping[str, Any]:
        key = (service, outcome)
        attributes = self._by_call.get(key)
        if attributes is None:
            attributes = _remember(self._by_call, key,
                                   {"kitsd.service": service, "kitsd.outcome": outcome})
        return attributes

    def _attempt_attributes(
        self, service: str, instance: str, error: str | None
    ) -> Mapping[str, Any]:
        key = (service, instance, error)
        attributes = self._by_attempt.get(key)
        if attributes is None:
            made: dict[str, Any] = {"kitsd.service": service}
            made.update(_server(instance))
            if error is not None:
                made["error.type"] = error
            attributes = _remember(self._by_attempt, key, made)
        return attributes

    # --- gauges ----------------------------------------------------------------------

    def _instances(self, options: CallbackOptions) -> Iterable[Measurement]:
        for (service, state), count in sorted(self.states.instances().items()):
            yield Measurement(count, {"kitsd.service": service, "kitsd.instance.state": state})

    def _breakers(self, options: CallbackOptions) -> Iterable[Measurement]:
        for name, current in sorted(self.states.breakers().items()):
            for state in BREAKER_STATES:
                yield Measurement(1 if state == current else 0,
                                  {"kitsd.breaker": name, "kitsd.breaker.state": state})

    def inject_headers(self, headers: Any) -> None:
        """Add the current trace context (W3C ``traceparent``, by the global
        propagator) to ``headers``, unless the httpx instrumentation (which injects
        its own) is active.  ``kitsd.Transport`` calls it for each attempt it sends,
        with that attempt's span current."""
        if not httpx_instrumented():
            propagate.inject(headers)

    def close(self) -> None:
        """Uninstall (if installed); idempotent.  The instruments stay with the meter."""
        observe.remove_observer(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _server(instance: str) -> dict[str, Any]:
    """``server.address``/``server.port`` of an instance string (none for a stand-in)."""
    try:
        host, port = split_instance(instance)
    except ValueError:
        return {}
    return {"server.address": host, "server.port": port}


def install(
    *,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    spans: bool = True,
    attempt_spans: bool | None = None,
) -> OtelObserver:
    """An :class:`OtelObserver`, installed process-wide; ``close()`` removes it."""
    observer = OtelObserver(meter_provider=meter_provider, tracer_provider=tracer_provider,
                            spans=spans, attempt_spans=attempt_spans)
    observe.add_observer(observer)
    return observer


# --- propagation -----------------------------------------------------------------------


def inject(request: httpx.Request) -> None:
    """An httpx request event hook: adds the current trace context (W3C ``traceparent``,
    by the global propagator) to ``request``'s headers, unless the httpx
    instrumentation (which injects its own) is active."""
    if not httpx_instrumented():
        propagate.inject(request.headers)


async def ainject(request: httpx.Request) -> None:
    """:func:`inject` for ``httpx.AsyncClient`` event hooks."""
    inject(request)


def client_kwargs(
    kwargs: Mapping[str, Any] | None = None, *, asynchronous: bool = False
) -> dict[str, Any]:
    """``kwargs`` (httpx client arguments, e.g. ``sd.http.factory``'s ``client_kwargs``)
    with :func:`inject` (``asynchronous``: :func:`ainject`) added to the request hooks."""
    merged = dict(kwargs or {})
    hooks = {key: list(value) for key, value in dict(merged.get("event_hooks") or {}).items()}
    hooks.setdefault("request", []).append(ainject if asynchronous else inject)
    merged["event_hooks"] = hooks
    return merged


def request_hook(span: trace.Span, request: object) -> None:
    """A ``request_hook`` for ``HTTPXClientInstrumentor().instrument(...)``: marks the
    instrumentation's span of a retry with ``http.request.resend_count``."""
    resends = _attempt.get()
    if resends and span.is_recording():
        span.set_attribute("http.request.resend_count", resends)
