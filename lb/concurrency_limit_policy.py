"""Adaptive concurrency limits, free of I/O: :class:`GradientLimit` and :class:`AIMDLimit`
(Netflix concurrency-limits' designs) and the :class:`Admission` that applies one.

Theory of operation
-------------------
A service has a capacity: so many calls it can work on at once.  Past it, calls
queue, every call gets slower, callers time out and retry, and the service does
the work of calls nobody waits for any more.  A client-side limit keeps the
calls a stack has in flight near what the service can take and *refuses* the
rest at once (``lb.LimitExceeded``, a ``Rejected`` outcome): the caller learns
in microseconds, not after a timeout, and the service keeps answering the calls
it accepted at its normal speed.  Nobody configures the capacity: the limit
learns it from how the answers come back.

:class:`Admission` counts the calls in flight: :meth:`~Admission.acquire` admits a
call while fewer than the limit are in flight; :meth:`~Admission.release` books
how it went — ``"success"`` with its latency, ``"dropped"`` (it timed out, or the
service said it is overloaded: 503, 429), or ``"ignored"`` (an error that says
nothing about load, such as a 404) — and the algorithm moves the limit.

**Gradient** (the default; Netflix's ``GradientLimit``, with BBR's way of keeping
the no-load latency honest).  The *baseline* is the lowest latency seen: what a
call costs with no queue.  Each answer's latency ``rtt`` gives a gradient ::

    gradient = clamp(tolerance * baseline / rtt, 0.5, 1)
    new      = limit * gradient + queue_size           (limit * backoff on a drop)
    limit    = new                                     if new >= limit
             = (1 - smoothing) * limit + smoothing * new   otherwise

The limit moves once per *round*: ``window`` answers of calls admitted since it
last moved, judged by their mean latency.  An answer to a call admitted under an
earlier limit says how that limit did, not this one; reacting to it (as a
per-answer update does) overshoots by a whole round trip and oscillates
between a flood and a trickle.

While answers are as fast as the baseline allows (``rtt <= tolerance *
baseline``), the limit grows by ``queue_size`` per answer; once a queue builds,
latency rises and the limit shrinks towards what keeps latency within the
tolerance.  It settles where ``limit * (1 - gradient) = queue_size``: a service
of capacity ``C`` sees about ``tolerance * C + queue_size`` calls in flight and
answers within about ``tolerance + queue_size / C`` times its no-load latency.
The limit does not grow while the stack uses under half of it (the callers are
the bottleneck, not the service: growing would only let a later burst through).

The baseline is a minimum, which a queue cannot push up — but a service that
really got slower (a new release, a bigger data set) must be able to raise it.
Netflix's versions smooth it with a moving average and drift upward under
sustained load; here, as BBR does with its ProbeRTT, when no answer has
confirmed the baseline (come within ``tolerance`` of it) for
``probe_interval`` seconds, the limit halves for a moment (``probe_time``, or
four baselines if longer), the queue drains, and the lowest latency of the
calls started in that moment becomes the baseline.  A slower service is
learnt within one interval, and this client's own queue never becomes the
baseline.  (Many clients sharing one service each probe alone: a probe cannot
drain the queue the others keep full, so under overload sustained across
probes the baseline can rise; each rise is bounded by what the probe saw.)

**AIMD** (Netflix's ``AIMDLimit``, with TCP Reno's increase): a drop (or an answer
slower than ``timeout``) multiplies the limit by ``backoff`` — once per round,
as TCP halves once per window: drops of calls admitted before the last
back-off are already paid for.  Successes with at least half the limit in
flight grow it: by one each until the first back-off (TCP's slow start: the
limit doubles per round trip while it looks for the capacity), then by one per
*round* — ``1 / limit`` each, TCP's congestion avoidance.  Netflix's version
adds one per success throughout; at three times the capacity that grows the
limit by a whole round's worth of calls in the round trip before the first slow
answer says "too many", and the queue it lets build is the latency: with
``timeout=0.1`` on a 50 ms service its p99 was 3.2x the unloaded one (a
simulation, ``tests/lb/test_concurrency_limit_policy.py``; 3.4x in
``bench_concurrency_limit``), 1.8x with the increase per round.

AIMD reacts only to drops and answers slower than ``timeout``: it suits
services that shed load themselves (answer 503 or 429 under overload), or a
``timeout`` set to about twice the service's no-load latency.  Left without one,
an overloaded service that queues rather than sheds drops nothing until calls
reach their deadline, and the queue is the p99 (18x at 3x the capacity in the
simulation).  It has no default derived from the latencies it sees on
purpose: a threshold relative to the lowest latency seen collapses the limit to
its minimum, and keeps it there, when the service really gets slower, unless the
baseline is re-measured by draining the queue for a moment — which is what the
gradient limit does; use :class:`GradientLimit` (the default) when you cannot
name a timeout.

Both keep the limit within ``[minimum, maximum]``.  :meth:`Admission.acquire`
takes a ``scale`` (at most 1) that lowers the limit for a moment: slow start
passes the warmth of a fleet whose every instance is new, so a cold fleet gets
calls in proportion to its warmth (``lb.slow_start``).

Nothing here locks or reads a clock: every method takes ``now``.
:class:`lb.ConcurrencyLimiter` (``lb/concurrency_limit.py``) drives an
:class:`Admission` under its lock, with the clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

from kitsd.core import validate
from kitsd.core.errors import ConnectionFailure, Leaving, MisuseError, Rejected

__all__ = [
    "OUTCOMES",
    "OVERLOAD_STATUSES",
    "AIMDLimit",
    "AIMDState",
    "Admission",
    "GradientLimit",
    "GradientState",
    "LimitAlgorithm",
    "LimitPolicy",
    "Outcome",
    "outcome_of",
]

#: How a call admitted under a limit ended.
Outcome = Literal["success", "dropped", "ignored"]
OUTCOMES: frozenset[str] = frozenset({"success", "dropped", "ignored"})


#: Statuses that say "overloaded": the service shed the call.
OVERLOAD_STATUSES = frozenset({429, 503})


def outcome_of(error: BaseException | None) -> Outcome:
    """How a call ended, for the limit: ``"success"`` without an error; ``"dropped"``
    for a timeout (``TimeoutError``, so :class:`lb.RetryTimeout` too) or a status
    that says overloaded (an int ``status_code`` of 429 or 503) — in the error or,
    for an :class:`lb.RetryError`, in any of its attempts' ``errors``; ``"ignored"``
    for the rest (a 404 or a refused connection say nothing about load; a call
    refused before it left, a ``Rejected``, or a ``Leaving`` instance neither)."""
    if error is None:
        return "success"
    attempts = getattr(error, "errors", None)
    errors = [error, *attempts] if isinstance(attempts, list) else [error]
    for each in errors:
        if isinstance(each, Rejected | Leaving | ConnectionFailure):
            continue
        status = getattr(each, "status_code", None)
        if isinstance(each, TimeoutError) or (
                isinstance(status, int) and status in OVERLOAD_STATUSES):
            return "dropped"
    return "ignored"


class LimitAlgorithm(Protocol):
    """The state of one limit: its current value, moved by samples."""

    @property
    def limit(self) -> float: ...

    def sample(self, now: float, started: float, rtt: float, in_flight: int,
               dropped: bool) -> None: ...

    def effective(self, now: float) -> float:
        """The limit to apply at ``now`` (a gradient's probe lowers it briefly)."""
        ...


class LimitPolicy(Protocol):
    """Settings that make a :class:`LimitAlgorithm` (``GradientLimit``, ``AIMDLimit``)."""

    @property
    def initial(self) -> int: ...

    def start(self) -> LimitAlgorithm: ...


def _check_bounds(initial: object, minimum: object, maximum: object) -> None:
    low = validate.integer("minimum", minimum, minimum=1)
    high = validate.integer("maximum", maximum, minimum=1)
    start = validate.integer("initial", initial, minimum=1)
    if high < low:
        raise MisuseError(f"maximum must be >= minimum ({low}), not {high}")
    if not low <= start <= high:
        raise MisuseError(f"initial must be within [minimum, maximum] = [{low}, {high}], "
                          f"not {start}")


@dataclass(frozen=True, slots=True)
class GradientLimit:
    """An adaptive concurrency limit that follows latency (see the module docstring).

    * ``initial`` (default 20), ``minimum`` (default 1), ``maximum`` (default 1000):
      calls in flight per stack.
    * ``tolerance`` (>= 1, default 1.5): how much slower than the baseline answers
      may get before the limit shrinks.
    * ``queue_size`` (> 0, default 4): how far the limit reaches past what keeps
      latency within tolerance (how fast it grows).
    * ``smoothing`` (in (0, 1], default 0.2): how much of a decrease applies at once.
    * ``backoff`` (in [0.5, 1), default 0.9): the factor a drop (a timeout, a 503)
      applies.
    * ``probe_interval`` (seconds, default 10) and ``probe_time`` (seconds,
      default 0.2): how often an unconfirmed baseline is measured again, and for
      how long.

    Give it as ``limit=`` to :func:`lb.retry`, :func:`lb.retry_async` or the
    transport; each stack keeps its own state.  Raises
    :class:`~kitsd.core.errors.WrongTypeError` / :class:`~kitsd.core.errors.MisuseError`
    naming a bad setting.
    """

    initial: int = 20
    minimum: int = 1
    maximum: int = 1000
    tolerance: float = 1.5
    queue_size: float = 4.0
    smoothing: float = 0.2
    backoff: float = 0.9
    probe_interval: float = 10.0
    probe_time: float = 0.2
    window: int = 10

    def __post_init__(self) -> None:
        _check_bounds(self.initial, self.minimum, self.maximum)
        validate.number("tolerance", self.tolerance, minimum=1.0)
        validate.number("queue_size", self.queue_size, above=0.0)
        validate.number("smoothing", self.smoothing, above=0.0, maximum=1.0)
        validate.number("backoff", self.backoff, minimum=0.5, below=1.0)
        interval = validate.seconds("probe_interval", self.probe_interval)
        validate.seconds("probe_time", self.probe_time, maximum=interval)
        validate.integer("window", self.window, minimum=1)

    def start(self) -> GradientState:
        """A fresh state under these settings."""
        return GradientState(self)


@dataclass(frozen=True, slots=True)
class AIMDLimit:
    """An additive-increase, multiplicative-decrease concurrency limit (see the module
    docstring): successes with at least half the limit in flight add one each
    until the first back-off, then one per round of answers; a drop, or an answer
    slower than ``timeout`` seconds (``None``: only drops), multiplies it by
    ``backoff`` (in [0.5, 1), default 0.9), once per round.

    ``initial`` (default 20), ``minimum`` (default 1), ``maximum`` (default 1000).
    For a service that queues rather than sheds load, set ``timeout`` to about
    twice its no-load latency, or use :class:`GradientLimit`, which needs no
    timeout.  Give it as ``limit=``, as :class:`GradientLimit`.
    """

    initial: int = 20
    minimum: int = 1
    maximum: int = 1000
    backoff: float = 0.9
    timeout: float | None = None

    def __post_init__(self) -> None:
        _check_bounds(self.initial, self.minimum, self.maximum)
        validate.number("backoff", self.backoff, minimum=0.5, below=1.0)
        validate.optional_seconds("timeout", self.timeout)

    def start(self) -> AIMDState:
        """A fresh state under these settings."""
        return AIMDState(self)


class GradientState:
    """The state of a :class:`GradientLimit` (the limit, the baseline, the round)."""

    __slots__ = ("_confirmed", "_count", "_dropped", "_in_flight", "_limit", "_probe_start",
                 "_probe_until", "_round", "_total", "baseline", "policy")

    def __init__(self, policy: GradientLimit) -> None:
        self.policy = policy
        self._limit = float(policy.initial)
        self.baseline: float | None = None  # the no-load latency, seconds
        self._confirmed = float("-inf")  # when an answer last came within tolerance of it
        self._probe_start = float("inf")  # the last probe's start
        self._probe_until = float("-inf")  # ... and end
        # the current round: calls started since the limit last moved
        self._round = float("-inf")
        self._count = 0
        self._total = 0.0  # their latencies, summed
        self._in_flight = 0  # the most in flight when one of them ended
        self._dropped = False

    @property
    def limit(self) -> float:
        return self._limit

    def probing(self, now: float) -> bool:
        """Whether a baseline probe is under way at ``now``."""
        return now < self._probe_until

    def effective(self, now: float) -> float:
        if now >= self._probe_until and (self.baseline is not None
                                         and now - self._confirmed > self.policy.probe_interval):
            # Nothing confirmed the baseline for a while: measure it again.
            self._probe_start = now
            self._probe_until = now + max(self.policy.probe_time, 4.0 * self.baseline)
            self._confirmed = self._probe_until  # the next probe comes an interval later
            self.baseline = None  # the probe's calls set it afresh
        if now < self._probe_until:
            return max(float(self.policy.minimum), self._limit / 2.0)
        return self._limit

    def sample(self, now: float, started: float, rtt: float, in_flight: int,
               dropped: bool) -> None:
        policy = self.policy
        if rtt <= 0.0:
            rtt = 1e-9
        baseline = self.baseline
        if self._probe_start <= started < self._probe_until:
            # a call of the probe, made while the queue drained: it sets the baseline
            if not dropped and (baseline is None or rtt < baseline):
                self.baseline = rtt
            return
        if now < self._probe_until:
            return  # calls made before the probe: their latency says nothing new now
        if not dropped:
            if baseline is None or rtt < baseline:
                self.baseline = baseline = rtt
            if rtt <= policy.tolerance * baseline:
                self._confirmed = max(self._confirmed, now)
        if started < self._round:
            return  # admitted under an earlier limit: its latency reflects that one
        self._count += 1
        self._total += rtt
        self._dropped = self._dropped or dropped
        self._in_flight = max(self._in_flight, in_flight)
        if self._count < policy.window or baseline is None:
            return
        # The round is over: move the limit once, by the round's mean latency.
        rtt = self._total / self._count
        in_flight, dropped = self._in_flight, self._dropped
        self._round, self._count, self._total = now, 0, 0.0
        self._in_flight, self._dropped = 0, False
        limit = self._limit
        if dropped:
            new = limit * policy.backoff
        else:
            gradient = min(1.0, max(0.5, policy.tolerance * baseline / rtt))
            new = limit * gradient + policy.queue_size
        if new < limit:
            new = (1.0 - policy.smoothing) * limit + policy.smoothing * new
        elif in_flight * 2 < limit:
            return  # the callers are the bottleneck: no evidence the service takes more
        self._limit = min(float(policy.maximum), max(float(policy.minimum), new))


class AIMDState:
    """The state of an :class:`AIMDLimit`."""

    __slots__ = ("_limit", "_round", "policy")

    def __init__(self, policy: AIMDLimit) -> None:
        self.policy = policy
        self._limit = float(policy.initial)
        self._round = float("-inf")  # when the limit last backed off (-inf: never)

    @property
    def limit(self) -> float:
        return self._limit

    def effective(self, now: float) -> float:
        return self._limit

    def sample(self, now: float, started: float, rtt: float, in_flight: int,
               dropped: bool) -> None:
        policy = self.policy
        limit = self._limit
        if dropped or (policy.timeout is not None and rtt > policy.timeout):
            if started < self._round:
                return  # admitted before the last back-off: it is already paid for
            self._round = now
            limit = math.floor(limit * policy.backoff)
        elif in_flight * 2 >= limit:
            # one per success until the first back-off, then one per round
            limit += 1.0 if self._round == float("-inf") else 1.0 / limit
        else:
            return
        self._limit = min(float(policy.maximum), max(float(policy.minimum), limit))


class Admission:
    """Calls in flight under one limit (see the module docstring).  Not thread-safe
    by itself: its owner calls it under a lock."""

    __slots__ = ("algorithm", "in_flight", "rejected")

    def __init__(self, policy: LimitPolicy) -> None:
        self.algorithm = policy.start()
        self.in_flight = 0
        self.rejected = 0  # calls refused so far

    @property
    def limit(self) -> int:
        """The current limit (calls in flight), rounded down, at least 1."""
        return max(1, int(self.algorithm.limit))

    def acquire(self, now: float, scale: float = 1.0) -> bool:
        """Admit a call at ``now`` if fewer than the limit (times ``scale``, at most 1,
        never below one call) are in flight; count it in flight if so."""
        limit = self.algorithm.effective(now)
        if scale < 1.0:
            limit *= max(scale, 0.0)
        if self.in_flight >= max(1, int(limit)):
            self.rejected += 1
            return False
        self.in_flight += 1
        return True

    def release(self, now: float, started: float, outcome: Outcome) -> None:
        """A call admitted at ``started`` ended at ``now`` with ``outcome``."""
        in_flight = self.in_flight
        self.in_flight = in_flight - 1 if in_flight > 0 else 0
        if outcome == "ignored":
            return
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, not {outcome!r}")
        self.algorithm.sample(now, started, now - started, in_flight, outcome == "dropped")
