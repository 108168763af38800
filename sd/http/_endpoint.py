"""The sync and async HTTP endpoints, and the factories that build them.

Each endpoint is a thin driver over :class:`sd.http._spec.Spec` (the steps
before and after sending) and :class:`sd.http._clients.ClientSettings` (how its
client is made).  Both are built once per factory and shared by its endpoints,
so an endpoint itself is a few hundred bytes until its first call makes its
client.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import httpx

from kitsd.core.deadline import current_deadline
from kitsd.sd.http._clients import ClientSettings
from kitsd.sd.http._spec import UNREACHED, AcceptStatus, Spec, unreachable
from kitsd.sd.instance import normalize_instance

__all__ = ["AsyncHTTPEndpoint", "HTTPEndpoint", "async_factory", "factory"]

logger = logging.getLogger(__name__)

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


class _Shared:
    """What every endpoint of one factory shares: the spec and the client settings."""

    __slots__ = ("settings", "spec")

    def __init__(self, spec: Spec[Any, Any], settings: ClientSettings) -> None:
        self.spec = spec
        self.settings = settings

    @classmethod
    def build(
        cls,
        method: object,
        path: object,
        encode: object,
        decode: object,
        client_kwargs: Mapping[str, Any] | None,
        accept_status: AcceptStatus,
        scheme: object,
        *,
        asynchronous: bool,
    ) -> _Shared:
        spec = Spec.build(method, path, encode, decode, accept_status, scheme)
        return cls(spec, ClientSettings(spec.scheme, client_kwargs, asynchronous=asynchronous))


class _Endpoint(Generic[RequestT, ResponseT]):
    """What both endpoint kinds share: the constructor, the instance and its URL,
    the repr, and the lifecycle bookkeeping.  Each subclass adds its client,
    ``__call__`` and closing (``close`` or ``aclose``, never both).

    Lifecycle, decided under ``_lock`` (no I/O under it): a call enters (making
    the client if there is none, refused once closed) and leaves; ``close``
    marks the endpoint closed and closes the client at once if no call is in
    flight, else the last call to leave closes it.  So a connection a call is
    still opening can never outlive the close (httpcore's pool, closed while a
    connection is being opened, loses track of that connection), and closing
    never waits for a call.
    """

    __slots__ = (
        "__weakref__", "_base_url", "_closed", "_inflight", "_instance", "_lock", "_shared",
        "_spec", "_url",
    )
    _asynchronous = False
    _spec: Spec[RequestT, ResponseT]
    # The absolute URL of every call, parsed once, by the first call (with the client):
    # httpx then skips joining a path to base_url and parsing the result on each request.
    _url: httpx.URL

    def __init__(
        self,
        instance: str,
        method: str,
        path: str,
        *,
        encode: Callable[[RequestT], Mapping[str, Any]],
        decode: Callable[[httpx.Response], ResponseT],
        client_kwargs: Mapping[str, Any] | None = None,
        accept_status: AcceptStatus = None,
        scheme: str = "http",
    ) -> None:
        shared = _Shared.build(
            method, path, encode, decode, client_kwargs, accept_status, scheme,
            asynchronous=self._asynchronous,
        )
        self._setup(instance, shared)

    @classmethod
    def _from_shared(cls, instance: str, shared: _Shared) -> Self:
        endpoint = cls.__new__(cls)
        endpoint._setup(instance, shared)
        return endpoint

    def _setup(self, instance: str, shared: _Shared) -> None:
        """Set the endpoint up (no I/O, no client yet); subclasses extend it."""
        self._instance = normalize_instance(instance)
        self._shared = shared
        self._spec = shared.spec
        self._base_url = f"{shared.spec.scheme}://{self._instance}"
        self._lock = threading.Lock()
        self._closed = False
        self._inflight = 0

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")

    def _left_last(self) -> bool:
        """Count a call out; whether it was the last one in flight of a closed endpoint."""
        with self._lock:
            self._inflight -= 1
            return self._closed and self._inflight == 0

    def _close_now(self) -> bool:
        """Mark closed; whether the caller must close the client now (no call in flight).

        ``False`` on a second close: closing is idempotent.
        """
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            return self._inflight == 0

    @property
    def instance(self) -> str:
        """The normalised ``host:port`` this endpoint calls."""
        return self._instance

    @property
    def base_url(self) -> str:
        """``scheme://instance``."""
        return self._base_url

    def __repr__(self) -> str:
        spec = self._spec
        return f"<{type(self).__name__} {spec.method} {self._base_url}{spec.path}>"


class HTTPEndpoint(_Endpoint[RequestT, ResponseT]):
    """A sync endpoint calling ``method path`` on one instance over its own ``httpx.Client``.

    Usually built by :func:`factory`; the arguments are the same plus
    ``instance``.  Raises :class:`kitsd.core.errors.MisuseError` (a ``ValueError``) for a
    bad instance, method, path, scheme or ``client_kwargs`` value, ``TypeError``
    for wrong types.

    The client (``base_url=f"{scheme}://{instance}"``, ``client_kwargs``) is
    made by the first call, so an endpoint that is never called costs next to
    nothing.  Calling raises :class:`StatusError` for a refused status,
    ``TimeoutError`` when the retry deadline passes before or during the
    request (the request is then abandoned and its connection closed), and
    httpx's errors as they come.

    Thread-safe: calls may run from many threads at once (httpx's pool is).
    :meth:`close` closes the client if one was made (when the calls in flight
    have ended, if any; it does not wait for them); calls after it raise
    ``RuntimeError``.  A context manager (closes on exit).
    """

    __slots__ = ("_client",)

    def _setup(self, instance: str, shared: _Shared) -> None:
        super()._setup(instance, shared)
        self._client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client | None:
        """The underlying ``httpx.Client``, or ``None`` before the first call
        (for inspection; do not close it directly)."""
        return self._client

    def _enter(self) -> httpx.Client:
        with self._lock:
            self._refuse_if_closed()
            client = self._client
            if client is None:
                client, _ = self._shared.settings.client(self._base_url)
                self._url = httpx.URL(self._base_url + self._spec.path)
                self._client = client
            self._inflight += 1
            return client

    def __call__(self, request: RequestT) -> ResponseT:
        """Send ``request``; return ``decode(response)`` or raise (see the class docstring)."""
        client = self._enter()
        spec = self._spec
        try:
            deadline = current_deadline()
            if deadline is None:
                response = client.request(spec.method, self._url, **spec.encode(request))
                return spec.finish(response, self._instance)
            left = deadline - time.monotonic()
            if left <= 0:
                raise spec.no_time_left(self._instance)
            kwargs = spec.encode(request)
            configured = spec.bound(kwargs, client.timeout, left)
            try:
                response = client.request(spec.method, self._url, **kwargs)
            except httpx.TimeoutException as error:
                left_now = deadline - time.monotonic()
                replacement = spec.deadline_error(error, configured, left, left_now, self._instance)
                if replacement is None:
                    raise
                raise replacement from error
            return spec.finish(response, self._instance)
        except UNREACHED as error:  # the request never reached the instance
            raise unreachable(error) from error.__cause__
        finally:
            if self._left_last():
                self._shut()

    def _shut(self) -> None:
        client = self._client  # kept, closed, for inspection
        if client is not None:
            logger.debug("closing HTTP client for %s", self._instance)
            client.close()

    def close(self) -> None:
        """Close the client, if a call made one, and its pooled connections.

        Idempotent; never raises for that.  Calls in flight end normally; the
        last of them closes the client.
        """
        if self._close_now():
            self._shut()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncHTTPEndpoint(_Endpoint[RequestT, ResponseT]):
    """The async twin of :class:`HTTPEndpoint`, on its own ``httpx.AsyncClient``.

    The client is made by the first call, so that it belongs to the event loop
    that uses it; a call from another loop afterwards raises ``RuntimeError``
    (make the endpoints on, or per, the loop that uses them).  ``encode`` and
    ``decode`` stay plain functions.

    Safe for concurrent tasks on that one loop.  :meth:`aclose` closes the client
    if one was made (or leaves that to the last call in flight, on its loop);
    calls after it raise ``RuntimeError``.  There is deliberately no
    ``close()``: :func:`kitsd.core.endpoint.close_endpoint` falls back to ``aclose()``.
    An async context manager.
    """

    __slots__ = ("_client", "_loop")
    _asynchronous = True

    def _setup(self, instance: str, shared: _Shared) -> None:
        super()._setup(instance, shared)
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def client(self) -> httpx.AsyncClient | None:
        """The underlying ``httpx.AsyncClient``, or ``None`` before the first call
        and after the client is closed."""
        return self._client

    def _enter(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            self._refuse_if_closed()
            client = self._client
            if client is None:
                client, _ = self._shared.settings.async_client(self._base_url)
                self._url = httpx.URL(self._base_url + self._spec.path)
                self._client, self._loop = client, loop
            elif loop is not self._loop:
                raise RuntimeError(
                    f"{self!r} was first used on another event loop; its connections belong there"
                )
            self._inflight += 1
            return client

    async def __call__(self, request: RequestT) -> ResponseT:
        """Send ``request``; return ``decode(response)`` or raise (see :class:`HTTPEndpoint`)."""
        client = self._enter()
        spec = self._spec
        try:
            deadline = current_deadline()
            if deadline is None:
                response = await client.request(spec.method, self._url, **spec.encode(request))
                return spec.finish(response, self._instance)
            left = deadline - time.monotonic()
            if left <= 0:
                raise spec.no_time_left(self._instance)
            kwargs = spec.encode(request)
            configured = spec.bound(kwargs, client.timeout, left)
            try:
                response = await client.request(spec.method, self._url, **kwargs)
            except httpx.TimeoutException as error:
                left_now = deadline - time.monotonic()
                replacement = spec.deadline_error(error, configured, left, left_now, self._instance)
                if replacement is None:
                    raise
                raise replacement from error
            return spec.finish(response, self._instance)
        except UNREACHED as error:  # the request never reached the instance
            raise unreachable(error) from error.__cause__
        finally:
            if self._left_last():
                await self._shut()  # on the client's own loop: this call ran there

    async def _shut(self) -> None:
        """Close the client on its own event loop (see :meth:`aclose`)."""
        client, self._client = self._client, None
        loop, self._loop = self._loop, None
        if client is None:
            return
        logger.debug("closing async HTTP client for %s", self._instance)
        if loop is None or loop is asyncio.get_running_loop():
            await client.aclose()
        elif loop.is_running():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(client.aclose(), loop))
        else:
            logger.warning(
                "%r: the event loop its client was used on has stopped; "
                "its connections could not be closed cleanly",
                self,
            )

    async def aclose(self) -> None:
        """Close the client, if the first call made one.  Idempotent.

        The client is closed on its own event loop: here if that is the running
        loop, else on that loop if it still runs in another thread.  If that loop
        has stopped, its connections cannot be closed cleanly; a warning is
        logged and they are left to the garbage collector.  With calls in
        flight, the last of them closes it instead, when it ends.
        """
        if self._close_now():
            await self._shut()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def factory(
    method: str,
    path: str,
    *,
    encode: Callable[[RequestT], Mapping[str, Any]],
    decode: Callable[[httpx.Response], ResponseT],
    client_kwargs: Mapping[str, Any] | None = None,
    accept_status: AcceptStatus = None,
    scheme: str = "http",
) -> Callable[[str], HTTPEndpoint[RequestT, ResponseT]]:
    """``factory(instance) -> HTTPEndpoint`` calling ``method path`` on each instance.

    ``encode(request)`` returns httpx request arguments (``json``, ``params``,
    ``headers``, ``content``, ``timeout``, ...; not ``method`` or ``url``);
    ``decode(response)`` turns an accepted ``httpx.Response`` into the result.
    2xx is always accepted; ``accept_status`` (a predicate or a container such
    as ``{404}``) accepts more, and every other status raises
    :class:`StatusError`.  ``client_kwargs`` go to each instance's
    ``httpx.Client`` (not ``base_url``); they are never logged, since headers may
    hold secrets.  The TLS context made from them (``verify``, ``cert``) is built
    once, here, and shared by every client; an ``http`` factory whose
    ``client_kwargs`` set none of ``verify``, ``cert`` or ``follow_redirects``
    loads no certificates at all, and its clients would refuse an ``https``
    peer.  A ``transport`` given there is shared by every instance's client.
    ``scheme`` is ``"http"`` or ``"https"``.

    The arguments are checked here, once: :class:`kitsd.core.errors.MisuseError` (a
    ``ValueError``) for an empty method, a path not starting with ``/``, a bad
    scheme, ``base_url`` in ``client_kwargs`` or a value httpx refuses there;
    ``TypeError`` for wrong types and unknown ``client_kwargs``.  Nothing is left
    running if they fail.  The returned factory raises
    :class:`kitsd.core.errors.InvalidInstanceError` for a bad instance; it does no I/O.
    """
    shared = _Shared.build(
        method, path, encode, decode, client_kwargs, accept_status, scheme, asynchronous=False
    )

    def make_endpoint(instance: str) -> HTTPEndpoint[RequestT, ResponseT]:
        return HTTPEndpoint._from_shared(instance, shared)

    return make_endpoint


def async_factory(
    method: str,
    path: str,
    *,
    encode: Callable[[RequestT], Mapping[str, Any]],
    decode: Callable[[httpx.Response], ResponseT],
    client_kwargs: Mapping[str, Any] | None = None,
    accept_status: AcceptStatus = None,
    scheme: str = "http",
) -> Callable[[str], AsyncHTTPEndpoint[RequestT, ResponseT]]:
    """``factory(instance) -> AsyncHTTPEndpoint``: :func:`factory` for asyncio.

    Same arguments and checks; ``client_kwargs`` go to each ``httpx.AsyncClient``.
    """
    shared = _Shared.build(
        method, path, encode, decode, client_kwargs, accept_status, scheme, asynchronous=True
    )

    def make_endpoint(instance: str) -> AsyncHTTPEndpoint[RequestT, ResponseT]:
        return AsyncHTTPEndpoint._from_shared(instance, shared)

    return make_endpoint
