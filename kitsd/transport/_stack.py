"""One service's stack (watch, Endpointer, balancer, retry), and what the per-instance
endpoints share (:class:`Forwarder`, :class:`InstanceEndpointBase`).

The endpoints themselves (``_async/endpoint.py`` and its generated sync twin) forward
an ``httpx.Request`` to an instance; everything they decide comes from the HTTP
attempt rules (:mod:`sd.http._attempt`) through :class:`Forwarder`.
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

from kitsd import lb
from kitsd.core.deadline import remaining
from kitsd.core.errors import PermissionDeniedError, RegistryUnavailableError, clip
from kitsd.core.observe import HUB, WatchLabel
from kitsd.sd.endpointer import Endpointer
from kitsd.sd.event import Event
from kitsd.sd.http._attempt import StatusError, cap_timeouts, judge_status, transport_failure
from kitsd.sd.instance import split_instance
from kitsd.sd.instancer import Instancer
from kitsd.transport import _policy
from kitsd.transport._httpx_url import attempt_request, content_length, encoded_host, rehost
from kitsd.transport._options import TransportOptions
from kitsd.transport._policy import (
    AttemptFailed,
    AttemptTimeout,
    AttemptUnreachable,
    InstanceLeaving,
)
from kitsd.transport._services import OTHER, Usage

__all__ = ["Forwarder", "InstanceEndpointBase", "Stack"]

# Errors of the retry (not of an attempt) that mean nothing was sent: an open breaker.
_NOT_SENT: tuple[type[BaseException], ...] = (pybreaker.CircuitBreakerError,)

#: The retrying endpoint's own timeout: never the bound, each call's ``lb.deadline``
#: (the request's timeout) is.
CALL_TIMEOUT_CEILING = 86_400.0

#: Seconds a first request waits for a fresh watch's first answer (bounded by
#: the request's own timeout), so a cold Consul or etcd watch is not "no endpoints".
FIRST_ANSWER_WAIT = 2.0


class Forwarder:
    """What every instance endpoint of one transport shares: the options, the Host
    and server-name policies.  Builds the request an attempt sends and judges the
    outcome by the HTTP attempt rules; no I/O.

    Propagation: an installed observer (:mod:`kitsd.core.observe`) with an
    ``inject_headers(headers)`` method (``kitsd.otel``'s) is given each attempt's
    headers, while that attempt is current, so every attempt carries its own
    trace context (W3C ``traceparent``) without event hooks."""

    __slots__ = ("_attempt_timeout", "_buffer_body", "_host_header", "_injecting",
                 "_retry_methods", "_timeout", "options")

    def __init__(self, options: TransportOptions) -> None:
        self.options = options
        # read on every attempt: plain attributes, not the options' properties
        self._buffer_body = options.buffer_body
        self._retry_methods = options.retry_methods
        self._attempt_timeout = options.attempt_timeout
        self._timeout = options.timeout
        self._host_header = options.host_header
        # (the installed observers, their inject_headers): looked up once per set of
        # observers, replaced whole so that a thread never sees one without the other
        self._injecting: tuple[tuple[Any, ...], tuple[Callable[[Any], None], ...]] = ((), ())

    def buffers(self, response: httpx.Response, may_retry: bool) -> bool:
        """Whether ``response`` (a success) has its body read within the attempt
        (:func:`kitsd.transport._policy.buffered`)."""
        return may_retry and _policy.buffered(
            may_retry, content_length(response.headers), self._buffer_body)

    def attempt(
        self, request: httpx.Request, host: str, port: int, instance: str
    ) -> tuple[httpx.Request, dict[str, float | None], Any, bool]:
        """``(attempt_request, its timeout dict, the request's own timeouts, may_retry)``."""
        method = request.method
        stream = request.stream
        may_retry = method in self._retry_methods and isinstance(stream, httpx.ByteStream)
        extensions = request.extensions
        original = extensions.get("timeout")
        cap = self._attempt_timeout
        if cap is None and may_retry:  # only then does the cap need the call's time
            cap = _policy.attempt_cap(
                None, may_retry, _policy.call_timeout(extensions, self._timeout))
        timeouts = cap_timeouts(original, remaining(), cap)
        new_extensions = dict(extensions)
        new_extensions["timeout"] = timeouts
        url = request.url
        headers = request.headers  # shared with the caller's request unless changed
        host_header = self._host_header
        observers = HUB.observers
        seen, injectors = self._injecting
        if observers is not seen:
            injectors = _injectors(observers)
            self._injecting = (observers, injectors)
        if host_header is not None or injectors:
            headers = headers.copy()  # the caller's request keeps its own headers
            if host_header is not None:
                headers["Host"] = (host_header if isinstance(host_header, str)
                                   else host_header(url.host, instance))
            for inject in injectors:  # kitsd.otel: the attempt's trace context
                inject(headers)
        if url.scheme == "https" and "sni_hostname" not in extensions:
            name = self.options.server_name
            new_extensions["sni_hostname"] = (
                url.host if name is None else name if isinstance(name, str) else name(url.host))
        attempt = attempt_request(method, rehost(url, host, port), headers, stream,
                                  new_extensions)
        return attempt, timeouts, original, may_retry

    @staticmethod
    def failed(error: httpx.TransportError, instance: str, may_retry: bool) -> AttemptFailed:
        """The attempt error for httpx's ``error``."""
        kind = transport_failure(error)
        retryable = may_retry or kind.never_sent
        if kind.instance_fault and kind.never_sent:
            return AttemptUnreachable(error, instance, retryable=retryable)
        if kind.timeout:
            return AttemptTimeout(error, instance, retryable=retryable)
        return AttemptFailed(error, instance, retryable=retryable)

    def judge(
        self, response: httpx.Response, request: httpx.Request, instance: str, may_retry: bool
    ) -> StatusError | None:
        """``None`` for a success; else the failure to report (5xx, retry statuses)."""
        status = response.status_code
        options = self.options
        if status < 500 and status not in options.retry_statuses:
            return None  # the common case, without building a verdict
        if _policy.is_draining(status, response.headers):
            return InstanceLeaving(response, instance, request.method, request.url.path)
        verdict = judge_status(
            status, accepted=status < 500 and not may_retry,
            retry_statuses=options.retry_statuses, may_retry=may_retry,
            retry_after=response.headers.get("retry-after"), now=time.time())
        if not verdict.failure:
            return None
        return StatusError(response, instance, request.method, request.url.path,
                           retryable=verdict.retryable, retry_after=verdict.retry_after)


def _injectors(observers: tuple[Any, ...]) -> tuple[Callable[[Any], None], ...]:
    """The ``inject_headers`` methods of ``observers`` that have one."""
    found = (getattr(observer, "inject_headers", None) for observer in observers)
    return tuple(inject for inject in found if callable(inject))


class InstanceEndpointBase:
    """What both instance endpoints share: the instance, its host as httpx stores it,
    its port, the forwarder, and how to let go of its address's pool
    (``_async/transport.py`` and its generated twin)."""

    __slots__ = ("_release", "forwarder", "host", "instance", "port")

    def __init__(
        self, instance: str, forwarder: Forwarder,
        release: Callable[[str], None] | None = None,
    ) -> None:
        host, self.port = split_instance(instance)
        self.host = encoded_host(host)
        self.instance = instance
        self.forwarder = forwarder
        self._release = release

    def close(self) -> None:
        """The instance left: let go of its pool (the transport closes a pool nobody
        holds once its connections are idle).  Idempotent; no I/O."""
        release, self._release = self._release, None
        if release is not None:
            release(self.instance)

    def __repr__(self) -> str:
        return f"<kitsd.Transport endpoint {self.instance}>"


def _discard(response: httpx.Response) -> Any:
    """A hedge's losing answer: close it, so its connection goes back to the pool
    (an async response's ``aclose()`` coroutine is awaited by ``lb.retry_async``).

    A body read within the attempt (``buffer_body``) is an ``httpx.ByteStream``,
    both sync and async: it is closed here, never handed back as a coroutine that
    the sync ``lb.retry`` could not await."""
    if isinstance(response.stream, httpx.SyncByteStream):
        response.close()
        return None
    return response.aclose()


def _retry_after_wait(attempt: int, error: BaseException, elapsed: float) -> float:
    """``wait=`` of the retry: the ``Retry-After`` of the failure, else none."""
    if isinstance(error, StatusError) and error.retry_after is not None:
        return error.retry_after
    return 0.0


class Stack:
    """One service: its watch, Endpointer, balancer and one retrying endpoint (each
    call bounded by its own deadline), what discovery has said so far, and how it is used
    (calls in flight, last use) for the transport's bound on services.  Built by
    the transport on first use."""

    def __init__(
        self,
        name: str,
        instancer: Instancer,
        factory: Callable[[str], Any],
        make_balancer: Callable[[Endpointer], lb.Balancer],
        make_retry: Callable[..., Any],
        options: TransportOptions,
        *,
        registry: str,
        now: float,
        watch_label: WatchLabel | None = None,
    ) -> None:
        self.name = name
        self.registry = registry
        #: what the service's registry watch is called in observations
        self.watch_label = WatchLabel(OTHER) if watch_label is None else watch_label
        self._instancer = instancer
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = []
        self.answered = threading.Event()
        # What discovery said: (the registry answered, it had instances at least once,
        # since when it has answered "no instances", the latest error)
        self.ok = False
        self.had_instances = False
        self.empty_since: float | None = None
        self.error: BaseException | None = None
        # How the transport uses it
        self.last_used = now
        # one item per call in flight: list.append/pop are atomic, so a call counts
        # itself in and out without a lock (see enter)
        self._calls: list[None] = []
        self.retired = False
        self.label = OTHER
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
        self._options = options
        self._retry: Any = None
        self._stale: list[Any] = []  # the retrying endpoint of a former label
        max_attempts = options.max_attempts

        def callback(attempt: int, error: BaseException) -> tuple[bool, BaseException | None]:
            return _policy.keep_trying(attempt, error, max_attempts, _NOT_SENT), None

        self._callback = callback

    # --- discovery --------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.error is not None:
            self.error = event.error
        elif event.instances:
            self.ok = self.had_instances = True
            self.empty_since = None
            self.error = None
        else:
            self.ok = True
            self.error = None
            if self.empty_since is None:
                self.empty_since = time.monotonic()
        self.answered.set()
        with self._lock:
            waiters = list(self._waiters)
        for loop, wake in waiters:
            # a loop that has closed has no waiter left to wake
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake)

    def no_endpoints(self) -> str:
        """Why the service has no endpoints, for the first line of the error."""
        name = self.name
        head = f"no endpoints available for service {name!r}"
        error = self.error
        if self.ok:
            text = f"{head}: the registry answered: no instances of {name!r}"
            if error is not None:
                text += f" (failing since: {_describe(error)})"
            return text
        if error is not None:
            return f"{head}: {not_reached(self.registry, error)}"
        return f"{head}: {self.registry} has not answered yet"

    def wait_answer(self, limit: float) -> None:
        """Wait up to ``limit`` seconds for the watch's first answer (sync callers)."""
        self.answered.wait(min(limit, FIRST_ANSWER_WAIT))
        self.answered.set()  # waited once: from now on an empty set is the answer

    async def wait_answer_async(self, limit: float) -> None:
        """The asyncio twin of :meth:`wait_answer` (only a cold watch waits)."""
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

    # --- use, for the transport's bound on services --------------------------------

    # enter() counts a call in, then looks at `retired`; retire_if_idle() sets
    # `retired`, then looks at the count (and takes it back if a call is counted).
    # Each side writes before it reads, so at least one of them sees the other:
    # a call never runs on a retired stack, and a stack with a call in flight is
    # never retired.  A call that backs off while a retirement is being taken back
    # retries under the transport's lock, which retire_if_idle() runs under.

    def enter(self, now: float) -> bool:
        """Count a call in; ``False`` when the stack was retired meanwhile."""
        calls = self._calls
        calls.append(None)
        if self.retired:
            calls.pop()
            return False
        self.last_used = now
        return True

    def leave(self) -> None:
        """Count a call out."""
        self._calls.pop()

    @property
    def inflight(self) -> int:
        """Calls in flight."""
        return len(self._calls)

    def usage(self) -> Usage:
        """A snapshot for :func:`kitsd.transport._services.plan_room`."""
        return Usage(self.name, self.last_used, len(self._calls), self.empty_since)

    def retire_if_idle(self) -> bool:
        """Retire the stack (no call may enter it after) if no call is in flight.
        Called under the transport's lock."""
        self.retired = True
        if self._calls:
            self.retired = False
            return False
        return True

    # --- calls --------------------------------------------------------------------------

    def retrying(self, label: str) -> Any:
        """The service's one retrying endpoint, whose calls observers see as
        ``label``'s (each call is bounded by its own ``lb.deadline``)."""
        endpoint = self._retry
        if endpoint is not None and label == self.label:
            return endpoint
        options = self._options
        endpoint = self._make_retry(
            options.max_attempts, CALL_TIMEOUT_CEILING, self.balancer, callback=self._callback,
            wait=_retry_after_wait, name=label, discard=_discard, budget=options.budget,
            hedge=options.hedge, **({"limit": options.limit} if options.limit else {}))
        with self._lock:
            if self._retry is not None and label == self.label:
                self._stale.append(endpoint)  # another call made it first
                return self._retry
            if self._retry is not None:
                self._stale.append(self._retry)  # calls in flight may use it: closed later
            self._retry, self.label = endpoint, label
        return endpoint

    def _retired_endpoints(self) -> list[Any]:
        with self._lock:
            retries = [*self._stale, *([self._retry] if self._retry is not None else [])]
            self._retry, self._stale = None, []
        return retries

    def close(self) -> None:
        """Stop the watch and close the Endpointer (and hedging pools, if any)."""
        for endpoint in self._retired_endpoints():
            close = getattr(endpoint, "close", None)
            if callable(close):
                close()
        self._close_balancer()
        try:
            self.endpointer.close()
        finally:
            self._instancer.stop()

    def _close_balancer(self) -> None:
        """Stop the balancer's health watching (lb's balancers have ``close()``)."""
        close = getattr(self.balancer, "close", None)
        if callable(close):
            close()

    async def aclose(self) -> None:
        """The asyncio twin of :meth:`close`."""
        for endpoint in self._retired_endpoints():
            aclose = getattr(endpoint, "aclose", None)
            if callable(aclose):
                await aclose()
        self._close_balancer()
        try:
            await self.endpointer.aclose()
        finally:
            self._instancer.stop()


def not_reached(registry: str, error: BaseException) -> str:
    """Why discovery through ``registry`` (redacted) has not succeeded, ``error`` its
    last failure: what a caller's error says after "no endpoints available"."""
    if isinstance(error, PermissionDeniedError):
        what = "the registry refused the credentials"
    elif isinstance(error, RegistryUnavailableError):
        what = "the registry is unreachable"
    else:
        what = "discovery has not succeeded yet"
    return f"{what}: {registry}: {_describe(error)}"


def _describe(error: BaseException) -> str:
    """An error for a message: its type and its text, cut (drivers redact their errors)."""
    return f"{type(error).__name__}: {clip(str(error), 300)}"
