"""Hedging's races: one round of a hedged call, run on threads (:class:`Race`) or on
asyncio tasks (:class:`AsyncRace`).  The settings and the delay arithmetic are in
:mod:`lb.hedging_policy`; the call's loop around the rounds is ``lb/_async/hedging.py`` (and
its generated sync twin).  This is the one hand-written pair of hedging: threads
and tasks genuinely differ in how an attempt runs beside another and how a loser
is stopped.

One round: pick an instance and start the attempt; if it has not answered after
the hedge's delay (and the retry budget, if any, allows one more request) pick a
different instance — the first is excluded, so a keyed balancer walks its ring —
and start a second attempt.  The first success wins.  What does not win is
*settled* as soon as the race is decided: the balancer hears how it went, and an
answer it brings (at once, or when it lands later) goes to the retry's
``discard`` (the transport closes an ``httpx.Response`` there, handing its
connection back).

* Threads: attempts run on a small pool the hedged endpoint owns, so the caller
  can return with the winner while the loser still runs; the loser is abandoned
  (a thread cannot be interrupted), bounded by the deadline that
  :func:`lb.remaining` gives it, and settled when it lands.  A pool thread ends
  after :data:`IDLE_THREAD_TIMEOUT` seconds without work (:class:`Workers`), so a
  burst of hung instances does not leave ``max_workers`` threads behind for good
  (``concurrent.futures.ThreadPoolExecutor`` never lets one go).
* asyncio: the loser is cancelled, and waited for, before the call returns.

Observers (:mod:`kitsd.core.observe`) hear each attempt in the context it runs in
(its thread's copy of the caller's context, or its task's), so the attempts'
``AttemptStarted``/``AttemptFinished`` pairs stay balanced and nested in their own
context even though two run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from concurrent import futures as cf
from typing import Any, cast

from kitsd.core.observe import (
    HUB,
    AttemptFinished,
    AttemptStarted,
    CallWatch,
    emit,
    emit_started,
    outcome_of,
)
from kitsd.lb._call import Discard, Setup
from kitsd.lb.balancer import Pick
from kitsd.lb.hedging_policy import Hedge, LatencyWindow

__all__ = ["IDLE_THREAD_TIMEOUT", "AsyncRace", "Failures", "Hedge", "Race", "Round", "Workers"]

logger = logging.getLogger(__name__)

#: Seconds a hedging pool's thread waits for work before it ends.
IDLE_THREAD_TIMEOUT = 2.0

#: The attempts of a round that failed, with their picks.
Failures = list[tuple[Pick, Exception]]
#: ``(won, answer, failures)``: a win, or every attempt failed (``failures``), or the
#: deadline passed first (no failures).
Outcome = tuple[bool, Any, Failures]

_CLOSED = "lb.retry: the hedged endpoint was closed during the call"


class Round:
    """What both races share: choosing, the delay, the budget, the reports."""

    __slots__ = ("_budget", "_lock", "_setup", "_window", "discard", "hedge", "report")

    def __init__(self, hedge: Hedge, setup: Setup) -> None:
        if not isinstance(hedge, Hedge):
            raise TypeError(f"hedge must be an lb.Hedge or None, got {hedge!r}")
        self.hedge = hedge
        self._setup = setup
        self.report = setup.report
        self.discard = setup.discard
        self._budget = setup.budget
        self._window = LatencyWindow(hedge)
        self._lock = threading.Lock()

    def delay(self) -> float:
        with self._lock:
            return self._window.delay()

    def answered(self, latency: float) -> None:
        with self._lock:
            self._window.observe(latency)

    def second(self, request: Any, first: Pick, exclude: Collection[str]) -> Pick | None:
        """The hedge's instance, or ``None`` (no other instance, or no budget)."""
        try:
            chosen = self._setup.choose(request, {*exclude, first.instance})
        except Exception:  # noqa: BLE001 - no hedge then; the first attempt goes on
            return None
        if chosen.instance == first.instance and chosen.endpoint is first.endpoint:
            return None
        if self._budget is not None and not self._budget.try_withdraw():
            return None
        return chosen


def _observed(endpoint: Callable[[Any], Any], request: Any, service: str, instance: str,
              resend: int) -> Any:
    """Call ``endpoint`` as an attempt observers hear of, in the current context."""
    if HUB.starting:
        emit_started(AttemptStarted(service, instance, resend))
    began = time.monotonic()
    error: BaseException | None = None
    try:
        return endpoint(request)
    except BaseException as raised:
        error = raised
        raise
    finally:
        emit(AttemptFinished(service, instance, outcome_of(error), time.monotonic() - began,
                             resend, error), finished=True)


async def _observed_async(endpoint: Callable[[Any], Awaitable[Any]], request: Any,
                          service: str, instance: str, resend: int) -> Any:
    """The asyncio twin of :func:`_observed` (a cancelled loser ends ``cancelled``)."""
    if HUB.starting:
        emit_started(AttemptStarted(service, instance, resend))
    began = time.monotonic()
    error: BaseException | None = None
    try:
        return await endpoint(request)
    except BaseException as raised:
        error = raised
        raise
    finally:
        emit(AttemptFinished(service, instance, outcome_of(error), time.monotonic() - began,
                             resend, error), finished=True)


def _numbered(watch: CallWatch, chosen: Pick) -> int:
    """Count an attempt of an observed call; its resend count."""
    resend = watch.attempts
    watch.attempts += 1
    watch.instance = chosen.instance
    return resend


def _dispose(discard: Discard | None, answer: Any) -> None:
    """Hand a losing answer to ``discard``; its errors are logged, never raised."""
    if discard is None:
        return
    try:
        outcome = discard(answer)
    except Exception:
        logger.exception("lb.retry: discarding a hedge's losing answer failed")
        return
    if inspect.isawaitable(outcome):  # nothing here can await it
        close = getattr(outcome, "close", None)
        if callable(close):
            close()
        logger.error("lb.retry: discard returned an awaitable; lb.retry needs a sync "
                     "discard (lb.retry_async awaits one)")


async def _dispose_async(discard: Discard | None, answer: Any) -> None:
    """The asyncio twin of :func:`_dispose`: an awaitable ``discard`` returns is awaited."""
    if discard is None:
        return
    try:
        outcome = discard(answer)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:
        logger.exception("lb.retry: discarding a hedge's losing answer failed")


class Workers:
    """At most ``max_workers`` threads running what is submitted, a thread started
    when none is free, and ended after ``idle`` seconds without work.  The thread
    that became free last is given the next piece of work (FIFO would keep every
    thread of a burst busy enough never to end).  ``submit`` and ``shutdown`` as
    ``concurrent.futures.ThreadPoolExecutor``'s (``shutdown`` never waits: a running
    call is abandoned to its own deadline).  Thread-safe."""

    __slots__ = ("_closed", "_free", "_idle", "_lock", "_max", "_name", "_queue", "_threads")

    def __init__(self, max_workers: int, name: str, idle: float = IDLE_THREAD_TIMEOUT) -> None:
        self._max = max_workers
        self._name = name
        self._idle = idle
        self._lock = threading.Lock()
        self._queue: deque[_Work] = deque()  # waiting for a thread
        self._free: list[_Free] = []  # threads waiting for work, the last freed last
        self._threads = 0  # alive
        self._closed = False

    def submit(self, function: Callable[..., Any], /, *args: Any) -> cf.Future[Any]:
        """Run ``function(*args)`` on a thread; raises ``RuntimeError`` once shut down."""
        future: cf.Future[Any] = cf.Future()
        work = (future, function, args)
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._free:
                free = self._free.pop()
                free.work = work
                free.wake.set()
                return future
            if self._threads >= self._max:
                self._queue.append(work)
                return future
            self._threads += 1
        thread = threading.Thread(target=self._run, args=(work,), daemon=True,
                                  name=f"{self._name}-{next(_THREAD_NUMBERS)}")
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._threads -= 1
            raise
        return future

    def _run(self, work: _Work | None) -> None:
        free = _Free()
        while work is not None:
            future, function, args = work
            if future.set_running_or_notify_cancel():
                try:
                    result = function(*args)
                except BaseException as error:  # noqa: BLE001 - the future carries it
                    future.set_exception(error)
                else:
                    future.set_result(result)
            del future, function, args  # hold nothing while waiting for the next
            work = self._next(free)
        with self._lock:
            self._threads -= 1

    def _next(self, free: _Free) -> _Work | None:
        """The next piece of work for a thread that is free, or ``None``: end."""
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                return None
            free.work = None
            free.wake.clear()
            self._free.append(free)
        free.wake.wait(self._idle)
        with self._lock:
            if free.work is None and free in self._free:  # nobody came: end
                self._free.remove(free)
            work, free.work = free.work, None
            return work

    def shutdown(self, wait: bool = False, *, cancel_futures: bool = True) -> None:
        """Refuse new work, cancel what has not started (``cancel_futures``), and let
        the threads end; never waits (``wait`` is accepted for the executor's
        signature and ignored).  Idempotent."""
        with self._lock:
            self._closed = True
            dropped = list(self._queue) if cancel_futures else []
            if cancel_futures:
                self._queue.clear()
            free, self._free = self._free, []
        for each in free:
            each.wake.set()
        for future, _, _ in dropped:
            future.cancel()

    @property
    def threads(self) -> int:
        """Threads alive now (for tests and debugging)."""
        with self._lock:
            return self._threads


_Work = tuple[cf.Future[Any], Callable[..., Any], tuple[Any, ...]]


class _Free:
    """A thread of :class:`Workers` waiting for work: handed it in ``work``, woken by
    ``wake``."""

    __slots__ = ("wake", "work")

    def __init__(self) -> None:
        self.wake = threading.Event()
        self.work: _Work | None = None


_THREAD_NUMBERS = itertools.count()


class Race:
    """Rounds on threads: a pool of at most ``max_workers`` threads (:class:`Workers`),
    owned by the hedged endpoint.  ``close()`` stops it at once (see the module
    docstring)."""

    __slots__ = ("_closing", "_pool", "_round")

    def __init__(self, rounds: Round, max_workers: int) -> None:
        self._round = rounds
        self._pool = Workers(max_workers, "kitsd-hedge", IDLE_THREAD_TIMEOUT)
        # done once closed: every wait of a call in flight includes it, so it wakes
        self._closing: cf.Future[None] = cf.Future()

    def close(self) -> None:
        """Drop queued attempts, abandon running ones; calls in flight raise
        ``RuntimeError``.  Idempotent."""
        with contextlib.suppress(cf.InvalidStateError):
            self._closing.set_result(None)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run(self, request: Any, first: Pick, exclude: Collection[str], deadline: float,
            watch: CallWatch | None) -> Outcome:
        """One round (``deadline``: ``time.monotonic()`` seconds).  Whatever does not
        become its outcome is settled (see :meth:`_settle`)."""
        rounds = self._round
        closing = self._closing
        began = time.monotonic()
        contexts: dict[cf.Future[Any], contextvars.Context] = {}
        running = {self._submit(first, request, contexts, watch): first}
        winner: cf.Future[Any] | None = None
        failures: Failures = []
        handed = False
        try:
            done, _ = cf.wait({*running, closing}, return_when=cf.FIRST_COMPLETED,
                              timeout=max(0.0, min(rounds.delay(), deadline - began)))
            if not done and time.monotonic() < deadline:
                second = rounds.second(request, first, exclude)
                if second is not None:
                    running[self._submit(second, request, contexts, watch)] = second
            pending: set[cf.Future[Any]] = {*running, closing}
            while len(pending) > 1:  # attempts besides `closing` still running
                if closing.done():
                    raise RuntimeError(_CLOSED)
                left = deadline - time.monotonic()
                if left <= 0:
                    return False, None, []
                done, pending = cf.wait(pending, timeout=left, return_when=cf.FIRST_COMPLETED)
                pending.add(closing)
                for future in done:
                    if future is closing:
                        continue
                    if future.cancelled():  # dropped by close() before it started
                        raise RuntimeError(_CLOSED)
                    error = future.exception()
                    if error is None:
                        winner = future
                        rounds.answered(time.monotonic() - began)
                        if watch is not None:  # kitsd.observe
                            watch.instance = running[future].instance
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
            _dispose(self._round.discard, future.result())
        elif isinstance(error, Exception) and id(error) not in booked:
            context.run(self._round.report, chosen, error)

    def _submit(self, chosen: Pick, request: Any,
                contexts: dict[cf.Future[Any], contextvars.Context],
                watch: CallWatch | None) -> cf.Future[Any]:
        # a fresh copy per attempt: one Context cannot run in two threads at once
        context = contextvars.copy_context()
        if watch is None:
            future = self._pool.submit(context.run, chosen.endpoint, request)
        else:  # kitsd.observe
            future = self._pool.submit(context.run, _observed, chosen.endpoint, request,
                                       watch.service, chosen.instance, _numbered(watch, chosen))
        contexts[future] = context
        return future


class AsyncRace:
    """Rounds on asyncio tasks: the loser is cancelled and waited for.  ``aclose()``
    makes the calls in flight raise ``RuntimeError`` (``max_workers`` is for threads)."""

    __slots__ = ("_closed", "_round", "_waiters")

    def __init__(self, rounds: Round, max_workers: int) -> None:
        self._round = rounds
        self._closed = False
        self._waiters: set[asyncio.Future[None]] = set()  # one per round in flight

    async def aclose(self) -> None:
        """Calls in flight raise ``RuntimeError``, as do calls made after.  Idempotent."""
        self._closed = True
        for waiter in list(self._waiters):
            with contextlib.suppress(RuntimeError):  # its loop has closed: nothing waits
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)

    async def run(self, request: Any, first: Pick, exclude: Collection[str], deadline: float,
                  watch: CallWatch | None) -> Outcome:
        """One round; the call's own deadline cancels it (``deadline`` is for threads)."""
        if self._closed:
            raise RuntimeError(_CLOSED)
        rounds = self._round
        began = time.monotonic()
        closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(closing)

        def start(chosen: Pick) -> asyncio.Future[Any]:
            endpoint = cast(Callable[[Any], Awaitable[Any]], chosen.endpoint)
            if watch is None:
                return asyncio.ensure_future(endpoint(request))
            return asyncio.ensure_future(_observed_async(  # kitsd.observe
                endpoint, request, watch.service, chosen.instance, _numbered(watch, chosen)))

        running = {start(first): first}
        winner: asyncio.Future[Any] | None = None
        failures: Failures = []
        handed = False
        try:
            done, _ = await asyncio.wait({*running, closing}, timeout=rounds.delay(),
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                second = rounds.second(request, first, exclude)
                if second is not None:
                    running[start(second)] = second
            pending: set[asyncio.Future[Any]] = {*running, closing}
            while len(pending) > 1:  # attempts besides `closing` still running
                if closing.done():
                    raise RuntimeError(_CLOSED)
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                pending.add(closing)
                for task in done:
                    if task is closing:
                        continue
                    if task.cancelled():
                        raise asyncio.CancelledError
                    error = task.exception()
                    if error is None:
                        winner = task
                        rounds.answered(time.monotonic() - began)
                        if watch is not None:  # kitsd.observe
                            watch.instance = running[task].instance
                        return True, task.result(), []
                    if not isinstance(error, Exception):
                        raise error
                    failures.append((running[task], error))
            handed = True  # the caller books these failures
            return False, None, failures
        finally:
            self._waiters.discard(closing)
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
                    await _dispose_async(rounds.discard, task.result())
                elif isinstance(error, Exception) and id(error) not in booked:
                    rounds.report(chosen, error)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
