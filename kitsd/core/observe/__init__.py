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
  ones in reverse, like the exits of nested context managers; an observer
  with a false ``hears_starts`` attribute is sent no "started" ones (the
  Prometheus adapter, which books endings only: two observations fewer to
  build and deliver per call);
* an observer that raises is logged (once per observer) and otherwise ignored:
  observing never changes the outcome of a call.

Observers must be quick and must not block: they run on the caller's path.
Labels are bounded by construction: services, instances, registry kinds,
breaker names and outcomes; nothing in an observation is derived from a request.

Modules, one concept each (every name is re-exported here, the public seam):
:mod:`~kitsd.core.observe.outcomes` (the outcome labels and the pure rules that
judge an error), :mod:`~kitsd.core.observe.observations` (the observation types),
:mod:`~kitsd.core.observe.hub` (the installed observers and delivery),
:mod:`~kitsd.core.observe.calls` (:class:`CallWatch`, the calling stack's name),
:mod:`~kitsd.core.observe.watches` (:class:`WatchLabel`, what registry watches are
called when their name came from a request).
"""

from kitsd.core.observe.calls import CallWatch, current_service, watch_call
from kitsd.core.observe.hub import (
    HUB,
    add_observer,
    emit,
    emit_started,
    observing,
    remove_observer,
)
from kitsd.core.observe.observations import (
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
    Observer,
    RateLimited,
)
from kitsd.core.observe.outcomes import (
    CANCELLED,
    DEFAULT_SERVICE,
    ERROR,
    NO_ENDPOINTS,
    OUTCOMES,
    REJECTED,
    SUCCESS,
    TIMEOUT,
    error_type,
    outcome_of,
)
from kitsd.core.observe.watches import WatchLabel, current_watch_label, labelling_watches

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
    "DiscoveryStopped",
    "DiscoveryUpdated",
    "InstanceEjected",
    "InstanceRestored",
    "Observation",
    "Observer",
    "RateLimited",
    "WatchLabel",
    "add_observer",
    "current_service",
    "current_watch_label",
    "emit",
    "emit_started",
    "error_type",
    "labelling_watches",
    "observing",
    "outcome_of",
    "remove_observer",
    "watch_call",
]
