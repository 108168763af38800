"""What every retry driver shares: the options checked once per retrying endpoint
(:class:`Setup`), how a balancer is steered (``pick``/``report``), and what one call
keeps once an attempt has failed (:class:`Call`).

The drivers themselves are the loops in ``lb/_async/`` (written by hand) and
``lb/_sync/`` (generated from them by ``.ci/unasync.py``): the plain loop of
:func:`lb.retry` / :func:`lb.retry_async` and the hedged one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any, cast

from kitsd.core.endpoint import Endpoint
from kitsd.core.errors import MisuseError
from kitsd.core.observe import DEFAULT_SERVICE
from kitsd.lb import _tenacity
from kitsd.lb.balancer import Pick
from kitsd.lb.concurrency_limit import ConcurrencyLimiter, LimitPolicy, check_limit
from kitsd.lb.pool import identity_key
from kitsd.lb.retry_budget import RetryBudget
from kitsd.lb.retry_policy import Callback, GiveUp, RetryCall, WaitFunction, validate

__all__ = [
    "Call",
    "Discard",
    "PickForFunction",
    "PickFunction",
    "ReportFunction",
    "Setup",
    "Wait",
    "check_discard",
    "setup",
]

PickFunction = Callable[[Collection[str]], Pick]
#: A keyed balancer's ``pick_for(request, exclude)`` (:class:`lb.ConsistentHash`).
PickForFunction = Callable[[Any, Collection[str]], Pick]
ReportFunction = Callable[[Pick, BaseException | None], None]
#: ``discard(result)``: release what an answer the call will not return holds (a
#: hedge's losing answer).  For asyncio it may return an awaitable, awaited.
Discard = Callable[[Any], object]
#: What ``wait=`` takes: ``wait(attempt, error, elapsed) -> seconds``
#: (:data:`lb.retry_policy.WaitFunction`), or a tenacity wait strategy (any
#: ``callable(retry_state) -> seconds``), adapted by :mod:`lb._tenacity`.
Wait = WaitFunction | Callable[[Any], float]


class Call:
    """What one call keeps once an attempt has failed: the policy's state and the
    instances to avoid.  Shared by every driver."""

    __slots__ = ("exclude", "policy", "report")

    def __init__(self, policy: RetryCall, report: ReportFunction) -> None:
        self.policy = policy
        self.report = report
        self.exclude: set[str] = set()

    def failed(self, chosen: Pick | None, error: Exception) -> float:
        """Book the failure; return the delay before the next attempt, or raise the
        give-up error."""
        if chosen is not None:
            self.report(chosen, error)
        decision = self.policy.failed(error, time.monotonic())
        if isinstance(decision, GiveUp):
            raise decision.error from error
        if chosen is not None:
            # An empty name: a balancer that is not a Picker; go by the endpoint.
            self.exclude.add(chosen.instance or identity_key(chosen.endpoint))
        return decision.delay


class Setup:
    """The options of one retrying endpoint, checked once; read by its driver."""

    __slots__ = ("budget", "deposit", "discard", "limiter", "make_call", "name", "pick",
                 "pick_for", "report", "timeout")

    def __init__(self, *, timeout: float, pick: PickFunction, pick_for: PickForFunction | None,
                 report: ReportFunction, make_call: Callable[[float, float], Call],
                 budget: RetryBudget | None, name: str, discard: Discard | None,
                 limiter: ConcurrencyLimiter | None = None) -> None:
        self.timeout = timeout
        self.pick = pick
        self.pick_for = pick_for
        self.report = report
        #: ``make_call(start, seconds)``: a call's :class:`Call`, after its first failure
        self.make_call = make_call
        self.budget = budget
        self.deposit = None if budget is None else budget.deposit
        #: the stack's label for observers (:mod:`kitsd.core.observe`)
        self.name = name
        self.discard = discard
        #: the endpoint's own adaptive concurrency limit (``limit=``), or None
        self.limiter = limiter

    def choose(self, request: Any, exclude: Collection[str]) -> Pick:
        """The balancer's pick for ``request``, avoiding ``exclude``."""
        pick_for = self.pick_for
        return self.pick(exclude) if pick_for is None else pick_for(request, exclude)


def setup(
    max_attempts: int,
    timeout: float,
    balancer: object,
    *,
    callback: Callback | None = None,
    wait: Wait | None = None,
    budget: RetryBudget | None = None,
    name: str = DEFAULT_SERVICE,
    discard: Discard | None = None,
    limit: LimitPolicy | None = None,
) -> Setup:
    """Check the options of :func:`lb.retry` / :func:`lb.retry_async` (raising
    ``TypeError`` / :class:`sd.MisuseError` naming the bad one) and gather them."""
    validate(max_attempts, timeout)
    _check_name(name)
    pick, report = _steering(balancer)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable(attempt, error), got {callback!r}")
    if budget is not None and not isinstance(budget, RetryBudget):
        raise TypeError(f"budget must be an lb.RetryBudget or None, got {budget!r}")
    check_discard(discard)
    policy = check_limit(limit)
    limiter = None
    if policy is not None:
        warmth = getattr(balancer, "warmth", None)  # slow start of a fleet all new
        limiter = ConcurrencyLimiter(policy, scale=warmth if callable(warmth) else None)
    wait_function = _tenacity.wait_function(wait)
    allow = None if budget is None else budget.try_withdraw

    def make_call(start: float, seconds: float) -> Call:
        policy = RetryCall(max_attempts=max_attempts, timeout=seconds, start=start,
                           callback=callback, wait=wait_function, allow=allow)
        return Call(policy, report)

    return Setup(timeout=timeout, pick=pick, pick_for=_keyed(balancer), report=report,
                 make_call=make_call, budget=budget, name=name, discard=discard,
                 limiter=limiter)


def check_discard(discard: object) -> None:
    """``TypeError`` unless ``discard`` is ``None`` or callable."""
    if discard is not None and not callable(discard):
        raise TypeError(f"discard must be callable(result) or None, got {discard!r}")


def _check_name(name: object) -> None:
    """kitsd.observe: the stack's label must be a non-empty string."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str (the service's name), got {name!r}")
    if not name:
        raise MisuseError("name must not be empty")


def _no_report(pick: Pick, error: BaseException | None) -> None:
    return None


def _steering(balancer: object) -> tuple[PickFunction, ReportFunction]:
    """``pick(exclude)`` and ``report(pick, error)`` for ``balancer``: its own for a
    :class:`lb.Picker`, else a bounded re-ask over ``endpoint()``."""
    endpoint = getattr(balancer, "endpoint", None)
    if not callable(endpoint):
        raise TypeError(f"balancer must be an lb.Balancer (with endpoint()), got {balancer!r}")
    pick = getattr(balancer, "pick", None)
    report = getattr(balancer, "report", None)
    if callable(pick) and callable(report):
        return cast(PickFunction, pick), cast(ReportFunction, report)
    ask = cast(Callable[[], Endpoint], endpoint)

    def reask(exclude: Collection[str]) -> Pick:
        chosen = ask()
        if not exclude:
            return Pick("", chosen)  # named only if it fails (see Call.failed)
        key = identity_key(chosen)
        for _ in range(len(exclude)):
            if key not in exclude:
                break
            chosen = ask()
            key = identity_key(chosen)
        return Pick(key, chosen)

    return reask, _no_report


def _keyed(balancer: object) -> PickForFunction | None:
    """``balancer.pick_for`` for a balancer that picks by request, else ``None``."""
    pick_for = getattr(balancer, "pick_for", None)
    return cast(PickForFunction, pick_for) if callable(pick_for) else None
