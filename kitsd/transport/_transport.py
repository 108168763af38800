"""``kitsd.Transport`` and ``kitsd.AsyncTransport``: httpx transports whose URL
host is a service name.

Both share :class:`_Core` (options, the per-service stacks, how a finished call
becomes a response or an error); each adds only how it calls and closes.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Callable, Collection
from typing import Any, Generic, TypeVar

import httpx

from kitsd import breaker, lb
from kitsd.core.errors import MisuseError, shown_value
from kitsd.sd.endpointer import Endpointer
from kitsd.sd.instancer import Instancer
from kitsd.sd.memory import MemoryRegistry
from kitsd.sd.url import instancer_from_url, redact_url
from kitsd.transport import _policy
from kitsd.transport._policy import AttemptFailed, RetryableStatus
from kitsd.transport._stack import AsyncInstanceEndpoint, Forwarder, InstanceEndpoint, Stack

__all__ = ["DEFAULT_BALANCER", "AsyncTransport", "Transport"]

logger = logging.getLogger(__name__)

#: The balancer a transport uses unless told otherwise: the best this project has
#: for latency.  PeakEWMA (latency-aware) where lb has it, else LeastLoaded.
DEFAULT_BALANCER: Callable[..., lb.Balancer] = getattr(lb, "PeakEWMA", lb.LeastLoaded)

# sd.instancer_from_url's schemes
_SCHEMES = ("static", "etcd", "etcds", "consul", "consuls", "dnssrv", "zk", "k8s")
_UNSET: Any = object()

Discover = str | Callable[[str], Instancer] | MemoryRegistry
StackT = TypeVar("StackT", bound=Stack)


def _h2_available() -> bool:
    return importlib.util.find_spec("h2") is not None


def _check_discover(discover: object) -> tuple[Callable[[str], Instancer], bool]:
    """``(service -> Instancer, whether an empty first answer is final)``."""
    if isinstance(discover, MemoryRegistry):
        return discover.instancer, True
    if isinstance(discover, str):
        if "{service}" not in discover:
            raise MisuseError(
                f"discover URL template must contain {{service}}, got {redact_url(discover)}")
        scheme = discover.partition("://")[0].lower()
        if scheme not in _SCHEMES:
            raise MisuseError(
                f"discover URL template has an unknown scheme {scheme!r} in "
                f"{redact_url(discover)} (want one of {', '.join(_SCHEMES)})")
        template = discover
        return (lambda service: instancer_from_url(template.replace("{service}", service)),
                scheme == "static")
    if callable(discover):
        return discover, False
    raise TypeError(
        "discover must be a URL template with {service}, a callable service -> Instancer, "
        f"or an sd.MemoryRegistry, got {shown_value(discover)}")


class _Core(Generic[StackT]):
    """What both transports share."""

    def __init__(
        self,
        discover: Discover,
        *,
        balancer: Callable[..., lb.Balancer] | None,
        max_attempts: int,
        retry_statuses: Collection[int],
        retry_methods: Collection[str],
        timeout: float,
        attempt_timeout: float | None,
        breakers: Callable[[str], Any] | None,
        outlier_detection: Any,
        budget: Any,
        hedge: Any,
        host_header: Callable[[str, str], str] | str | None,
        server_name: Callable[[str], str] | str | None,
    ) -> None:
        self._instancer_for, self._settled = _check_discover(discover)
        settings = _policy.check_settings(
            max_attempts=max_attempts, retry_statuses=retry_statuses,
            retry_methods=retry_methods, timeout=timeout, attempt_timeout=attempt_timeout)
        self._settings = settings
        self._max_attempts = max_attempts
        make = DEFAULT_BALANCER if balancer is None else balancer
        if not callable(make):
            raise TypeError(f"balancer must be callable(endpointer) -> Balancer, got {make!r}")
        if outlier_detection is _UNSET:
            self._make_balancer: Callable[[Endpointer], lb.Balancer] = make
        else:
            def make_balancer(endpointer: Endpointer) -> lb.Balancer:
                return make(endpointer, outlier_detection=outlier_detection)
            self._make_balancer = make_balancer
        if breakers is not None and not callable(breakers):
            raise TypeError(
                f"breakers must be callable(instance) -> CircuitBreaker, got {breakers!r}")
        self._breakers = breakers
        self._retry_options = {"budget": budget, "hedge": hedge}
        for name, value in (("host_header", host_header), ("server_name", server_name)):
            if value is not None and not isinstance(value, str) and not callable(value):
                raise TypeError(f"{name} must be a string or a callable, got {value!r}")
        self._forwarder = Forwarder(settings, host_header, server_name)
        self._stacks: dict[str, StackT] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _stack(self, request: httpx.Request) -> StackT:
        host = request.url.host
        stack = self._stacks.get(host)
        if stack is not None:
            return stack
        name = _policy.service_name(host)
        with self._lock:
            if self._closed:
                raise RuntimeError("kitsd transport is closed")
            stack = self._stacks.get(name)
        if stack is not None:
            return stack
        built = self._build(name)  # may start a watch: outside the lock
        with self._lock:
            stack = self._stacks.get(name)
            if stack is None and not self._closed:
                self._stacks[name] = built
                return built
        self._discard(built)
        if stack is None:
            raise RuntimeError("kitsd transport is closed")
        return stack

    def _factory(self, endpoint: Callable[[str], Any]) -> Callable[[str], Any]:
        if self._breakers is None:
            return endpoint
        return breaker.per_instance(endpoint, self._breakers)

    def _build(self, name: str) -> StackT:
        raise NotImplementedError

    def _discard(self, stack: StackT) -> None:
        stack.close()

    def _take_all(self) -> list[StackT]:
        with self._lock:
            self._closed = True
            stacks, self._stacks = list(self._stacks.values()), {}
        return stacks

    def _settle(
        self, error: lb.RetryError | lb.RetryTimeout, stack: Stack, request: httpx.Request
    ) -> httpx.Response:
        """What a call that did not succeed gives the caller: the response it ended
        on, else an httpx error (or :class:`lb.NoEndpointsError` naming the service)."""
        last = error.final if isinstance(error, lb.RetryError) else (
            error.errors[-1] if error.errors else None)
        if isinstance(last, RetryableStatus):
            response: httpx.Response = last.response
            response.request = request
            return response
        if isinstance(last, lb.NoEndpointsError):
            raise lb.NoEndpointsError(
                f"no endpoints available for service {stack.name!r}") from error
        if isinstance(error, lb.RetryTimeout):
            raise httpx.TimeoutException(
                f"service {stack.name!r}: {error}", request=request) from error
        if isinstance(last, AttemptFailed):
            original = last.error
            if len(error.errors) > 1:
                original.add_note(f"kitsd: service {stack.name!r}, {error}")
            raise original
        raise last if last is not None else error


class Transport(_Core[Stack], httpx.BaseTransport):
    """An ``httpx.BaseTransport`` that sends each request to an instance of the
    service its URL host names, balanced, retried and ejected::

        client = httpx.Client(transport=kitsd.Transport("consul://127.0.0.1:8500/{service}"),
                              base_url="http://users")
        client.get("/profile/42")       # -> one of the users instances

    ``discover``: a URL template with ``{service}`` (any ``sd.instancer_from_url``
    scheme), a callable ``service -> Instancer`` (the transport stops it on close),
    or an :class:`sd.MemoryRegistry`.  Per service, on first use, one watch, one
    Endpointer and one balancer are made and shared by every request.

    Options (keyword-only):

    * ``balancer`` — ``callable(endpointer) -> lb.Balancer`` (default
      :data:`DEFAULT_BALANCER`); ``outlier_detection`` — an ``lb.OutlierDetection``
      given to it as ``outlier_detection=`` (``None`` disables ejection; unset:
      the balancer's default).
    * ``max_attempts`` (3), ``retry_statuses`` ({502, 503, 504}), ``retry_methods``
      (the idempotent ones).  Other methods, and bodies that are streams, are
      retried only when the request never reached an instance (connection
      refused, connect or pool timeout).
    * ``timeout`` — seconds for the whole call when the request has no httpx
      timeout (default 60); otherwise the request's timeout (its largest phase)
      bounds all its attempts together.  ``attempt_timeout`` caps each attempt's
      wait for response headers (default: half the call's time, for retryable
      requests), so that a hung instance leaves time for another.
    * ``breakers`` — ``callable(instance) -> pybreaker.CircuitBreaker``: a breaker
      per instance; an open one is skipped.
    * ``budget``, ``hedge`` — passed to ``lb.retry`` when given.
    * ``host_header`` — ``None`` keeps the request's ``Host`` (the service name,
      as a reverse proxy sends); a string, or ``callable(service, instance)``.
    * ``server_name`` — for https: the name for SNI and certificate verification
      (default the service name); a string or ``callable(service)``.
    * ``transport`` — the inner transport for the connections (default
      ``httpx.HTTPTransport()``, HTTP/2 when ``h2`` is installed); closed by
      :meth:`close`.

    A retried response is closed before the next attempt; a call that ends on a
    5xx returns that response as plain httpx would.  Errors: httpx's (the last
    attempt's; ``httpx.TimeoutException`` when the call's time ran out),
    :class:`lb.NoEndpointsError` naming a service without instances,
    :class:`sd.MisuseError` for a URL host that is not a service name.
    Thread-safe.  Raises ``TypeError`` / :class:`sd.MisuseError` for bad options
    at construction, before anything starts.
    """

    def __init__(
        self,
        discover: Discover,
        *,
        balancer: Callable[..., lb.Balancer] | None = None,
        max_attempts: int = 3,
        retry_statuses: Collection[int] = _policy.RETRY_STATUSES,
        retry_methods: Collection[str] = _policy.IDEMPOTENT_METHODS,
        timeout: float = 60.0,
        attempt_timeout: float | None = None,
        breakers: Callable[[str], Any] | None = None,
        outlier_detection: Any = _UNSET,
        budget: Any = None,
        hedge: Any = None,
        host_header: Callable[[str, str], str] | str | None = None,
        server_name: Callable[[str], str] | str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            raise TypeError(f"transport must be an httpx.BaseTransport, got {transport!r}")
        super().__init__(
            discover, balancer=balancer, max_attempts=max_attempts,
            retry_statuses=retry_statuses, retry_methods=retry_methods, timeout=timeout,
            attempt_timeout=attempt_timeout, breakers=breakers,
            outlier_detection=outlier_detection, budget=budget, hedge=hedge,
            host_header=host_header, server_name=server_name)
        self._inner = transport if transport is not None else httpx.HTTPTransport(
            http2=_h2_available())

    def _build(self, name: str) -> Stack:
        forwarder, inner = self._forwarder, self._inner
        return Stack(
            name, self._instancer_for(name),
            self._factory(lambda instance: InstanceEndpoint(instance, forwarder, inner)),
            self._make_balancer, lb.retry, self._retry_options, self._max_attempts,
            settled=self._settled)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        stack = self._stack(request)
        timeout = _policy.call_timeout(request.extensions, self._settings.default_timeout)
        if not stack.answered.is_set():
            stack.wait_answer(timeout)
        try:
            response: httpx.Response = stack.retrying(timeout)(request)
        except (lb.RetryError, lb.RetryTimeout) as error:
            return self._settle(error, stack, request)
        response.request = request
        return response

    def close(self) -> None:
        """Stop every watch, close every Endpointer and the inner transport."""
        try:
            for stack in self._take_all():
                stack.close()
        finally:
            self._inner.close()


class AsyncTransport(_Core[Stack], httpx.AsyncBaseTransport):
    """The asyncio twin of :class:`Transport` (an ``httpx.AsyncBaseTransport``), with
    the same options; ``transport`` is an ``httpx.AsyncBaseTransport`` (default
    ``httpx.AsyncHTTPTransport()``).  Use it from one event loop; the deadline
    also cancels the attempt in flight."""

    def __init__(
        self,
        discover: Discover,
        *,
        balancer: Callable[..., lb.Balancer] | None = None,
        max_attempts: int = 3,
        retry_statuses: Collection[int] = _policy.RETRY_STATUSES,
        retry_methods: Collection[str] = _policy.IDEMPOTENT_METHODS,
        timeout: float = 60.0,
        attempt_timeout: float | None = None,
        breakers: Callable[[str], Any] | None = None,
        outlier_detection: Any = _UNSET,
        budget: Any = None,
        hedge: Any = None,
        host_header: Callable[[str, str], str] | str | None = None,
        server_name: Callable[[str], str] | str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(f"transport must be an httpx.AsyncBaseTransport, got {transport!r}")
        super().__init__(
            discover, balancer=balancer, max_attempts=max_attempts,
            retry_statuses=retry_statuses, retry_methods=retry_methods, timeout=timeout,
            attempt_timeout=attempt_timeout, breakers=breakers,
            outlier_detection=outlier_detection, budget=budget, hedge=hedge,
            host_header=host_header, server_name=server_name)
        self._inner = transport if transport is not None else httpx.AsyncHTTPTransport(
            http2=_h2_available())

    def _build(self, name: str) -> Stack:
        forwarder, inner = self._forwarder, self._inner
        return Stack(
            name, self._instancer_for(name),
            self._factory(lambda instance: AsyncInstanceEndpoint(instance, forwarder, inner)),
            self._make_balancer, lb.retry_async, self._retry_options, self._max_attempts,
            settled=self._settled)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        stack = self._stack(request)
        timeout = _policy.call_timeout(request.extensions, self._settings.default_timeout)
        if not stack.answered.is_set():
            await stack.wait_answer_async(timeout)
        try:
            response: httpx.Response = await stack.retrying(timeout)(request)
        except (lb.RetryError, lb.RetryTimeout) as error:
            return self._settle(error, stack, request)
        response.request = request
        return response

    async def aclose(self) -> None:
        """Stop every watch, close every Endpointer and the inner transport."""
        try:
            for stack in self._take_all():
                await stack.aclose()
        finally:
            await self._inner.aclose()
