"""Rate limiting middleware (go-kit's ``ratelimit``) on ``limits`` (extra ``ratelimit``).

::

    limited = kitsd.ratelimit.rate_limit("100/second", name="users")(endpoint)
    waiting = kitsd.ratelimit.rate_limit("100/second", wait=True)(endpoint)
    shared = kitsd.ratelimit.rate_limit("1000/minute", storage="redis://redis:6379")

A call takes one token of ``limit`` (``limits``' notation: ``"10/second"``,
``"100 per minute"``, or a ``limits.RateLimitItem``).  Without a token, the
middleware either rejects the call at once with :class:`RateLimitExceeded`
(go-kit's ``ErrLimited``, the default) or, with ``wait=True``, sleeps until the
limiter says a token frees up and tries again, but never past the enclosing
retry's deadline (:func:`lb.remaining`) nor ``max_wait`` seconds (default 60): a wait that
would overrun them is rejected at once, so a caller is not held for a call
that cannot be made in time.

The bookkeeping is ``limits``' own (moving window by default; ``strategy``
picks ``"fixed-window"`` or ``"sliding-window-counter"``), in the ``storage``
it is given: ``"memory://"`` (default, this process), or a shared one such as
``"redis://host:6379"`` so that several processes share one limit.  Async
endpoints use ``limits.aio`` (storage ``"async+..."``), so a remote storage
never blocks the event loop.  ``limits``' in-memory storage expires entries
from a short-lived timer thread of its own (10 ms, restarted as it is used).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

from kitsd._extras import missing_extra

try:
    import limits
except ModuleNotFoundError as _error:
    raise missing_extra(_error, "kitsd.ratelimit", "ratelimit") from _error
import limits.aio.storage
import limits.aio.strategies
import limits.errors
import limits.storage
import limits.strategies

from kitsd.core import validate
from kitsd.core.deadline import remaining
from kitsd.core.endpoint import Endpoint, is_async
from kitsd.core.errors import KitsdError, MisuseError, Rejected
from kitsd.core.observe import HUB, RateLimited, emit

__all__ = ["DEFAULT_MAX_WAIT", "MAX_PERIOD", "RateLimitExceeded", "rate_limit",
           "wait_decision"]

_STRATEGIES: dict[str, tuple[type[limits.strategies.RateLimiter],
                             type[limits.aio.strategies.RateLimiter]]] = {
    "moving-window": (limits.strategies.MovingWindowRateLimiter,
                      limits.aio.strategies.MovingWindowRateLimiter),
    "fixed-window": (limits.strategies.FixedWindowRateLimiter,
                     limits.aio.strategies.FixedWindowRateLimiter),
    "sliding-window-counter": (limits.strategies.SlidingWindowCounterRateLimiter,
                               limits.aio.strategies.SlidingWindowCounterRateLimiter),
}

#: The shortest wait between two tries for a token (a limiter's reset time can be "now").
MIN_WAIT = 0.001

DEFAULT_MAX_WAIT = 60.0
"""Seconds a call waits for a token at most (``wait=True``) unless ``max_wait`` says."""

MAX_PERIOD = 100 * 365 * 24 * 3600.0
"""The longest period a limit may have (100 years): past it, a wait is no wait at all."""

# "1/0second": limits reads a zero multiple as none (one second); we refuse it.
_ZERO_MULTIPLE = re.compile(r"(?:/|\bper\b)\s*0+\s*[a-z]", re.IGNORECASE)
_SEPARATORS = re.compile(r"[,;|]")


class RateLimitExceeded(KitsdError, Rejected):
    """The rate limiter ``limiter`` had no token for the call (go-kit's ``ErrLimited``);
    carries the :class:`kitsd.core.errors.Rejected` marker (outcome ``rejected``).

    ``retry_after`` is the number of seconds until the limiter expects one.
    """

    def __init__(self, limiter: str, limit: str, retry_after: float) -> None:
        self.limiter = limiter
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(f"rate limit {limit} of {limiter!r} exceeded; "
                         f"a token is expected in {retry_after:.3f}s")


def wait_decision(
    reset_at: float, now: float, *, waited: float, budget: float | None, max_wait: float | None
) -> float | None:
    """Seconds to wait for the next token, or ``None`` to reject now: the pure rule.

    ``reset_at``/``now`` are wall-clock seconds (the limiter's); ``budget`` what is
    left of the enclosing retry's deadline; ``waited`` what this call waited so far.
    """
    delay = max(reset_at - now, MIN_WAIT)
    if budget is not None and delay >= budget:
        return None
    if max_wait is not None and waited + delay > max_wait:
        return None
    return delay


def _limit_item(limit: object) -> limits.RateLimitItem:
    """``limit`` as one ``limits.RateLimitItem`` that can grant; raises otherwise."""
    if isinstance(limit, str):
        if _SEPARATORS.search(limit):
            raise MisuseError(f"limit: one limit per middleware (chain two middlewares for "
                              f"two limits), got {limit!r}")
        if _ZERO_MULTIPLE.search(limit):
            raise MisuseError(f"limit: the period must be at least one unit, got {limit!r}")
        try:
            item = limits.parse(limit)
        except ValueError as error:
            raise MisuseError(f"limit: {error}") from error
    elif isinstance(limit, limits.RateLimitItem):
        item = limit
    else:
        raise TypeError(f"limit must be a string like '10/second' or a limits.RateLimitItem, "
                        f"got {limit!r}")
    if item.amount < 1:
        raise MisuseError(f"limit: the amount must be at least 1 (a limit of 0 never grants), "
                          f"got {str(item)!r}")
    if item.multiples < 1:
        raise MisuseError(f"limit: the period must be at least one unit, got {str(item)!r}")
    if item.get_expiry() > MAX_PERIOD:
        raise MisuseError(f"limit: the period must be at most 100 years, got {str(item)!r}")
    return item


def rate_limit(
    limit: str | limits.RateLimitItem,
    *,
    name: str = "default",
    wait: bool = False,
    max_wait: float = DEFAULT_MAX_WAIT,
    storage: str | limits.storage.Storage | limits.aio.storage.Storage = "memory://",
    strategy: str = "moving-window",
) -> Callable[[Endpoint], Endpoint]:
    """Middleware that lets calls through at ``limit`` (see the module doc).

    ``name`` labels the limiter in errors and observations and keys it in the
    storage (limiters with one name and storage share their tokens).  With
    ``wait=True`` a call waits at most ``max_wait`` seconds (default
    :data:`DEFAULT_MAX_WAIT`) in all, and never past the enclosing retry's deadline.

    Raises ``TypeError``/:class:`sd.MisuseError` at once for a bad limit (one that can
    never grant: an amount or a period of 0; several limits in one string; a period
    beyond :data:`MAX_PERIOD`), a ``wait`` that is not a bool, a bad strategy,
    ``max_wait`` (negative, infinite, NaN) or storage; the middleware raises
    ``TypeError`` for an endpoint that is not callable, or a storage object of the
    wrong kind (sync storage for an async endpoint, or the reverse).  Thread- and task-safe.
    """
    item = _limit_item(limit)
    if not isinstance(name, str) or not name:
        raise MisuseError(f"name must be a non-empty string, got {name!r}")
    validate.flag("wait", wait)
    if strategy not in _STRATEGIES:
        raise MisuseError(f"strategy must be one of {', '.join(_STRATEGIES)}, got {strategy!r}")
    validate.seconds("max_wait", max_wait, zero=True)
    if isinstance(storage, str):
        if storage.startswith("async+"):
            raise MisuseError("storage: give the URI without 'async+'; async endpoints add it")
        try:  # the sync backend, built now so that a bad URI fails here
            sync_backend: Any = limits.storage.storage_from_string(storage)
        except limits.errors.ConfigurationError as error:
            raise MisuseError(f"storage: {error}") from error
    elif not isinstance(storage, limits.storage.Storage | limits.aio.storage.Storage):
        raise TypeError(f"storage must be a limits storage or its URI, got {storage!r}")
    sync_type, async_type = _STRATEGIES[strategy]
    shown = str(item)
    limiters: dict[bool, Any] = {}

    def limiter_for(asynchronous: bool) -> Any:
        limiter = limiters.get(asynchronous)
        if limiter is not None:
            return limiter
        if isinstance(storage, str):
            backend: Any = (limits.storage.storage_from_string(f"async+{storage}")
                            if asynchronous else sync_backend)
        else:
            wanted = limits.aio.storage.Storage if asynchronous else limits.storage.Storage
            if not isinstance(storage, wanted):
                raise TypeError(f"rate_limit: a {'async' if asynchronous else 'sync'} endpoint "
                                f"needs a {wanted.__module__}.Storage, got {storage!r}")
            backend = storage
        return limiters.setdefault(
            asynchronous, (async_type if asynchronous else sync_type)(backend))

    def reject(delay: float) -> RateLimitExceeded:
        if HUB.observers:
            emit(RateLimited(name, rejected=True, waited=0.0))
        return RateLimitExceeded(name, shown, delay)

    def decide(reset_at: float, waited: float) -> float | None:
        if not wait:
            return None
        return wait_decision(reset_at, time.time(), waited=waited, budget=remaining(),
                             max_wait=max_wait)

    def middleware(endpoint: Endpoint) -> Endpoint:
        if not callable(endpoint):
            raise TypeError(f"rate_limit(...)(endpoint): endpoint must be callable, "
                            f"got {endpoint!r}")
        if is_async(endpoint):
            limiter = limiter_for(True)

            async def limited_async(request: Any) -> Any:
                waited = 0.0
                while not await limiter.hit(item, name):
                    stats = await limiter.get_window_stats(item, name)
                    delay = decide(stats.reset_time, waited)
                    if delay is None:
                        raise reject(max(stats.reset_time - time.time(), 0.0))
                    await asyncio.sleep(delay)
                    waited += delay
                if waited and HUB.observers:
                    emit(RateLimited(name, rejected=False, waited=waited))
                return await endpoint(request)

            return limited_async
        sync_limiter = limiter_for(False)

        def limited(request: Any) -> Any:
            waited = 0.0
            while not sync_limiter.hit(item, name):
                stats = sync_limiter.get_window_stats(item, name)
                delay = decide(stats.reset_time, waited)
                if delay is None:
                    raise reject(max(stats.reset_time - time.time(), 0.0))
                time.sleep(delay)
                waited += delay
            if waited and HUB.observers:
                emit(RateLimited(name, rejected=False, waited=waited))
            return endpoint(request)

        return limited

    return middleware
