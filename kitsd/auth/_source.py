"""The thread and asyncio drivers of :class:`kitsd.auth._token.TokenCache`: one
fetch at a time, however many callers (single flight).

Each driver decides under a plain lock (no I/O under it), fetches outside it, and
wakes its waiters when the fetch ends.  A waiter waits at most ``wait`` seconds
(:func:`lb.remaining` inside a retry, when shorter).  The asyncio driver's
waiters await a future of the fetching task's loop: use one asynchronous source
per event loop, as one ``httpx.AsyncClient``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable

from kitsd.auth._errors import TokenError
from kitsd.auth._token import Decision, Token, TokenCache
from kitsd.core.deadline import remaining

__all__ = ["AsyncSingleFlight", "SingleFlight"]

logger = logging.getLogger(__name__)


def _wait_for(wait: float) -> float:
    left = remaining()
    return wait if left is None else min(wait, left)


def _as_token_error(error: BaseException, name: str) -> TokenError:
    if isinstance(error, TokenError):
        return error
    return TokenError(name, f"fetching a token failed ({type(error).__name__})")


class SingleFlight:
    """Hands out the cached token, fetching it with ``fetch()`` (which returns a
    :class:`Token` or raises) one caller at a time.  Thread-safe."""

    __slots__ = ("_cache", "_condition", "_fetch", "_name", "_wait")

    def __init__(self, fetch: Callable[[], Token], *, name: str, wait: float) -> None:
        self._fetch = fetch
        self._name = name
        self._wait = wait
        self._cache = TokenCache()
        self._condition = threading.Condition(threading.Lock())

    def token(self) -> str:
        """The token to send now; raises :class:`TokenError` when none can be had."""
        waited: int | None = None
        with self._condition:
            while True:
                decision, current = self._cache.decide(time.monotonic(), waited)
                if decision is Decision.USE and current is not None:
                    return current.value
                if decision is Decision.FETCH:
                    break
                if decision is Decision.FAILED:
                    error = self._cache.error
                    raise TokenError(self._name, str(error).removeprefix(f"{self._name}: ")
                                     ) from error
                waited = self._cache.generation
                if not self._condition.wait(_wait_for(self._wait)):
                    raise TokenError(self._name, "timed out waiting for a token")
        return self._run(current)

    def _run(self, current: Token | None) -> str:
        try:
            token = self._fetch()
        except Exception as error:
            failure = _as_token_error(error, self._name)
            with self._condition:
                self._cache.failed(failure)
                self._condition.notify_all()
            if current is not None and current.valid(time.monotonic()):
                logger.warning("%s; the current token stays in use until it expires", failure)
                return current.value
            if failure is error:
                raise
            raise failure from error
        except BaseException:  # KeyboardInterrupt, SystemExit: not the endpoint's failure
            with self._condition:
                self._cache.abandoned()  # a waiter fetches instead
                self._condition.notify_all()
            raise
        with self._condition:
            self._cache.fetched(token)
            self._condition.notify_all()
        return token.value

    def invalidate(self, value: str) -> None:
        """Drop the cached token if it is ``value`` (a server refused it)."""
        with self._condition:
            self._cache.invalidate(value)


class AsyncSingleFlight:
    """The asyncio twin of :class:`SingleFlight`: ``await token()``; ``fetch`` is a
    coroutine function.  A cancelled fetch wakes its waiters, and one of them
    fetches instead."""

    __slots__ = ("_cache", "_fetch", "_lock", "_name", "_wait", "_waiter")

    def __init__(self, fetch: Callable[[], Awaitable[Token]], *, name: str, wait: float) -> None:
        self._fetch = fetch
        self._name = name
        self._wait = wait
        self._cache = TokenCache()
        self._lock = threading.Lock()
        self._waiter: asyncio.Future[None] | None = None

    async def token(self) -> str:
        """The token to send now; raises :class:`TokenError` when none can be had."""
        waited: int | None = None
        waiter: asyncio.Future[None] | None = None
        while True:
            with self._lock:
                decision, current = self._cache.decide(time.monotonic(), waited)
                if decision is Decision.WAIT:
                    waited = self._cache.generation
                    waiter = self._waiter
                elif decision is Decision.FETCH:
                    self._waiter = asyncio.get_running_loop().create_future()
            if decision is Decision.USE and current is not None:
                return current.value
            if decision is Decision.FETCH:
                return await self._run(current)
            if decision is Decision.FAILED:
                error = self._cache.error
                raise TokenError(self._name, str(error).removeprefix(f"{self._name}: ")
                                 ) from error
            if waiter is None:  # the fetch ended between deciding and now
                continue
            try:
                await asyncio.wait_for(asyncio.shield(waiter), _wait_for(self._wait))
            except TimeoutError:
                raise TokenError(self._name, "timed out waiting for a token") from None

    async def _run(self, current: Token | None) -> str:
        try:
            token = await self._fetch()
        except Exception as error:
            failure = _as_token_error(error, self._name)
            self._finish(None, failure)
            if current is not None and current.valid(time.monotonic()):
                logger.warning("%s; the current token stays in use until it expires", failure)
                return current.value
            if failure is error:
                raise
            raise failure from error
        except BaseException:  # cancelled, KeyboardInterrupt: a waiter fetches instead
            self._finish(None, None)
            raise
        self._finish(token, None)
        return token.value

    def _finish(self, token: Token | None, failure: TokenError | None) -> None:
        with self._lock:
            if token is not None:
                self._cache.fetched(token)
            elif failure is not None:
                self._cache.failed(failure)
            else:
                self._cache.abandoned()
            waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def invalidate(self, value: str) -> None:
        """Drop the cached token if it is ``value`` (a server refused it)."""
        with self._lock:
            self._cache.invalidate(value)
