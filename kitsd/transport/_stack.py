"""One service's stack (watch, Endpointer, balancer, retry), and the per-instance
endpoints that forward an ``httpx.Request`` to an instance, sync and async.

The two endpoint classes differ only in ``await``; everything they decide comes
from :mod:`kitsd.transport._policy` through :class:`Forwarder`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pybreaker
import tenacity

from kitsd import lb
from kitsd.core.deadline import remaining
from kitsd.sd.endpointer import Endpointer
from kitsd.sd.instance import split_instance
from kitsd.sd.instancer import Instancer
from kitsd.transport import _httpcore_cancel, _policy
from kitsd.transport._httpx_url import encoded_host, rehost
from kitsd.transport._policy import (
    AttemptFailed,
    AttemptTimeout,
    AttemptUnreachable,
    RetryableStatus,
    Settings,
)

__all__ = ["AsyncInstanceEndpoint", "Forwarder", "InstanceEndpoint", "Stack"]

# Errors of the retry (not of an attempt) that mean nothing was sent: an open breaker.
_NOT_SENT: tuple[type[BaseException], ...] = (pybreaker.CircuitBreakerError,)

# Errors after which the request provably never reached the instance.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

#: Seconds a first request waits for a fresh watch's first answer (bounded by
#: the request's own timeout), so a cold Consul or etcd watch is not "no endpoints".
FIRST_ANSWER_WAIT = 2.0


class Forwarder:
    """What every instance endpoint of one transport shares: the settings, the Host
    and server-name policies.  Builds the request an attempt sends and judges the
    outcome; no I/O."""

    __slots__ = ("host_header", "server_name", "settings")

    def __init__(
        self,
        settings: Settings,
        host_header: Callable[[str, str], str] | str | None,
        server_name: Callable[[str], str] | str | None,
    ) -> None:
        self.settings = settings
        self.host_header = host_header
        self.server_name = server_name

    def attempt(
        self, request: httpx.Request, host: str, port: int, instance: str
    ) -> tuple[httpx.Request, dict[str, float | None], Any, bool]:
        """``(attempt_request, its timeout dict, the request's own timeouts, may_retry)``."""
        settings = self.settings
        method = request.method
        replayable = isinstance(request.stream, httpx.ByteStream)
        may_retry = replayable and method in settings.retry_methods
        extensions = request.extensions
        original = extensions.get("timeout")
        cap = settings.attempt_timeout
        if cap is None and may_retry:
            # Half the call's budget: after a hung instance, one more attempt fits.
            cap = _policy.call_timeout(extensions, settings.default_timeout) / 2
        timeouts = _policy.attempt_timeouts(original, remaining(), cap)
        new_extensions = dict(extensions)
        new_extensions["timeout"] = timeouts
        url = request.url
        headers = request.headers
        host_header = self.host_header
        if host_header is not None:
            headers = headers.copy()
            headers["Host"] = (host_header if isinstance(host_header, str)
                               else host_header(url.host, instance))
        if url.scheme == "https" and "sni_hostname" not in extensions:
            name = self.server_name
            new_extensions["sni_hostname"] = (
                url.host if name is None else name if isinstance(name, str) else name(url.host))
        attempt = httpx.Request(
            method, rehost(url, host, port), headers=headers,
            stream=request.stream, extensions=new_extensions)
        return attempt, timeouts, original, may_retry

    def failed(self, error: httpx.TransportError, instance: str, may_retry: bool) -> AttemptFailed:
        """The attempt error for httpx's ``error``."""
        if isinstance(error, _NEVER_SENT):
            return AttemptUnreachable(error, instance, retryable=True)
        if isinstance(error, httpx.TimeoutException):
            return AttemptTimeout(error, instance, retryable=may_retry)
        return AttemptFailed(error, instance, retryable=may_retry)

    def judge(
        self, response: httpx.Response, instance: str, may_retry: bool
    ) -> RetryableStatus | None:
        """``None`` for a success; else the failure to report (5xx, retry statuses)."""
        status = response.status_code
        if status < 500 and status not in self.settings.retry_statuses:
            return None
        failure, retryable, retry_after = _policy.classify_status(
            status, response.headers.get("retry-after"), instance, may_retry=may_retry,
            settings=self.settings, now=time.time())
        if not failure:
            return None
        return RetryableStatus(response, instance, retryable=retryable, retry_after=retry_after)


class _Endpoint:
    __slots__ = ("forwarder", "host", "instance", "port")

    def __init__(self, instance: str, forwarder: Forwarder) -> None:
        host, self.port = split_instance(instance)
        self.host = encoded_host(host)
        self.instance = instance
        self.forwarder = forwarder

    def __repr__(self) -> str:
        return f"<kitsd.Transport endpoint {self.instance}>"


class InstanceEndpoint(_Endpoint):
    """Forwards an ``httpx.Request`` to one instance through the shared inner transport."""

    __slots__ = ("inner",)

    def __init__(self, instance: str, forwarder: Forwarder, inner: httpx.BaseTransport) -> None:
        super().__init__(instance, forwarder)
        self.inner = inner

    def __call__(self, request: httpx.Request) -> httpx.Response:
        forwarder = self.forwarder
        attempt, timeouts, original, may_retry = forwarder.attempt(
            request, self.host, self.port, self.instance)
        try:
            response = self.inner.handle_request(attempt)
        except httpx.TransportError as error:
            raise forwarder.failed(error, self.instance, may_retry) from error
        # The body is read later, by the caller: with the request's own timeouts
        # (httpcore reads this same dict when the body is first iterated).
        timeouts.clear()
        if original:
            timeouts.update(original)
        failure = forwarder.judge(response, self.instance, may_retry)
        if failure is None:
            return response
        if failure.retryable:  # closed before the next attempt; kept readable
            try:
                response.read()
            finally:
                response.close()
        raise failure


class AsyncInstanceEndpoint(_Endpoint):
    """The asyncio twin of :class:`InstanceEndpoint`."""

    __slots__ = ("inner",)

    def __init__(
        self, instance: str, forwarder: Forwarder, inner: httpx.AsyncBaseTransport
    ) -> None:
        super().__init__(instance, forwarder)
        self.inner = inner

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        forwarder = self.forwarder
        attempt, timeouts, original, may_retry = forwarder.attempt(
            request, self.host, self.port, self.instance)
        try:
            # cancellable once on the wire only: httpcore#1093 (see the module)
            response = await _httpcore_cancel.send(self.inner, attempt)
        except httpx.TransportError as error:
            raise forwarder.failed(error, self.instance, may_retry) from error
        timeouts.clear()
        if original:
            timeouts.update(original)
        failure = forwarder.judge(response, self.instance, may_retry)
        if failure is None:
            return response
        if failure.retryable:
            try:
                await response.aread()
            finally:
                await response.aclose()
        raise failure


def _discard(response: httpx.Response) -> Any:
    """A hedge's losing answer: close it, so its connection goes back to the pool
    (an async response's ``aclose()`` coroutine is awaited by ``lb.retry_async``)."""
    if isinstance(response.stream, httpx.AsyncByteStream):
        return response.aclose()
    response.close()
    return None


def _retry_after_wait(state: tenacity.RetryCallState) -> float:
    """Tenacity wait: the ``Retry-After`` of the failure, else none."""
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    if isinstance(error, RetryableStatus) and error.retry_after is not None:
        return error.retry_after
    return 0.0


class Stack:
    """One service: its watch, Endpointer, balancer and retrying endpoints (one per
    distinct call timeout).  Built by :class:`kitsd.transport.Transport` on first use."""

    _MAX_RETRIES_CACHED = 64

    def __init__(
        self,
        name: str,
        instancer: Instancer,
        factory: Callable[[str], Any],
        make_balancer: Callable[[Endpointer], lb.Balancer],
        make_retry: Callable[..., Any],
        retry_options: dict[str, Any],
        max_attempts: int,
        *,
        settled: bool,
    ) -> None:
        self.name = name
        self._instancer = instancer
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = []
        self.answered = threading.Event()
        self._events = 0
        if settled:
            self.answered.set()
        try:
            self.endpointer = Endpointer(instancer, factory)
            try:
                self.balancer = make_balancer(self.endpointer)
                # After the Endpointer: subscribers hear of a change in the order they
                # subscribed, so when this one wakes waiters the endpoints are there.
                instancer.subscribe(self._on_event)
            except BaseException:
                self.endpointer.close()
                raise
        except BaseException:
            instancer.stop()
            raise
        self._make_retry = make_retry
        self._retry_options = retry_options
        self._max_attempts = max_attempts
        self._retries: dict[float, Any] = {}

        def callback(attempt: int, error: BaseException) -> tuple[bool, BaseException | None]:
            return _policy.keep_trying(attempt, error, max_attempts, _NOT_SENT), None

        self._callback = callback

    def _on_event(self, event: Any) -> None:
        self._events += 1
        if event.instances or event.error is not None or self._events > 1:
            self.answered.set()
            with self._lock:
                waiters = list(self._waiters)
            for loop, wake in waiters:
                # a loop that has closed has no waiter left to wake
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(wake)

    def retrying(self, timeout: float) -> Any:
        """The retrying endpoint for calls bounded by ``timeout`` seconds."""
        endpoint = self._retries.get(timeout)
        if endpoint is not None:
            return endpoint
        endpoint = self._make_retry(
            self._max_attempts, timeout, self.balancer, callback=self._callback,
            wait=_retry_after_wait, name=self.name, discard=_discard, **self._retry_options)
        with self._lock:
            if len(self._retries) < self._MAX_RETRIES_CACHED:
                endpoint = self._retries.setdefault(timeout, endpoint)
        return endpoint

    def wait_answer(self, limit: float) -> None:
        """Wait up to ``limit`` seconds for the watch's first answer (sync callers)."""
        self.answered.wait(min(limit, FIRST_ANSWER_WAIT))
        self.answered.set()  # waited once: from now on an empty set is the answer

    async def wait_answer_async(self, limit: float) -> None:
        """The asyncio twin of :meth:`wait_answer` (polls: only a cold watch waits)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        with self._lock:
            self._waiters.append((loop, wake))
        try:
            if not self.answered.is_set():
                await asyncio.wait_for(future, min(limit, FIRST_ANSWER_WAIT))
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.remove((loop, wake))
        self.answered.set()

    def _retired(self) -> list[Any]:
        with self._lock:
            retries, self._retries = list(self._retries.values()), {}
        return retries

    def close(self) -> None:
        """Stop the watch and close the Endpointer (and hedging pools, if any)."""
        for endpoint in self._retired():
            close = getattr(endpoint, "close", None)
            if callable(close):
                close()
        try:
            self.endpointer.close()
        finally:
            self._instancer.stop()

    async def aclose(self) -> None:
        """The asyncio twin of :meth:`close`."""
        for endpoint in self._retired():
            aclose = getattr(endpoint, "aclose", None)
            if callable(aclose):
                await aclose()
        try:
            await self.endpointer.aclose()
        finally:
            self._instancer.stop()
