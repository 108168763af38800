"""The transport and the endpoint that forwards a request to one instance, written
once, for asyncio; the sync twin is generated from this module by
``.ci/unasync.py`` (see its ``PAIRS``).  What the two share beyond the text is
:class:`_Core` (``_core.py``); where they genuinely differ (sending, starting a
watch, waiting for another caller's build) lives in
:mod:`kitsd.transport._concurrency`."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Unpack, cast

import httpx

from kitsd import lb
from kitsd.core.deadline import reset_deadline, set_deadline
from kitsd.sd.http import _deadline
from kitsd.transport import _policy
from kitsd.transport._concurrency import (
    AsyncSender,
    async_build_stack,
    async_result,
)
from kitsd.transport._core import Discover, _Core, _Entry, call_deadline, h2_available
from kitsd.transport._options import TransportKeywords
from kitsd.transport._pools import Pools, idle
from kitsd.transport._stack import Forwarder, InstanceEndpointBase, Stack

__all__ = ["AsyncInstanceEndpoint", "AsyncTransport"]


class AsyncInstanceEndpoint(InstanceEndpointBase):
    """Forwards an ``httpx.Request`` to one instance through an inner
    ``httpx.AsyncBaseTransport``: the pool of its address (the default), or the
    one given to the transport, shared by every instance."""

    __slots__ = ("inner", "read", "send")

    def __init__(
        self, instance: str, forwarder: Forwarder, inner: httpx.AsyncBaseTransport,
        release: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(instance, forwarder, release)
        self.inner = inner
        sender = AsyncSender(inner)
        self.send, self.read = sender.send, sender.read

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        forwarder = self.forwarder
        attempt, timeouts, original, may_retry = forwarder.attempt(
            request, self.host, self.port, self.instance)
        try:
            response = await self.send(attempt)
            failure = forwarder.judge(response, request, self.instance, may_retry)
            if failure is None and may_retry and forwarder.buffers(response, may_retry):
                await self.read(response)  # a cut body is this attempt's failure
        except httpx.TransportError as error:
            raise forwarder.failed(error, self.instance, may_retry) from error
        # A body not read yet is read later, by the caller: with the request's own
        # timeouts (httpcore reads this same dict when the body is first iterated).
        timeouts.clear()
        if original:
            timeouts.update(original)
        if failure is None:
            return response
        if failure.retryable:  # closed before the next attempt; kept readable
            try:
                await response.aread()
            finally:
                await response.aclose()
        raise failure


class AsyncTransport(_Core[Stack, lb.AsyncHealthCheckers], httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` that sends each request to an instance of the
    service its URL host names, balanced, retried and ejected::

        client = httpx.AsyncClient(
            transport=kitsd.AsyncTransport("consul://127.0.0.1:8500/{service}"),
            base_url="http://users")
        await client.get("/profile/42")       # -> one of the users instances

    ``discover``: a URL template with ``{service}`` (any ``sd.instancer_from_url``
    scheme; watches of one registry address share one client), ``static://h1:p1,h2:p2``
    (those instances for every service), a callable ``service -> Instancer`` (the
    transport stops it on close), or an :class:`sd.MemoryRegistry`.  Per service,
    on first use, one watch, one Endpointer and one balancer are made and shared
    by every request.  The request URL names no port (instances' ports come from
    the registry): ``http://users:9999/`` raises :class:`sd.MisuseError`.

    Options (keyword-only; see :class:`kitsd.transport.TransportOptions`):

    * ``balancer`` — ``callable(endpointer) -> lb.Balancer`` (default
      :data:`DEFAULT_BALANCER`); ``outlier_detection`` — an ``lb.OutlierDetection``
      given to it as ``outlier_detection=`` (``None`` disables ejection; default
      :data:`OUTLIER_DETECTION`: 5 consecutive 5xx or timeouts eject an instance,
      as a refused connection does at once).
    * ``slow_start`` — an ``lb.SlowStart`` given to the balancer: a new instance's
      share ramps (default :data:`SLOW_START`, ``lb.SlowStart()``: free while
      nothing ramps; ``None`` turns it off).  ``zones``, ``health_check``,
      ``subset``, ``limit``: see :class:`kitsd.transport.TransportOptions`.
    * ``max_attempts`` (3), ``retry_statuses`` ({502, 503, 504}), ``retry_methods``
      (the idempotent ones).  Other methods, and bodies that are streams, are
      retried only when the request never reached an instance (connection
      refused, connect or pool timeout).
    * ``timeout`` — seconds for the whole call when the request has no httpx
      timeout (default 60); otherwise the request's timeout (its largest phase)
      bounds all its attempts together, every socket wait included.
      ``attempt_timeout`` caps each attempt (default: half the call's time, for
      retryable requests), so that a hung instance leaves time for another.
    * ``breakers`` — ``callable(instance) -> pybreaker.CircuitBreaker``: a breaker
      per instance; an open one is skipped.
    * ``budget``, ``hedge`` — passed to ``lb.retry`` when given.
    * ``host_header`` — ``None`` keeps the request's ``Host`` (the service name,
      as a reverse proxy sends); a string, or ``callable(service, instance)``.
    * ``server_name`` — for https: the name for SNI and certificate verification
      (default the service name); a string or ``callable(service)``.
    * ``services`` — the names a request may name (a collection or a
      predicate); others raise :class:`lb.NoEndpointsError` at once.
      ``max_services`` (64) — services watched at once: past it the least
      recently used idle one is closed, and with none idle the request raises
      :class:`kitsd.transport.TooManyServicesError`.  ``idle_timeout`` (300 s):
      a service unused that long is closed; one whose registry answered "no
      instances" after 10 s.  Metrics name a service only once its registry
      answered with instances (or ``services=`` lists it); others are ``other``.
    * ``transport`` — the inner transport for the connections (an
      ``httpx.AsyncBaseTransport``; default ``httpx.AsyncHTTPTransport()``, HTTP/2
      when ``h2`` is installed, each socket wait ending by the call's deadline);
      closed by :meth:`aclose`.  The ``health_check=`` probes go through the one
      given (its TLS settings: ``verify``, a client certificate; without one,
      through the probers' own, with httpx's TLS defaults as the calls'), with the
      calls' ``server_name``, run by an ``lb.AsyncHealthCheckers`` the transport owns.

    A retried response is closed before the next attempt; a call that ends on a
    5xx returns that response as plain httpx would.  Errors: httpx's (the last
    attempt's; ``httpx.TimeoutException`` when the call's time ran out),
    :class:`lb.NoEndpointsError` whose first line says whether the registry
    answered "no instances" or has not answered (and its last error),
    :class:`sd.MisuseError` for a URL host that is not a service name.
    Thread-safe (asyncio: use it from one event loop; the deadline also cancels
    the attempt in flight, and a registry template's watch is started on a worker
    thread, as it may connect, never blocking the loop).  Raises ``TypeError`` /
    :class:`sd.MisuseError` for bad options (or a template whose driver is not
    installed) at construction, before anything starts.
    """

    def __init__(
        self,
        discover: Discover,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Unpack[TransportKeywords],
    ) -> None:
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(f"transport must be an httpx.AsyncBaseTransport, got {transport!r}")
        # health_check=: probes through the inner transport given (its TLS settings and
        # client certificate), else through the checkers' own (httpx's TLS defaults, as
        # the per-instance pools); closed before the inner transports
        super().__init__(discover, options, lambda: lb.AsyncHealthCheckers(transport=transport))
        self._inner = transport
        if transport is None:  # one inner transport per instance address
            self._pools = Pools(self._new_pool, idle)

    def _new_pool(self) -> httpx.AsyncHTTPTransport:
        transport = httpx.AsyncHTTPTransport(verify=self._ssl_context(), http2=h2_available())
        _deadline.install_async(transport)  # every socket wait ends by the call's deadline
        return transport

    def _build(self, name: str) -> Stack:
        forwarder, pools = self._forwarder, self._pools
        if pools is None:
            inner = cast(httpx.AsyncBaseTransport, self._inner)

            def endpoint(instance: str) -> AsyncInstanceEndpoint:
                return AsyncInstanceEndpoint(instance, forwarder, inner)
        else:
            def endpoint(instance: str) -> AsyncInstanceEndpoint:
                return AsyncInstanceEndpoint(
                    instance, forwarder, pools.acquire(instance), pools.release)

        return self._stack_for(name, endpoint, lb.retry_async)

    async def _stack(self, request: httpx.Request, entry: _Entry[Stack] | None) -> Stack:
        """The stack for ``request`` when :meth:`_enter` did not hand it over at once
        (``entry``: retired stacks to close, a build to wait for or to make)."""
        while True:
            if entry is None:
                found = self._enter(request)
                if not isinstance(found, _Entry):
                    return found
                entry = found
            for each in entry.retired:
                await each.aclose()
            for pool in entry.idle_pools:
                await pool.aclose()
            if entry.stack is not None:
                return entry.stack
            if entry.wait is not None:
                stack: Stack = await async_result(entry.wait)  # the builder's error, if it failed
                if stack.enter(time.monotonic()):
                    return stack
                entry = None
                continue  # retired as soon as built: look again
            build = cast(Future[Stack], entry.build)  # neither stack nor wait: ours to build
            if self._checkers is not None:
                self._checkers.start()  # the probers start (asyncio: on this loop)
            try:
                made = await async_build_stack(self._discovery.blocking, self._build, entry.name)
            except BaseException as error:
                self._build_failed(entry.name, build, error)
                raise
            if not self._built(entry.name, build, made):
                await made.aclose()
                raise RuntimeError("kitsd transport is closed")
            return made

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` to an instance of the service its URL host names (see the
        class docstring)."""
        stack = self._enter(request)
        if isinstance(stack, _Entry):
            stack = await self._stack(request, stack)
        try:
            timeout = _policy.call_timeout(request.extensions, self._timeout)
            if not stack.answered.is_set():
                await stack.wait_answer_async(timeout)
            retrying = stack.retrying(self._label(stack))
            deadline = set_deadline(call_deadline(timeout))  # lb.deadline(timeout)
            try:
                response: httpx.Response = await retrying(request)
            except (lb.RetryError, lb.RetryTimeout) as error:
                return self._settle(error, stack, request)
            finally:
                reset_deadline(deadline)
            response.request = request
            return response
        finally:
            stack.leave()

    async def aclose(self) -> None:
        """Stop every watch, close every Endpointer, registry client, health prober and
        inner transport."""
        try:
            for stack in self._take_all():
                await stack.aclose()
        finally:
            try:
                self._discovery.close()
            finally:
                try:
                    if self._checkers is not None:  # before the inner transports they use
                        await self._checkers.aclose()
                finally:
                    for inner in self._inner_transports():
                        await inner.aclose()
