"""Hedged retries: the two drivers behind ``hedge=`` of :func:`lb.retry` and
:func:`lb.retry_async` (the settings and the delay arithmetic are in :mod:`lb.hedge`).

One hedged call, start to end: each *round* picks an instance and starts the
attempt; if it has not answered after the hedge's delay (and the retry budget,
if any, allows one more request) it picks a different instance — ``exclude``
holds the first, so a keyed balancer walks its ring — and starts a second
attempt.  The first success wins and the other attempt is cancelled (asyncio)
or abandoned (threads: it finishes on the pool, bounded by the deadline that
``lb.remaining()`` gives it).  When every attempt of a round failed, each
failure is booked as a failed attempt exactly as without hedging (the balancer
hears of it, the instance is excluded, the retry policy decides), and the next
round starts.  A hedge is not an attempt of its own: ``max_attempts`` counts
failures.

The sync driver runs attempts on a thread pool owned by the endpoint it returns
(:class:`HedgedEndpoint`), so that the caller can return with the winner while
the loser is still running; ``close()`` shuts the pool down and waits for what
runs on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection
from concurrent import futures as cf
from typing import Any, Protocol, cast

from kitsd.core.deadline import current_deadline, reset_deadline, set_deadline
from kitsd.core.endpoint import AsyncEndpoint
from kitsd.lb.balancer import Pick
from kitsd.lb.errors import RetryTimeout
from kitsd.lb.hedge import Hedge, LatencyWindow
from kitsd.lb.retry_budget import RetryBudget
from kitsd.lb.retry_policy import RetryCall

__all__ = ["Discard", "Hedge", "HedgedEndpoint", "check_discard", "hedged_async", "hedged_sync"]

logger = logging.getLogger(__name__)

PickFunction = Callable[[Collection[str]], Pick]
PickForFunction = Callable[[Any, Collection[str]], Pick]
ReportFunction = Callable[[Pick, BaseException | None], None]


class _Call(Protocol):
    """What :mod:`lb.retry` keeps per call once an attempt failed."""

    exclude: set[str]
    policy: RetryCall

    def failed(self, chosen: Pick | None, error: Exception) -> float: ...


_Failures = list[tuple[Pick, Exception]]

#: ``discard(result)``: release what an answer the call will not return holds (a
#: hedge's losing answer).  For asyncio it may return an awaitable, awaited.
Discard = Callable[[Any], object]


def check_discard(discard: object) -> None:
    """``TypeError`` unless ``discard`` is ``None`` or callable."""
    if discard is not None and not callable(discard):
        raise TypeError(f"discard must be callable(result) or None, got {discard!r}")


def _dispose(discard: Discard | None, result: Any) -> None:
    """Hand a losing answer to ``discard``; its errors are logged, never raised."""
    if discard is None:
        return
    try:
        outcome = discard(result)
    except Exception:
        logger.exception("lb.retry: discarding a hedge's losing answer failed")
        return
    if inspect.isawaitable(outcome):  # nothing here can await it
        close = getattr(outcome, "close", None)
        if callable(close):
            close()
        logger.error("lb.retry: discard returned an awaitable; lb.retry needs a sync "
                     "discard (lb.retry_async awaits one)")


async def _dispose_async(discard: Discard | None, result: Any) -> None:
    """The asyncio twin of :func:`_dispose`: an awaitable ``discard`` returns is awaited."""
    if discard is None:
        return
    try:
        outcome = discard(result)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:
        logger.exception("lb.retry: discarding a hedge's losing answer failed")


class _Round:
    """What the two drivers share: choosing, the delay, the budget."""

    def __init__(self, hedge: Hedge, pick: PickFunction, pick_for: PickForFunction | None,
                 report: ReportFunction, budget: RetryBudget | None) -> None:
        self.hedge = hedge
        self._pick = pick
        self._pick_for = pick_for
        self.report = report
        self._budget = budget
        self._window = LatencyWindow(hedge)
        self._lock = threading.Lock()

    def choose(self, request: Any, exclude: Collection[str]) -> Pick:
        return self._pick(exclude) if self._pick_for is None else self._pick_for(request, exclude)

    def delay(self) -> float:
        with self._lock:
            return self._window.delay()

    def answered(self, latency: float) -> None:
        with self._lock:
            self._window.observe(latency)

    def second(self, request: Any, first: Pick, exclude: Collection[str]) -> Pick | None:
        """The hedge's instance, or ``None`` (no other instance, or no budget)."""
        try:
            chosen = self.choose(request, {*exclude, first.instance})
        except Exception:  # noqa: BLE001 - no hedge then; the first attempt goes on
            return None
        if chosen.instance == first.instance and chosen.endpoint is first.endpoint:
            return None
        if self._budget is not None and not self._budget.try_withdraw():
            return None
        return chosen


class HedgedEndpoint:
    """The endpoint ``lb.retry(..., hedge=...)`` returns: call it like any endpoint;
    ``close()`` (or leaving its ``with`` block) shuts its thread pool down at once.

    ``close()`` does not wait for attempts still running: each is bounded by its
    call's deadline (the :func:`lb.remaining` it was given), its answer is
    discarded when it lands, and its thread ends then.  Calls in flight when it
    is closed raise ``RuntimeError`` at once, as do calls made after.  Thread-safe.
    """

    def __init__(self, hedge: Hedge, timeout: float, pick: PickFunction,
                 pick_for: PickForFunction | None, report: ReportFunction,
                 make_call: Callable[[float, float], _Call], budget: RetryBudget | None,
                 discard: Discard | None = None) -> None:
        self._round = _Round(hedge, pick, pick_for, report, budget)
        self._timeout = timeout
        self._make_call = make_call
        self._discard = discard
        self._deposit = None if budget is None else budget.deposit
        self._pool = cf.ThreadPoolExecutor(max_workers=hedge.max_workers,
                                           thread_name_prefix="kitsd-hedge")
        # done once closed: every wait of a call in flight includes it, so it wakes
        self._closing: cf.Future[None] = cf.Future()

    def close(self) -> None:
        """Stop the pool: queued attempts are dropped, running ones abandoned (see
        the class docstring); calls in flight raise ``RuntimeError``.  Idempotent."""
        with contextlib.suppress(cf.InvalidStateError):
            self._closing.set_result(None)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> HedgedEndpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __call__(self, request: Any) -> Any:
        if self._deposit is not None:
            self._deposit()
        start = time.monotonic()
        deadline, seconds = start + self._timeout, self._timeout
        outer = current_deadline()  # lb.deadline, or an enclosing call's
        if outer is not None and outer < deadline:
            deadline, seconds = outer, outer - start
        token = set_deadline(deadline)
        try:
            if deadline <= start:
                raise RetryTimeout(0.0, [])
            call: _Call | None = None
            exclude: Collection[str] = ()
            while True:
                delay = 0.0
                try:
                    chosen = self._round.choose(request, exclude)
                except Exception as error:  # noqa: BLE001 - counts, as in lb.retry
                    call = call or self._make_call(start, seconds)
                    delay = call.failed(None, error)
                else:
                    won, response, failures = self._attempt(request, chosen, exclude, deadline)
                    if won:
                        return response
                    call = call or self._make_call(start, seconds)
                    for failed_pick, failure in failures:
                        delay = call.failed(failed_pick, failure)
                    if not failures:  # the deadline passed with attempts still running
                        raise call.policy.timed_out()
                exclude = call.exclude
                if delay:
                    time.sleep(delay)
        finally:
            reset_deadline(token)

    def _attempt(self, request: Any, first: Pick, exclude: Collection[str],
                 deadline: float) -> tuple[bool, Any, _Failures]:
        """One round: ``(True, answer, [])``, or ``(False, None, failures)`` when every
        attempt failed, or ``(False, None, [])`` when the deadline passed first.
        Whatever does not become the round's outcome is settled (see :meth:`_settle`)."""
        rounds = self._round
        closing = self._closing
        began = time.monotonic()
        contexts: dict[cf.Future[Any], contextvars.Context] = {}
        running = {self._submit(first, request, contexts): first}
        winner: cf.Future[Any] | None = None
        failures: _Failures = []
        handed = False
        try:
            done, _ = cf.wait({*running, closing}, return_when=cf.FIRST_COMPLETED,
                              timeout=max(0.0, min(rounds.delay(), deadline - began)))
            if not done and time.monotonic() < deadline:
                second = rounds.second(request, first, exclude)
                if second is not None:
                    running[self._submit(second, request, contexts)] = second
            pending: set[cf.Future[Any]] = {*running, closing}
            while len(pending) > 1:  # attempts besides `closing` still running
                if closing.done():
                    raise RuntimeError("lb.retry: the hedged endpoint was closed during the call")
                left = deadline - time.monotonic()
                if left <= 0:
                    return False, None, []
                done, pending = cf.wait(pending, timeout=left, return_when=cf.FIRST_COMPLETED)
                pending.add(closing)
                for future in done:
                    if future is closing:
                        continue
                    if future.cancelled():  # dropped by close() before it started
                        raise RuntimeError(
                            "lb.retry: the hedged endpoint was closed during the call")
                    error = future.exception()
                    if error is None:
                        winner = future
                        rounds.answered(time.monotonic() - began)
                        return True, future.result(), []
                    if not isinstance(error, Exception):
                        raise error
                    failures.append((running[future], error))
            handed = True  # the caller books these failures
            return False, None, failures
        finally:
            booked = {id(failure) for _, failure in failures} if handed else set()
            for future, chosen in running.items():
                if future is not winner:
                    # not started yet: dropped; running: settled when it lands
                    future.cancel()
                    future.add_done_callback(functools.partial(
                        self._settle, chosen, booked, contexts[future]))
            if winner is not None:
                rounds.report(running[winner], None)

    def _settle(self, chosen: Pick, booked: Collection[int], context: contextvars.Context,
                future: cf.Future[Any]) -> None:
        """An attempt whose outcome the call does not take: the balancer hears how it
        went (unless the call books it as a failure itself) and an answer is
        discarded.  Runs in the attempt's thread when it lands, or at once, in the
        attempt's context (the attempt has left it by then)."""
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            context.run(self._round.report, chosen, None)
            _dispose(self._discard, future.result())
        elif isinstance(error, Exception) and id(error) not in booked:
            context.run(self._round.report, chosen, error)

    def _submit(self, chosen: Pick, request: Any,
                contexts: dict[cf.Future[Any], contextvars.Context]) -> cf.Future[Any]:
        # a fresh copy per attempt: one Context cannot run in two threads at once
        context = contextvars.copy_context()
        future = self._pool.submit(context.run, chosen.endpoint, request)
        contexts[future] = context
        return future


def hedged_sync(hedge: Hedge, timeout: float, pick: PickFunction,
                pick_for: PickForFunction | None, report: ReportFunction,
                make_call: Callable[[float, float], _Call],
                budget: RetryBudget | None, discard: Discard | None = None) -> HedgedEndpoint:
    """The hedged twin of :func:`lb.retry`'s loop (see the module docstring)."""
    if not isinstance(hedge, Hedge):
        raise TypeError(f"hedge must be an lb.Hedge or None, got {hedge!r}")
    check_discard(discard)
    return HedgedEndpoint(hedge, timeout, pick, pick_for, report, make_call, budget, discard)


def hedged_async(hedge: Hedge, timeout: float, pick: PickFunction,
                 pick_for: PickForFunction | None, report: ReportFunction,
                 make_call: Callable[[float, float], _Call],
                 budget: RetryBudget | None, discard: Discard | None = None) -> AsyncEndpoint:
    """The hedged twin of :func:`lb.retry_async`'s loop: the loser is cancelled (an
    answer it had already is discarded), and so is everything at the deadline
    (then :class:`lb.RetryTimeout`)."""
    if not isinstance(hedge, Hedge):
        raise TypeError(f"hedge must be an lb.Hedge or None, got {hedge!r}")
    check_discard(discard)
    rounds = _Round(hedge, pick, pick_for, report, budget)
    deposit = None if budget is None else budget.deposit

    async def attempt(request: Any, first: Pick,
                      exclude: Collection[str]) -> tuple[bool, Any, _Failures]:
        began = time.monotonic()

        def start(chosen: Pick) -> asyncio.Future[Any]:
            endpoint = cast(Callable[[Any], Awaitable[Any]], chosen.endpoint)
            return asyncio.ensure_future(endpoint(request))

        running = {start(first): first}
        winner: asyncio.Future[Any] | None = None
        failures: _Failures = []
        handed = False
        try:
            done, _ = await asyncio.wait(running, timeout=rounds.delay())
            if not done:
                second = rounds.second(request, first, exclude)
                if second is not None:
                    running[start(second)] = second
            pending = set(running)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.cancelled():
                        raise asyncio.CancelledError
                    error = task.exception()
                    if error is None:
                        winner = task
                        rounds.answered(time.monotonic() - began)
                        return True, task.result(), []
                    if not isinstance(error, Exception):
                        raise error
                    failures.append((running[task], error))
            handed = True  # the caller books these failures
            return False, None, failures
        finally:
            left = [task for task in running if not task.done()]
            for task in left:
                task.cancel()
            if left:  # nothing is left running when the call returns
                await asyncio.wait(left)
            if winner is not None:
                rounds.report(running[winner], None)
            booked = {id(failure) for _, failure in failures} if handed else set()
            for task, chosen in running.items():
                if task is winner or task.cancelled():
                    continue
                error = task.exception()  # retrieved: no "never retrieved" warning
                if error is None:  # an answer that lost the race, or landed too late
                    rounds.report(chosen, None)
                    await _dispose_async(discard, task.result())
                elif isinstance(error, Exception) and id(error) not in booked:
                    rounds.report(chosen, error)

    async def retrying(request: Any) -> Any:
        if deposit is not None:
            deposit()
        start = time.monotonic()
        deadline, seconds = start + timeout, timeout
        outer = current_deadline()  # lb.deadline, or an enclosing call's
        if outer is not None and outer < deadline:
            deadline, seconds = outer, outer - start
        token = set_deadline(deadline)
        call: _Call | None = None
        scope: asyncio.Timeout | None = None
        try:
            if deadline <= start:
                raise RetryTimeout(0.0, [])
            loop = asyncio.get_running_loop()
            async with asyncio.timeout_at(loop.time() + seconds) as scope:
                exclude: Collection[str] = ()
                while True:
                    delay = 0.0
                    try:
                        chosen = rounds.choose(request, exclude)
                    except Exception as error:  # noqa: BLE001 - counts, as in lb.retry
                        call = call or make_call(start, seconds)
                        delay = call.failed(None, error)
                    else:
                        won, response, failures = await attempt(request, chosen, exclude)
                        if won:
                            return response
                        call = call or make_call(start, seconds)
                        for failed_pick, failure in failures:
                            delay = call.failed(failed_pick, failure)
                    exclude = call.exclude
                    if delay:
                        await asyncio.sleep(delay)
        except TimeoutError as error:
            if not isinstance(error, RetryTimeout) and scope is not None and scope.expired():
                raise RetryTimeout(seconds,
                                   call.policy.errors if call else []) from None
            raise
        finally:
            reset_deadline(token)

    return retrying
