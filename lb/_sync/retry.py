# Generated from lb/_async/retry.py by .ci/unasync.py: do not edit.
# Edit the source and run `python .ci/unasync.py`; `python .ci/unasync.py --check`
# fails on a hand edit.
"""The loop of one retried call (:func:`lb.retry_async`; :func:`lb.retry` runs its
generated twin).

One call, start to end:

1. Its deadline (the endpoint's ``timeout``, or an earlier :func:`lb.deadline`) is
   set for :func:`lb.remaining`; in asyncio the deadline also cancels the call's
   task (:class:`lb._concurrency.CallDeadlines`).
2. An attempt asks the balancer for an endpoint (``pick(exclude)``, ``exclude``
   holding the instances that already failed in this call) and calls it.
3. The outcome goes back to the balancer with ``report(pick, error)``: that is how
   it ejects instances, with the state it owns.
4. After a failure the pure :class:`lb.retry_policy.RetryCall` (made lazily, so
   the happy path never makes one) says whether to wait and try again or give up.

Everything observers hear (:mod:`kitsd.core.observe`) is reported here, only when
someone listens.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from kitsd.core.endpoint import Endpoint
from kitsd.core.observe import HUB, watch_call
from kitsd.lb._call import Call, Setup
from kitsd.lb._concurrency import CallDeadlines, sleep
from kitsd.lb.balancer import Pick
from kitsd.lb.errors import RetryTimeout

__all__ = ["retrying"]


def retrying(setup: Setup) -> Endpoint:
    """The retrying endpoint of ``setup`` (see the module docstring)."""
    pick, pick_for, report = setup.pick, setup.pick_for, setup.report
    make_call, deposit, name = setup.make_call, setup.deposit, setup.name
    limiter = setup.limiter
    deadlines = CallDeadlines(setup.timeout)
    hub = HUB  # kitsd.observe

    def retrying(request: Any) -> Any:
        start, _, seconds, handle = deadlines.enter()
        if deposit is not None:
            deposit()
        watch = watch_call(name, start) if hub.observers else None  # kitsd.observe
        call: Call | None = None
        admitted = -1.0  # when the concurrency limit admitted the call (-1: no limit)
        failure: BaseException | None = None
        try:
            if seconds <= 0:  # an lb.deadline that had already passed
                raise RetryTimeout(0.0, [])  # noqa: TRY301 - an ending observers see
            if limiter is not None:
                admitted = limiter.acquire()  # LimitExceeded: refused before any attempt
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
                        sleep(delay)
                else:
                    if watch is not None:  # kitsd.observe
                        watch.attempt_ended(None)
                    report(chosen, None)
                    return response
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

    return retrying
