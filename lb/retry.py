"""Retry over a balancer (go-kit's ``lb.Retry`` / ``lb.RetryWithCallback``), sync and asyncio.

:func:`retry` and :func:`retry_async` check their options once
(:mod:`lb._call`) and hand back the retrying endpoint of a driver:

* the loop of one call is written once, for asyncio, in ``lb/_async/retry.py``
  (and ``lb/_async/hedging.py`` with ``hedge=``); the sync drivers in
  ``lb/_sync/`` are generated from them by ``.ci/unasync.py``, which CI runs with
  ``--check``, so the two cannot drift apart;
* what genuinely differs between threads and asyncio (how a deadline interrupts
  a call, how two hedged attempts run side by side) is in two hand-written pairs:
  :mod:`lb._concurrency` and :mod:`lb.hedging`;
* the decisions (wait, try again or give up) are the pure
  :class:`lb.retry_policy.RetryCall`.

Under churn a call fails only when every attempt meets a down instance, each
a different one.  Instances whose crash shows at once (refused or reset
connections) are ejected on first contact, so that takes several crashes the
balancer has not yet seen; a crash that shows late (a listener that still takes
connections, errors that are not connection-level) can keep two or three dead
instances in rotation at a time.  Size ``max_attempts`` for that: see
``tests/lb/test_load.py`` for figures.

Types: the request and response types of the balancer's endpoints carry through
(``lb.retry(3, 1.0, lb.RoundRobin(endpointer))`` over endpoints
``Callable[[int], User]`` is a ``Callable[[int], User]``), as stamina keeps a
decorated function's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypedDict, TypeVar, Unpack, cast, overload

from kitsd.core import validate
from kitsd.lb._async.hedging import AsyncHedgedEndpoint
from kitsd.lb._async.retry import retrying_async
from kitsd.lb._call import Wait, setup
from kitsd.lb._sync.hedging import HedgedEndpoint
from kitsd.lb._sync.retry import retrying
from kitsd.lb.balancer import Balancer
from kitsd.lb.concurrency_limit import LimitPolicy
from kitsd.lb.hedging_policy import Hedge
from kitsd.lb.retry_budget import RetryBudget
from kitsd.lb.retry_policy import Callback

__all__ = ["AsyncHedgedEndpoint", "HedgedEndpoint", "RetryOptions", "Wait", "retry",
           "retry_async"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class RetryOptions(TypedDict, Generic[Resp], total=False):
    """The keyword options of :func:`retry` and :func:`retry_async` but ``hedge``
    (see :func:`retry`; all optional)."""

    callback: Callback | None
    wait: Wait | None
    budget: RetryBudget | None
    name: str
    discard: Callable[[Resp], object] | None
    limit: LimitPolicy | None


@overload
def retry(max_attempts: int, timeout: float, balancer: Balancer[Callable[[Req], Resp]], *,
          hedge: None = None, **options: Unpack[RetryOptions[Resp]]) -> Callable[[Req], Resp]: ...


@overload
def retry(max_attempts: int, timeout: float, balancer: Balancer[Callable[[Req], Resp]], *,
          hedge: Hedge, **options: Unpack[RetryOptions[Resp]]) -> HedgedEndpoint[Req, Resp]: ...


@overload
def retry(max_attempts: int, timeout: float, balancer: Balancer[Callable[[Req], Resp]], *,
          hedge: Hedge | None = None,
          **options: Unpack[RetryOptions[Resp]]) -> Callable[[Req], Resp]: ...
# (the last: a HedgedEndpoint when hedge is given: isinstance() it)


def retry(
    max_attempts: int,
    timeout: float,
    balancer: Balancer[Callable[[Req], Resp]],
    *,
    hedge: Hedge | None = None,
    **options: Unpack[RetryOptions[Resp]],
) -> Callable[[Req], Resp] | HedgedEndpoint[Req, Resp]:
    """An endpoint that calls ``balancer.endpoint()``'s endpoint, retrying failures.

    The keyword options (:class:`RetryOptions`) default to ``None`` but ``name``
    (``kitsd.core.observe.DEFAULT_SERVICE``).

    ``max_attempts`` counts every attempt (``1`` means no retry); ``timeout`` seconds
    covers all attempts together.  A call made inside ``with lb.deadline(s):`` (or
    inside an attempt of another retried call) gets the earlier of its endpoint's
    deadline and that one: one endpoint serves calls with any per-call deadline
    (:mod:`lb.deadline`); one already expired raises :class:`lb.RetryTimeout`
    without an attempt.  Errors from the balancer and from the endpoint both
    count.  ``callback(attempt, error) -> (keep_trying, replacement)`` replaces the
    default rule (keep trying while ``attempt < max_attempts``).

    Raises :class:`lb.RetryError` when it gives up and :class:`lb.RetryTimeout` (a
    ``TimeoutError``) past the deadline; both carry ``.errors``.  A sync endpoint
    cannot be interrupted: it should bound itself by :func:`lb.remaining` (the
    ``sd.http`` endpoints do); a success that lands after the deadline is returned.
    Within one call an instance that failed is not picked again while others
    remain; the balancer hears of every outcome (:class:`lb.Picker`) and ejects
    instances by its :class:`lb.OutlierDetection`.  Safe to call from many threads.
    ``name`` labels this stack's calls for observers (:mod:`kitsd.core.observe`):
    give the service's name, never a request-derived value.

    ``wait(attempt, error, elapsed) -> seconds`` is slept between attempts, never
    past the deadline (``attempt``: failed attempts so far; ``elapsed``: seconds
    since the call began).  A tenacity wait strategy works too, e.g.
    ``tenacity.wait_random_exponential(multiplier=0.01, max=1)`` (adapted by
    :mod:`lb._tenacity`).

    ``budget`` (an :class:`lb.RetryBudget`, shareable) bounds retries across calls:
    each call deposits, each retry withdraws, and a refused retry ends the call
    with an :class:`lb.RetryError` whose final error is
    :class:`lb.RetryBudgetExhausted` ("retry budget exhausted").

    ``hedge`` (an :class:`lb.Hedge`; idempotent requests only, opt-in) sends a
    second attempt to a different instance when the first has not answered
    after the hedge's delay, and takes the first answer; see :mod:`lb.hedging`.
    Here the attempts then run on a small thread pool owned by the returned
    :class:`HedgedEndpoint`, which has ``close()`` (and is a context manager):
    call it when done; it returns at once (attempts still running end by their
    deadline).  Observers hear of hedged calls as of any other, each attempt in
    its own thread's context.

    ``discard(result)`` is called with every answer the call will not return —
    a hedge's losing answer, as soon as the race is decided, or when it lands
    later — to release what it holds (an ``httpx.Response``: close it, so its
    connection goes back to the pool).  For :func:`retry_async` it may return an
    awaitable, which is awaited.  Its errors are logged, never raised.  Unused
    without ``hedge``: then every answer is the caller's.

    A balancer with ``pick_for(request, exclude)`` (:class:`lb.ConsistentHash`)
    is asked with each call's request.

    ``limit`` (an :class:`lb.GradientLimit` or :class:`lb.AIMDLimit`; opt-in) is an
    adaptive concurrency limit of this endpoint's calls: past it a call raises
    :class:`lb.LimitExceeded` (a ``Rejected`` outcome) at once, before any
    attempt, so an overloaded service sheds load instead of queueing it.  The
    limit learns from each call's latency and ending (timeouts, 503 and 429 lower
    it; :mod:`lb.concurrency_limit_policy`); the state is this endpoint's own.
    With a balancer whose every instance is new (``slow_start=``), the limit is
    scaled by the balancer's :meth:`~lb.RoundRobin.warmth`.

    Raises ``TypeError`` for a balancer without ``endpoint()``, a callback, wait or
    discard that is not callable or a ``limit`` of another kind, and
    :class:`sd.MisuseError` (a ``ValueError``) for
    ``max_attempts < 1`` or a timeout that is not a finite number > 0.
    """
    validate.keywords("lb.retry", options, RetryOptions)
    checked = setup(max_attempts, timeout, balancer, **options)
    if hedge is not None:
        return HedgedEndpoint(checked, hedge)
    return cast(Callable[[Req], Resp], retrying(checked))


_AsyncBalancer = Balancer[Callable[[Req], Awaitable[Resp]]]


@overload
def retry_async(
    max_attempts: int, timeout: float, balancer: _AsyncBalancer[Req, Resp], *,
    hedge: None = None, **options: Unpack[RetryOptions[Resp]],
) -> Callable[[Req], Coroutine[Any, Any, Resp]]: ...


@overload
def retry_async(
    max_attempts: int, timeout: float, balancer: _AsyncBalancer[Req, Resp], *,
    hedge: Hedge, **options: Unpack[RetryOptions[Resp]],
) -> AsyncHedgedEndpoint[Req, Resp]: ...


@overload
def retry_async(
    max_attempts: int, timeout: float, balancer: _AsyncBalancer[Req, Resp], *,
    hedge: Hedge | None = None, **options: Unpack[RetryOptions[Resp]],
) -> Callable[[Req], Coroutine[Any, Any, Resp]]: ...


def retry_async(
    max_attempts: int,
    timeout: float,
    balancer: _AsyncBalancer[Req, Resp],
    *,
    hedge: Hedge | None = None,
    **options: Unpack[RetryOptions[Resp]],
) -> Callable[[Req], Coroutine[Any, Any, Resp]] | AsyncHedgedEndpoint[Req, Resp]:
    """The asyncio twin of :func:`retry`: the balancer hands out async endpoints.

    Here the deadline also cancels the attempt in flight, so a timed-out call
    leaves nothing running; the cancelled attempt's error is not counted.  An
    outer cancellation or timeout passes through as itself.  With ``hedge`` the
    losing attempt is cancelled, and an answer it already had goes to
    ``discard``; the :class:`AsyncHedgedEndpoint` returned then has ``aclose()``
    (and is an async context manager): calls in flight and after raise
    ``RuntimeError``.
    """
    validate.keywords("lb.retry_async", options, RetryOptions)
    checked = setup(max_attempts, timeout, balancer, **options)
    if hedge is not None:
        return AsyncHedgedEndpoint(checked, hedge)
    return cast(Callable[[Req], Coroutine[Any, Any, Resp]], retrying_async(checked))
