"""The observations: small immutable records of what happened to a stack.

Named tuples, three times cheaper to make than frozen dataclasses; an observer
dispatches on their type and ignores the kinds it does not know.  Labels are
bounded by construction: services, instances, registry kinds, breaker names and
outcomes; nothing in an observation is derived from a request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

__all__ = [
    "AttemptFinished",
    "AttemptStarted",
    "BreakerStateChanged",
    "BudgetRefused",
    "CallFinished",
    "CallStarted",
    "DiscoveryFailed",
    "DiscoveryStopped",
    "DiscoveryUpdated",
    "InstanceEjected",
    "InstanceRestored",
    "Observation",
    "Observer",
    "RateLimited",
]


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
    it holds now; ``kind`` names the registry (``memory``, ``consul``, ``etcd`` …);
    ``service`` is the watch's label (its service, or what the watch was labelled
    with: :func:`kitsd.core.observe.labelling_watches`); ``watch`` tells one running
    watch from another (``0``: not said)."""

    kind: str
    service: str
    instances: int
    watch: int = 0


class DiscoveryFailed(NamedTuple):
    """A registry watch failed (every failure, not only the first); the last
    ``instances`` stay in use."""

    kind: str
    service: str
    instances: int
    error: BaseException
    watch: int = 0


class DiscoveryStopped(NamedTuple):
    """A registry watch that was observed stopped: forget what is kept for it (its
    instances are no longer anyone's)."""

    kind: str
    service: str
    watch: int = 0


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
    | DiscoveryStopped | BudgetRefused | RateLimited
)
#: An observer: called with each observation (ignore the kinds you do not know).
Observer = Callable[[Observation], object]
