# Generated from lb/_async/hedging.py by .ci/unasync.py: do not edit.
# Edit the source and run `python .ci/unasync.py`; `python .ci/unasync.py --check`
# fails on a hand edit.
"""The loop of one hedged call (``hedge=`` of :func:`lb.retry_async`; :func:`lb.retry`
runs its generated twin): :class:`HedgedEndpoint`.

Each *round* picks an instance and races it (:mod:`lb.hedging`: a second attempt
to another instance if the first has not answered after the hedge's delay; the
first answer wins).  When every attempt of a round failed, each failure is booked
as a failed attempt exactly as without hedging (the balancer hears of it, the
instance is excluded, the retry policy decides) and the next round starts.  A
hedge is not an attempt of its own: ``max_attempts`` counts failures.  The call's
deadline and what observers hear are as for an unhedged call; each attempt is
reported in its own context (a task, a thread), as it runs beside the other.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Generic, TypeVar, cast

from kitsd.core.observe import HUB, watch_call
from kitsd.lb._call import Call, Setup
from kitsd.lb._concurrency import CallDeadlines, sleep
from kitsd.lb.errors import RetryTimeout
from kitsd.lb.hedging import Race, Round
from kitsd.lb.hedging_policy import Hedge

__all__ = ["HedgedEndpoint"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class HedgedEndpoint(Generic[Req, Resp]):
    """The endpoint a hedged retry returns: call it like any endpoint; ``close()``
    (or the end of its context manager's block) stops it at once.

    ``close()`` does not wait for attempts still running: each is bounded by its
    call's deadline (the :func:`lb.remaining` it was given), an answer it lands is
    discarded, and whatever runs it ends then.  Calls in flight when it is closed
    raise ``RuntimeError`` at once, as do calls made after.  Safe to call
    concurrently.
    """

    __slots__ = ("_deadlines", "_race", "_setup")

    def __init__(self, setup: Setup, hedge: Hedge) -> None:
        self._setup = setup
        self._deadlines = CallDeadlines(setup.timeout)
        self._race = Race(Round(hedge, setup), hedge.max_workers)

    def close(self) -> None:
        """Stop: attempts still running are abandoned (see the class docstring);
        calls in flight raise ``RuntimeError``.  Idempotent."""
        self._race.close()

    def __enter__(self) -> HedgedEndpoint[Req, Resp]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __call__(self, request: Req) -> Resp:
        setup, deadlines = self._setup, self._deadlines
        start, deadline, seconds, handle = deadlines.enter()
        if setup.deposit is not None:
            setup.deposit()
        watch = watch_call(setup.name, start) if HUB.observers else None  # observe
        call: Call | None = None
        limiter = setup.limiter
        admitted = -1.0  # when the concurrency limit admitted the call (-1: no limit)
        failure: BaseException | None = None
        try:
            if seconds <= 0:  # an lb.deadline that had already passed
                raise RetryTimeout(0.0, [])  # noqa: TRY301 - an ending observers see
            if limiter is not None:
                admitted = limiter.acquire()  # LimitExceeded: refused before any attempt
            exclude: Collection[str] = ()
            while True:
                delay = 0.0
                try:
                    chosen = setup.choose(request, exclude)
                except Exception as error:  # noqa: BLE001 - counts, as in lb.retry
                    if watch is not None:  # kitsd.observe
                        watch.attempt_ended(error)
                    call = call or setup.make_call(start, seconds)
                    delay = call.failed(None, error)
                else:
                    won, answer, failures = self._race.run(
                        request, chosen, exclude, deadline, watch)
                    if won:
                        return cast(Resp, answer)
                    call = call or setup.make_call(start, seconds)
                    for failed, failure in failures:
                        delay = call.failed(failed, failure)
                    if not failures:  # the deadline passed with attempts still running
                        raise call.policy.timed_out()
                exclude = call.exclude
                if delay:
                    sleep(delay)
        except BaseException as error:
            # what the caller gets: the deadline's own cancel becomes RetryTimeout
            errors = call.policy.errors if call else []
            ending = failure = deadlines.ending(handle, error, seconds, errors)
            if watch is not None:  # kitsd.observe
                watch.finished(ending)
            if ending is error:
                raise
            raise ending from None
        finally:
            if watch is not None:  # kitsd.observe: a no-op after an error
                watch.finished(None)
            deadlines.leave(handle)
            if admitted >= 0.0 and limiter is not None:
                limiter.release(admitted, failure)
