"""Retry over a balancer (go-kit's ``lb.Retry`` / ``lb.RetryWithCallback``), sync and asyncio.

Both drivers run the same pure :class:`lb.retry_policy.RetryCall` and share every
step but the two that differ (how to call the endpoint and how to wait), so they
cannot drift apart.  The happy path is a thin loop: setting the deadline context
variable, one pick, one call; the policy object is only built after a failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import Token
from typing import Any, cast

import tenacity

from lb.balancer import Balancer
from lb.errors import RetryTimeout
from lb.pick import (
    failed_in_call,
    mark_failed_in_call,
    record_failure,
    record_success,
    reset_failed_in_call,
)
from lb.retry_policy import Callback, GiveUp, RetryCall, WaitFunction, validate
from sd.deadline import reset_deadline, set_deadline
from sd.endpoint import AsyncEndpoint, Endpoint

__all__ = ["retry", "retry_async"]

#: A tenacity wait strategy: ``wait(retry_call_state) -> seconds``.
TenacityWait = Callable[[tenacity.RetryCallState], float]


def retry(
    max_attempts: int,
    timeout: float,
    balancer: Balancer,
    *,
    callback: Callback | None = None,
    wait: TenacityWait | None = None,
) -> Endpoint:
    """An endpoint that calls ``balancer.endpoint()``'s endpoint, retrying failures.

    ``max_attempts`` counts every attempt (``1`` means no retry); ``timeout`` seconds
    covers all attempts together.  Errors from ``balancer.endpoint()`` and from the
    endpoint both count.  ``callback(attempt, error) -> (keep_trying, replacement)``
    replaces the default rule (keep trying while ``attempt < max_attempts``).

    Raises :class:`lb.RetryError` when it gives up and :class:`lb.RetryTimeout` (a
    ``TimeoutError``) past the deadline; both carry ``.errors``.  A sync endpoint
    cannot be interrupted: it should bound itself by :func:`lb.remaining` (the
    ``sd.http`` endpoints do); a success that lands after the deadline is returned.
    Within one call an instance that failed is not picked again while others
    remain; a connection-level failure ejects it for later calls too.  ``wait`` is a
    tenacity wait strategy (e.g. ``tenacity.wait_random_exponential(multiplier=0.01, max=1)``)
    slept between attempts, never past the deadline.  Safe to call from many threads.

    Raises ``ValueError`` for ``max_attempts < 1`` or ``timeout <= 0``.
    """
    validate(max_attempts, timeout)
    wait_function = _adapt_wait(wait)

    def retrying(request: Any) -> Any:
        start = time.monotonic()
        deadline_token = set_deadline(start + timeout)
        call: RetryCall | None = None
        failed_token: Token[frozenset[int]] | None = None
        try:
            while True:
                endpoint: Endpoint | None = None
                try:
                    endpoint = _pick(balancer)
                    response = endpoint(request)
                except Exception as error:  # noqa: BLE001 - every failure counts, as go-kit
                    if call is None:
                        call = RetryCall(max_attempts=max_attempts, timeout=timeout, start=start,
                                         callback=callback, wait=wait_function)
                    delay, token = _after_failure(call, endpoint, error)
                    failed_token = failed_token or token
                    if delay:
                        time.sleep(delay)
                else:
                    record_success(endpoint)
                    return response
        finally:
            if failed_token is not None:
                reset_failed_in_call(failed_token)
            reset_deadline(deadline_token)

    return retrying


def retry_async(
    max_attempts: int,
    timeout: float,
    balancer: Balancer,
    *,
    callback: Callback | None = None,
    wait: TenacityWait | None = None,
) -> AsyncEndpoint:
    """The asyncio twin of :func:`retry`: the balancer hands out async endpoints.

    Here the deadline also cancels the attempt in flight, so a timed-out call
    leaves nothing running; the cancelled attempt's error is not counted.
    """
    validate(max_attempts, timeout)
    wait_function = _adapt_wait(wait)

    async def retrying(request: Any) -> Any:
        start = time.monotonic()
        deadline_token = set_deadline(start + timeout)
        call: RetryCall | None = None
        failed_token: Token[frozenset[int]] | None = None
        try:
            async with asyncio.timeout(timeout) as scope:
                while True:
                    endpoint: Endpoint | None = None
                    try:
                        endpoint = _pick(balancer)
                        response = await cast(Callable[[Any], Awaitable[Any]], endpoint)(request)
                    except Exception as error:  # noqa: BLE001 - every failure counts, as go-kit
                        if call is None:
                            call = RetryCall(max_attempts=max_attempts, timeout=timeout,
                                             start=start, callback=callback, wait=wait_function)
                        delay, token = _after_failure(call, endpoint, error)
                        failed_token = failed_token or token
                        if delay:
                            await asyncio.sleep(delay)
                    else:
                        record_success(endpoint)
                        return response
        except TimeoutError:
            if scope.expired():
                errors = call.errors if call is not None else []
                raise RetryTimeout(timeout, errors) from None
            raise
        finally:
            if failed_token is not None:
                reset_failed_in_call(failed_token)
            reset_deadline(deadline_token)

    return retrying


def _pick(balancer: Balancer) -> Endpoint:
    """Ask the balancer; re-ask (a bounded number of times) if it hands back an
    endpoint that already failed in this call, for balancers that do not consult
    :func:`lb.pick.usable` themselves."""
    endpoint = balancer.endpoint()
    failed = failed_in_call()
    if failed and id(endpoint) in failed:
        for _ in range(len(failed)):
            other = balancer.endpoint()
            if id(other) not in failed:
                return other
    return endpoint


def _after_failure(
    call: RetryCall, endpoint: Endpoint | None, error: Exception
) -> tuple[float, Token[frozenset[int]] | None]:
    """Shared by both drivers: book the failure, then return the delay before the
    next attempt, or raise the give-up error."""
    if endpoint is not None:
        record_failure(endpoint, error)
    decision = call.failed(error, time.monotonic())
    if isinstance(decision, GiveUp):
        raise decision.error from error
    # Marked only once we know there is a next attempt: the driver resets the first
    # token it is handed, so a mark made on the way out would outlive the call.
    token = mark_failed_in_call(endpoint) if endpoint is not None else None
    return decision.delay, token


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
