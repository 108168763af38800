"""kitsd load balancing: balancers, retry, and the retry deadline.

Public surface (see ``API.md``): :class:`Balancer`, :class:`RoundRobin`,
:class:`Random`, :class:`NoEndpointsError`, :func:`retry`, :func:`retry_async`,
:class:`RetryError`, :class:`RetryTimeout`, :func:`remaining`; beyond it,
:func:`deadline` (``with lb.deadline(seconds):`` bounds the retried calls made
in the block: a per-call deadline for an endpoint built once),
:class:`LeastLoaded` (power of two choices over requests in flight),
:class:`OutlierDetection` (the passive-ejection policy a balancer owns, with the
:class:`CountedError` marker), and for custom balancers the optional
:class:`Picker` protocol with its :class:`Pick`.

Balancing beyond go-kit (issue 9): :class:`PeakEWMA` (latency-aware),
:class:`Weighted` (smooth weighted round robin), :class:`ConsistentHash`
(affinity by a request key), :class:`RetryBudget` (``budget=`` of the retries,
refusing with :class:`RetryBudgetExhausted`) and :class:`Hedge` (``hedge=``; the
retry then returns a :class:`HedgedEndpoint` to ``close()``, or an
:class:`AsyncHedgedEndpoint` to ``aclose()``).

Balancing, second pass (issue 21; every built-in balancer takes them, see
:mod:`lb.shaping`): :class:`SlowStart` (``slow_start=``: new instances ramp up),
:class:`Zones` (``zones=``: prefer the caller's zone, fail over between
priority tiers, panic), :class:`HttpCheck` / :class:`GrpcCheck` run by a
:class:`HealthCheckers` (probes on threads) or :class:`AsyncHealthCheckers` (on an
event loop) (``health_check=``, ``health_checkers=``: active health checks),
:class:`Aperture` (``subset=``: deterministic subsetting, a client's place among
its peers kept by :class:`PeerRank`); and for
:func:`retry` / :func:`retry_async` an adaptive concurrency limit,
:class:`GradientLimit` or :class:`AIMDLimit` (``limit=``), refusing with
:class:`LimitExceeded` (driven by :class:`ConcurrencyLimiter`).

Which balancer when:

* :class:`RoundRobin` — equal instances, even spreading, the cheapest pick.
* :class:`Random` — as round robin, without coordinating many clients' order.
* :class:`LeastLoaded` — requests of uneven cost; avoids busy instances.
* :class:`PeakEWMA` — instances of uneven speed (the best default for
  latency-sensitive calls): avoids a slow instance from its first slow answer.
* :class:`Weighted` — uneven capacity the registry states as weights.
* :class:`ConsistentHash` — affinity: the same key to the same instance.
"""

from kitsd.core.deadline import remaining
from kitsd.lb.aperture import Aperture
from kitsd.lb.balancer import Balancer, Pick, Picker
from kitsd.lb.concurrency_limit import ConcurrencyLimiter
from kitsd.lb.concurrency_limit_policy import AIMDLimit, GradientLimit
from kitsd.lb.consistent_hash import ConsistentHash
from kitsd.lb.deadline import Deadline, deadline
from kitsd.lb.errors import (
    LimitExceeded,
    NoEndpointsError,
    RetryBudgetExhausted,
    RetryError,
    RetryTimeout,
)
from kitsd.lb.health_check import GrpcCheck, HttpCheck
from kitsd.lb.health_checkers import AsyncHealthCheckers, HealthCheckers
from kitsd.lb.hedging_policy import Hedge
from kitsd.lb.least_loaded import LeastLoaded
from kitsd.lb.outlier_detection import CountedError, OutlierDetection
from kitsd.lb.peak_ewma import PeakEWMA
from kitsd.lb.peer_rank import PeerRank
from kitsd.lb.random import Random
from kitsd.lb.retry import AsyncHedgedEndpoint, HedgedEndpoint, retry, retry_async
from kitsd.lb.retry_budget import RetryBudget
from kitsd.lb.round_robin import RoundRobin
from kitsd.lb.slow_start import SlowStart
from kitsd.lb.weighted import Weighted
from kitsd.lb.zones import Zones

__all__ = [
    "AIMDLimit",
    "Aperture",
    "AsyncHealthCheckers",
    "AsyncHedgedEndpoint",
    "Balancer",
    "ConcurrencyLimiter",
    "ConsistentHash",
    "CountedError",
    "Deadline",
    "GradientLimit",
    "GrpcCheck",
    "HealthCheckers",
    "Hedge",
    "HedgedEndpoint",
    "HttpCheck",
    "LeastLoaded",
    "LimitExceeded",
    "NoEndpointsError",
    "OutlierDetection",
    "PeakEWMA",
    "PeerRank",
    "Pick",
    "Picker",
    "Random",
    "RetryBudget",
    "RetryBudgetExhausted",
    "RetryError",
    "RetryTimeout",
    "RoundRobin",
    "SlowStart",
    "Weighted",
    "Zones",
    "deadline",
    "remaining",
    "retry",
    "retry_async",
]
