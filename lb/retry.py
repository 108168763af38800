"""Retry over a balancer (go-kit's ``lb.Retry`` / ``lb.RetryWithCallback``), sync and asyncio.

One retried call, start to end, is in this file:

1. The deadline (``now + timeout``) is set for :func:`lb.remaining`; in asyncio
   a :class:`lb.timer.DeadlineTimer` also cancels the attempt in flight at it.
2. An attempt asks the balancer for an endpoint — ``balancer.pick(exclude)`` for
   a :class:`lb.Picker` (the built-in balancers), where ``exclude`` holds the
   instances that already failed in this call; ``balancer.endpoint()``, re-asked
   a bounded number of times when it hands back a failed endpoint, for any other
   balancer — and calls it.
3. The outcome goes back with ``balancer.report(pick, error)`` (Pickers only):
   that is how the balancer ejects instances, with the state it owns.
4. After a failure the pure :class:`lb.retry_policy.RetryCall` (built lazily, so
   the happy path never makes one) says whether to wait and try again or give up.

Both drivers share every step but the two that differ (how to call the
endpoint and how to wait), so they cannot drift apart.

Under churn a call fails only when every attempt meets a down instance, each
a different one.  Instances whose crash shows at once (refused or reset
connections) are ejected on first contact, so that takes several crashes the
balancer has not yet seen; a crash that shows late (a listener that still takes
connections, errors that are not connection-level) can keep two or three dead
instances in rotation at a time.  Size ``max_attempts`` for that: see
``tests/lb/test_load.py`` for figures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, cast, overload

import tenacity

from kitsd.core.deadline import current_deadline, reset_deadline, set_deadline
from kitsd.core.endpoint import AsyncEndpoint, Endpoint
from kitsd.core.errors import MisuseError
from kitsd.core.observe import DEFAULT_SERVICE, HUB, CallWatch, watch_call
from kitsd.lb.balancer import Balancer, Pick
from kitsd.lb.errors import RetryTimeout
from kitsd.lb.hedging import (
    Discard,
    Hedge,
    HedgedEndpoint,
    check_discard,
    hedged_async,
    hedged_sync,
)
from kitsd.lb.pool import identity_key
from kitsd.lb.retry_budget import RetryBudget
from kitsd.lb.retry_policy import Callback, GiveUp, RetryCall, WaitFunction, validate
from kitsd.lb.timer import DeadlineTimer

__all__ = ["retry", "retry_async"]

#: A tenacity wait strategy: ``wait(retry_call_state) -> seconds``.
TenacityWait = Callable[[tenacity.RetryCallState], float]

PickFunction = Callable[[Collection[str]], Pick]
#: A keyed balancer's ``pick_for(request, exclude)`` (:class:`lb.ConsistentHash`).
PickForFunction = Callable[[Any, Collection[str]], Pick]
ReportFunction = Callable[[Pick, BaseException | None], None]


@overload
def retry(
    max_attempts: int,
    timeout: float,
    balancer: Balancer,
    *,
    callback: Callback | None = None,
    wait: TenacityWait | None = None,
    budget: RetryBudget | None = None,
    hedge: None = None,
    name: str = DEFAULT_SERVICE,
    discard: Discard | None = None,
) -> Endpoint: ...


@overload
def retry(
    max_attempts: int,
    timeout: float,
    balancer: Balancer,
    *,
    callback: Callback | None = None,
    wait: TenacityWait | None = None,
    budget: RetryBudget | None = None,
    hedge: Hedge,
    name: str = DEFAULT_SERVICE,
    discard: Discard | None = None,
) -> HedgedEndpoint: ...


@overload
def retry(
    max_attempts: int,
    timeout: float,
    balancer: Balancer,
    *,
    callback: Callback | None = None,
    wait: TenacityWait | None = None,
    budget: RetryBudget | None = None,
    hedge: Hedge | None = None,
    name: str = DEFAULT_SERVICE,
    discard: Discard | None = None,
) -> Endpoint: ...  # a HedgedEndpoint when hedge is given: isinstance() it to close()


def retry(
    max_attempts: int,
    timeout: float,
    balancer: Balancer,
    *,
    callback: Callback | None = None,
    wait: TenacityWait | None = None,
    budget: RetryBudget | None = None,
    hedge: Hedge | None = None,
    name: str = DEFAULT_SERVICE,
    discard: Discard | None = None,
) -> Endpoint | HedgedEndpoint:
    """An endpoint that calls ``balancer.endpoint()``'s endpoint, retrying failures.

    ``max_attempts`` counts every attempt (``1`` means no retry); ``timeout`` seconds
    covers all attempts together.  A call made inside ``with lb.deadline(s):`` (or
    inside an attempt of another retried call) gets the earlier of its endpoint's
    deadline and that one: one endpoint serves calls with any per-call deadline
    (:mod:`lb.deadline`); one already expired raises :class:`lb.RetryTimeout`
    without an attempt.  Errors from the balancer and from the endpoint
    both count.  ``callback(attempt, error) -> (keep_trying, replacement)``
    replaces the default rule (keep trying while ``attempt < max_attempts``).

    Raises :class:`lb.RetryError` when it gives up and :class:`lb.RetryTimeout` (a
    ``TimeoutError``) past the deadline; both carry ``.errors``.  A sync endpoint
    cannot be interrupted: it should bound itself by :func:`lb.remaining` (the
    ``sd.http`` endpoints do); a success that lands after the deadline is returned.
    Within one call an instance that failed is not picked again while others
    remain; the balancer hears of every outcome (:class:`lb.Picker`) and ejects
    instances by its :class:`lb.OutlierDetection`.  ``wait`` is a tenacity wait
    strategy (e.g. ``tenacity.wait_random_exponential(multiplier=0.01, max=1)``)
    slept between attempts, never past the deadline.  Safe to call from many threads.
    ``name`` labels this stack's calls for observers (:mod:`kitsd.core.observe`): give the
    service's name, never a request-derived value.

    ``budget`` (an :class:`lb.RetryBudget`, shareable) bounds retries across calls:
    each call deposits, each retry withdraws, and a refused retry ends the call
    with an :class:`lb.RetryError` whose final error is
    :class:`lb.RetryBudgetExhausted` ("retry budget exhausted").

    ``hedge`` (an :class:`lb.Hedge`; idempotent requests only, opt-in) sends a
    second attempt to a different instance when the first has not answered
    after the hedge's delay, and takes the first answer; see :mod:`lb.hedging`.
    Here the attempts then run on a small thread pool owned by the returned
    endpoint, which has ``close()`` (and is a context manager): call it when
    done; it returns at once (attempts still running end by their deadline).

    ``discard(result)`` is called with every answer the call will not return —
    a hedge's losing answer, as soon as the race is decided, or when it lands
    later — to release what it holds (an ``httpx.Response``: close it, so its
    connection goes back to the pool).  For :func:`retry_async` it may return an
    awaitable, which is awaited.  Its errors are logged, never raised.  Unused
    without ``hedge``: then every answer is the caller's.

    A balancer with ``pick_for(request, exclude)`` (:class:`lb.ConsistentHash`)
    is asked with each call's request.

    Raises ``TypeError`` for a balancer without ``endpoint()``, a callback or wait
    that is not callable, and :class:`sd.MisuseError` (a ``ValueError``) for
    ``max_attempts < 1`` or a timeout that is not a finite number > 0.
    """
    validate(max_attempts, timeout)
    _check_name(name)  # kitsd.observe
    pick, report = _steering(balancer)
    pick_for = _keyed(balancer)
    make_call = _call_factory(max_attempts, timeout, callback, wait, report, budget)
    deposit = None if budget is None else budget.deposit
    check_discard(discard)
    if hedge is not None:  # hedged calls are not reported to the event seam yet
        return hedged_sync(hedge, timeout, pick, pick_for, report, make_call, budget, discard)
    hub = HUB  # kitsd.observe

    def retrying(request: Any) -> Any:
        if deposit is not None:
            deposit()
        start = time.monotonic()
        deadline, seconds = start + timeout, timeout
        outer = current_deadline()  # lb.deadline, or an enclosing call's
        if outer is not None and outer < deadline:
            deadline, seconds = outer, outer - start
        deadline_token = set_deadline(deadline)
        watch = watch_call(name, start) if hub.observers else None  # kitsd.observe
        try:
            if deadline <= start:
                raise RetryTimeout(0.0, [])  # noqa: TRY301 - an ending observers see
            call: _Call | None = None
            exclude: Collection[str] = ()
            while True:
                chosen: Pick | None = None
                try:
                    chosen = pick(exclude) if pick_for is None else pick_for(request, exclude)
                    if watch is not None:  # kitsd.observe
                        watch.attempt(chosen.instance)
                    response = chosen.endpoint(request)
                except Exception as error:  # noqa: BLE001 - every failure counts, as go-kit
                    if watch is not None:  # kitsd.observe
                        watch.attempt_ended(error)
                    call = call or make_call(start, seconds)
                    delay = call.failed(chosen, error)
                    exclude = call.exclude
                    if delay:
                        time.sleep(delay)
                else:
                    if watch is not None:  # kitsd.observe
                        watch.attempt_ended(None)
                    report(chosen, None)
                    return response
        except BaseException as error:  # kitsd.observe
            if watch is not None:
                watch.finished(error)
            raise
        finally:
            if watch is not None:  # kitsd.observe: a no-op after an error
                watch.finished(None)
            reset_deadline(deadline_token)

    return retrying


def retry_async(
    max_attempts: int,
    timeout: float,
    balancer: Balancer,
    *,
    callback: Callback | None = None,
    wait: TenacityWait | None = None,
    budget: RetryBudget | None = None,
    hedge: Hedge | None = None,
    name: str = DEFAULT_SERVICE,
    discard: Discard | None = None,
) -> AsyncEndpoint:
    """The asyncio twin of :func:`retry`: the balancer hands out async endpoints.

    Here the deadline also cancels the attempt in flight, so a timed-out call
    leaves nothing running; the cancelled attempt's error is not counted.  An
    outer cancellation or timeout passes through as itself.  With ``hedge`` the
    losing attempt is cancelled, and an answer it already had goes to ``discard``.
    """
    validate(max_attempts, timeout)
    _check_name(name)  # kitsd.observe
    pick, report = _steering(balancer)
    pick_for = _keyed(balancer)
    make_call = _call_factory(max_attempts, timeout, callback, wait, report, budget)
    deposit = None if budget is None else budget.deposit
    check_discard(discard)
    if hedge is not None:  # hedged calls are not reported to the event seam yet
        return hedged_async(hedge, timeout, pick, pick_for, report, make_call, budget,
                            discard)
    hub = HUB  # kitsd.observe
    timers: list[DeadlineTimer] = []  # the last loop's timer; one slot, swapped whole

    async def retrying(request: Any) -> Any:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("lb.retry_async endpoints must be awaited in an asyncio task")
        loop = task.get_loop()
        timer = timers[0] if timers and timers[0].loop is loop else None
        if timer is None:
            timer = DeadlineTimer(loop, timeout)
            timers[:] = [timer]
        if deposit is not None:
            deposit()
        start = time.monotonic()
        deadline, seconds = start + timeout, timeout
        outer = current_deadline()  # lb.deadline, or an enclosing call's
        if outer is not None and outer < deadline:
            deadline, seconds = outer, outer - start
            attempt = timer.start(task, loop.time() + (outer - start))
        else:
            attempt = timer.start(task)
        deadline_token = set_deadline(deadline)
        call: _Call | None = None
        watch = watch_call(name, start) if hub.observers else None  # kitsd.observe
        try:
            if deadline <= start:
                raise RetryTimeout(0.0, [])  # noqa: TRY301 - an ending observers see
            exclude: Collection[str] = ()
            while True:
                chosen: Pick | None = None
                try:
                    chosen = pick(exclude) if pick_for is None else pick_for(request, exclude)
                    if watch is not None:  # kitsd.observe
                        watch.attempt(chosen.instance)
                    response = await cast(Callable[[Any], Awaitable[Any]], chosen.endpoint)(
                        request
                    )
                except Exception as error:  # noqa: BLE001 - every failure counts, as go-kit
                    if watch is not None:  # kitsd.observe
                        watch.attempt_ended(error)
                    call = call or make_call(start, seconds)
                    delay = call.failed(chosen, error)
                    exclude = call.exclude
                    if delay:
                        await asyncio.sleep(delay)
                else:
                    if watch is not None:  # kitsd.observe
                        watch.attempt_ended(None)
                    report(chosen, None)
                    return response
        except asyncio.CancelledError as cancelled:
            if attempt.finish(cancelled=True):  # the deadline's cancel, not someone else's
                timed_out = RetryTimeout(seconds, call.policy.errors if call else [])
                _finished(watch, timed_out)  # kitsd.observe
                raise timed_out from None
            _finished(watch, cancelled)  # kitsd.observe
            raise
        except BaseException as error:  # kitsd.observe
            if watch is not None:
                watch.finished(error)
            raise
        finally:
            if watch is not None:  # kitsd.observe: a no-op after an error
                watch.finished(None)
            attempt.finish(cancelled=False)  # a no-op if already finished
            reset_deadline(deadline_token)

    return retrying


def _finished(watch: CallWatch | None, error: BaseException | None) -> None:
    """kitsd.observe: report the end of an observed call (idempotent)."""
    if watch is not None:
        watch.finished(error)


def _check_name(name: object) -> None:
    """kitsd.observe: the stack's label must be a non-empty string."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str (the service's name), got {name!r}")
    if not name:
        raise MisuseError("name must not be empty")


class _Call:
    """What one call keeps once an attempt has failed: the policy's state and the
    instances to avoid.  Shared by both drivers."""

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


def _call_factory(
    max_attempts: int,
    timeout: float,
    callback: Callback | None,
    wait: TenacityWait | None,
    report: ReportFunction,
    budget: RetryBudget | None = None,
) -> Callable[[float, float], _Call]:
    """Check the options once; return what builds a call's :class:`_Call` after its
    first failure (from the call's start and its seconds: the timeout, or less)."""
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable(attempt, error), got {callback!r}")
    if budget is not None and not isinstance(budget, RetryBudget):
        raise TypeError(f"budget must be an lb.RetryBudget or None, got {budget!r}")
    wait_function = _adapt_wait(wait)
    allow = None if budget is None else budget.try_withdraw

    def make(start: float, seconds: float) -> _Call:
        policy = RetryCall(max_attempts=max_attempts, timeout=seconds, start=start,
                           callback=callback, wait=wait_function, allow=allow)
        return _Call(policy, report)

    return make


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
            return Pick("", chosen)  # named only if it fails (see _Call.failed)
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


def _adapt_wait(wait: TenacityWait | None) -> WaitFunction | None:
    if wait is None:
        return None
    if not callable(wait):
        raise TypeError(f"wait must be a tenacity wait strategy, got {wait!r}")

    def wait_function(attempt: int, error: BaseException, elapsed: float) -> float:
        state = tenacity.RetryCallState(cast(tenacity.BaseRetrying, None), None, (), {})
        state.attempt_number = attempt
        state.outcome = tenacity.Future.construct(attempt, error, True)
        state.outcome_timestamp = state.start_time + elapsed
        return float(wait(state))

    return wait_function
