"""Prometheus metrics for kitsd (extra ``prometheus``, on ``prometheus_client``).

::

    import kitsd.prometheus
    metrics = kitsd.prometheus.install()          # on prometheus_client.REGISTRY
    ... lb.retry(3, 2.0, balancer, name="users") ...
    metrics.close()                               # uninstall, unregister

:class:`PrometheusObserver` is an :mod:`kitsd.core.observe` observer: it turns what the
stack reports into the metrics below (all prefixed ``kitsd_``; labels are
bounded: services, instances, outcomes, registry kinds, breaker names, never a
request-derived value).

==============================  =========  ========================  ==============================
name                            type       labels                    meaning
==============================  =========  ========================  ==============================
kitsd_calls_total               counter    service, outcome          retried calls that ended
kitsd_call_duration_seconds     histogram  service, outcome          their duration (all attempts)
kitsd_attempts_total            counter    service, instance,        attempts that reached an
                                           outcome                   instance
kitsd_retries_total             counter    service                   attempts after a call's first
kitsd_budget_refusals_total     counter    service                   retries a budget refused
kitsd_ejections_total           counter    service, instance         instances taken out of rotation
kitsd_instances                 gauge      service, state            instances ``discovered`` /
                                                                     ``ejected`` now
kitsd_breaker_state             gauge      breaker, state            1 for the breaker's state,
                                                                     0 for the others
kitsd_discovery_errors_total    counter    kind, service             failed registry reads/watches
kitsd_rate_limited_total        counter    limiter, outcome          calls ``rejected`` or
                                                                     ``waited`` by a limiter
==============================  =========  ========================  ==============================

Outcomes: ``success``, ``error``, ``timeout``, ``cancelled``, ``rejected`` (an
open breaker, a rate limit or a budget said no), ``no_endpoints``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Self

from kitsd._extras import missing_extra

try:
    import prometheus_client  # noqa: F401 - checked here so the error names the extra
except ModuleNotFoundError as _error:
    raise missing_extra(_error, "kitsd.prometheus", "prometheus") from _error
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kitsd._states import BREAKER_STATES, States
from kitsd.core import observe
from kitsd.core.observe import (
    AttemptFinished,
    BreakerStateChanged,
    BudgetRefused,
    CallFinished,
    DiscoveryFailed,
    DiscoveryStopped,
    DiscoveryUpdated,
    InstanceEjected,
    InstanceRestored,
    Observation,
    RateLimited,
)

__all__ = ["DEFAULT_BUCKETS", "PrometheusObserver", "install"]

#: Call duration buckets, in seconds: from a loopback call to a slow retried one.
DEFAULT_BUCKETS: Sequence[float] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class PrometheusObserver:
    """Keeps kitsd's Prometheus metrics on ``registry`` (default
    ``prometheus_client.REGISTRY``); call it with observations (install it with
    :func:`kitsd.core.observe.add_observer`, or use :func:`install`).

    Registering raises ``ValueError`` (prometheus_client's) if ``registry``
    already holds metrics of these names, e.g. a second observer on one registry.
    :meth:`close` uninstalls it and unregisters its metrics.  Thread-safe.
    """

    #: It books endings only: the stack builds and sends it no "started" observation
    #: (see :func:`kitsd.core.observe.emit_started`).
    hears_starts = False

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "kitsd",
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        if registry is not None and not isinstance(registry, CollectorRegistry):
            raise TypeError(f"registry must be a prometheus_client.CollectorRegistry, "
                            f"got {registry!r}")
        self.registry = REGISTRY if registry is None else registry
        self.states = States()
        self._collectors: list[Collector] = []
        ns = namespace

        def add(collector: Collector) -> None:
            self.registry.register(collector)
            self._collectors.append(collector)

        try:
            self.calls = Counter("calls_total", "Retried calls that ended.",
                                 ["service", "outcome"], namespace=ns, registry=None)
            self.call_duration = Histogram(
                "call_duration_seconds", "Duration of retried calls, all attempts included.",
                ["service", "outcome"], namespace=ns, registry=None, buckets=buckets)
            self.attempts = Counter("attempts_total", "Attempts that reached an instance.",
                                    ["service", "instance", "outcome"], namespace=ns,
                                    registry=None)
            self.retries = Counter("retries_total", "Attempts after the first of a call.",
                                   ["service"], namespace=ns, registry=None)
            self.budget_refusals = Counter(
                "budget_refusals_total", "Retries or hedges a retry budget refused.",
                ["service"], namespace=ns, registry=None)
            self.ejections = Counter("ejections_total", "Instances taken out of rotation.",
                                     ["service", "instance"], namespace=ns, registry=None)
            self.discovery_errors = Counter(
                "discovery_errors_total", "Failed registry reads or watches.",
                ["kind", "service"], namespace=ns, registry=None)
            self.rate_limited = Counter(
                "rate_limited_total", "Calls a rate limiter rejected or made wait.",
                ["limiter", "outcome"], namespace=ns, registry=None)
            for collector in (self.calls, self.call_duration, self.attempts, self.retries,
                              self.budget_refusals, self.ejections, self.discovery_errors,
                              self.rate_limited):
                add(collector)
            add(_StateCollector(self.states, ns))
        except BaseException:
            self._unregister()
            raise
        self._attempt_children: dict[tuple[str, str, str], Any] = {}
        self._call_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {
            AttemptFinished: self._attempt,
            CallFinished: self._call,
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

    # Children by label values, looked up in a dict: ``labels()`` validates and locks on
    # every call, which would cost more than the rest of an observed call together.

    def _attempt(self, observation: AttemptFinished) -> None:
        key = (observation.service, observation.instance, observation.outcome)
        child = self._attempt_children.get(key)
        if child is None:
            child = self._attempt_children.setdefault(key, self.attempts.labels(*key))
        child.inc()

    def _call(self, observation: CallFinished) -> None:
        key = (observation.service, observation.outcome)
        children = self._call_children.get(key)
        if children is None:
            children = self._call_children.setdefault(
                key, (self.calls.labels(*key), self.call_duration.labels(*key)))
        children[0].inc()
        children[1].observe(observation.duration)
        if observation.attempts > 1:
            self.retries.labels(observation.service).inc(observation.attempts - 1)

    def _ejected(self, observation: InstanceEjected) -> None:
        self.ejections.labels(observation.service, observation.instance).inc()
        self.states.observe(observation)

    def _discovery_failed(self, observation: DiscoveryFailed) -> None:
        self.discovery_errors.labels(observation.kind, observation.service).inc()
        self.states.observe(observation)

    def _budget_refused(self, observation: BudgetRefused) -> None:
        self.budget_refusals.labels(observation.service).inc()

    def _rate_limited(self, observation: RateLimited) -> None:
        outcome = "rejected" if observation.rejected else "waited"
        self.rate_limited.labels(observation.limiter, outcome).inc()

    def close(self) -> None:
        """Uninstall (if installed) and unregister the metrics; idempotent."""
        observe.remove_observer(self)
        self._unregister()

    def _unregister(self) -> None:
        for collector in self._collectors:
            self.registry.unregister(collector)
        self._collectors.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _StateCollector(Collector):
    """``kitsd_instances`` and ``kitsd_breaker_state``, read at scrape time."""

    def __init__(self, states: States, namespace: str) -> None:
        self._states = states
        self._instances = f"{namespace}_instances"
        self._breaker = f"{namespace}_breaker_state"

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self._instances, "", labels=["service", "state"])
        yield GaugeMetricFamily(self._breaker, "", labels=["breaker", "state"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        instances = GaugeMetricFamily(
            self._instances, "Instances by state: discovered (last registry answer), "
            "ejected (out of rotation now).", labels=["service", "state"])
        for (service, state), count in sorted(self._states.instances().items()):
            instances.add_metric([service, state], count)
        yield instances
        breakers = GaugeMetricFamily(
            self._breaker, "Circuit breaker state: 1 for the current state, 0 for the others.",
            labels=["breaker", "state"])
        for name, current in sorted(self._states.breakers().items()):
            for state in BREAKER_STATES:
                breakers.add_metric([name, state], 1.0 if state == current else 0.0)
        yield breakers


def install(
    registry: CollectorRegistry | None = None, *, namespace: str = "kitsd"
) -> PrometheusObserver:
    """A :class:`PrometheusObserver` on ``registry``, installed process-wide; call its
    ``close()`` (or use it as a context manager) to remove it."""
    observer = PrometheusObserver(registry, namespace=namespace)
    observe.add_observer(observer)
    return observer
