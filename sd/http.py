"""HTTP endpoints on httpx: one client per instance, bounded by the retry deadline.

:func:`factory` and :func:`async_factory` return ``factory(instance) -> endpoint``
for :class:`sd.Endpointer`.  Each endpoint owns one httpx client whose
``base_url`` is ``http://<instance>`` (or ``https``), so connections to that
instance are pooled and kept alive between calls, and closed with the endpoint.

A call runs ``encode(request)`` to get httpx request arguments (``json=``,
``params=``, ``headers=``, ``content=``, ...), sends ``method path`` with them,
reads the whole body, and then:

* a 2xx status, or one that ``accept_status`` accepts, goes to
  ``decode(response)``, whose result (or error) is the call's;
* any other status raises :class:`StatusError`, so ``lb.retry`` and breakers
  see the failure.

Deadlines.  Inside an attempt made by ``lb.retry`` / ``lb.retry_async``,
:func:`sd.deadline.remaining` gives the seconds left.  Each of httpx's four
timeouts (connect, read, write, pool) is then capped by it for that request, so
a timed-out retry leaves no request running; with no time left at all the call
raises ``TimeoutError`` without sending anything.  httpx timeouts bound each
phase, not the whole exchange: a server trickling a body byte by byte can
outlast the deadline by up to one read timeout per chunk.  Outside a retry the
client's configured timeout applies unchanged.

Connection failures.  At import, ``httpx.ConnectError`` and
``httpx.ConnectTimeout`` are registered with :class:`sd.errors.ConnectionFailure`:
the request never reached the instance, so the retry loop may eject it at once.
Read/write timeouts and ``httpx.RemoteProtocolError`` are *not* registered: the
server may have received, even processed, the request.  A connect timeout
caused by the retry deadline (not by the configured connect timeout) says
nothing about the instance, so it is raised as ``TimeoutError`` chained from
the ``httpx.ConnectTimeout`` instead.  All other httpx errors pass through
unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import httpx

from sd.deadline import remaining
from sd.errors import ConnectionFailure, KitsdError
from sd.instance import normalize_instance

__all__ = ["AsyncHTTPEndpoint", "HTTPEndpoint", "StatusError", "async_factory", "factory"]

logger = logging.getLogger(f"kitsd.{__name__}")

ConnectionFailure.register(httpx.ConnectError)
ConnectionFailure.register(httpx.ConnectTimeout)

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

#: Which non-2xx statuses ``decode`` accepts: a predicate, a container such as
#: ``{404}`` or ``range(400, 500)``, or ``None`` for none.
AcceptStatus = Callable[[int], bool] | Container[int] | None

_SCHEMES = ("http", "https")
# RFC 9110 token characters: what an HTTP method may be made of.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Keyword arguments of httpx.Client.request that encode may not set: we set them.
_RESERVED_REQUEST_ARGS = ("method", "url")


class StatusError(KitsdError):
    """An instance answered with a status that ``decode`` does not accept.

    ``.status_code``, ``.instance``, ``.response`` (the ``httpx.Response``, body
    already read), ``.method`` and ``.path``.  ``str()`` reads
    ``HTTP 503 from 127.0.0.1:8080 (GET /echo)``: the configured path, never the
    query or any header, which may hold secrets.  Not a ``ConnectionFailure``:
    the instance answered.
    """

    def __init__(self, response: httpx.Response, instance: str, method: str, path: str) -> None:
        super().__init__(f"HTTP {response.status_code} from {instance} ({method} {path})")
        self.status_code = response.status_code
        self.instance = instance
        self.response = response
        self.method = method
        self.path = path


def _accepts(accept_status: AcceptStatus) -> Callable[[int], bool]:
    if accept_status is None:
        return lambda _status: False
    if callable(accept_status):
        return accept_status
    if isinstance(accept_status, Container) and not isinstance(accept_status, str | bytes):
        container = accept_status
        return lambda status: status in container
    raise TypeError(
        "accept_status must be a callable, a container of status codes or None, "
        f"not {type(accept_status).__name__}"
    )


def _capped(configured: httpx.Timeout, left: float) -> httpx.Timeout:
    """``configured`` with every phase capped at ``left`` seconds (``None`` means no limit)."""

    def cap(value: float | None) -> float:
        return left if value is None else min(value, left)

    return httpx.Timeout(
        connect=cap(configured.connect),
        read=cap(configured.read),
        write=cap(configured.write),
        pool=cap(configured.pool),
    )


@dataclass(frozen=True)
class _Prepared:
    """One request's arguments, and whether the deadline shortened its connect timeout."""

    kwargs: dict[str, Any]
    connect_capped: bool


@dataclass(frozen=True)
class _Spec(Generic[RequestT, ResponseT]):
    """What both endpoint kinds share: validated settings, and the I/O-free steps
    before and after the request.  The sync and async endpoints only send."""

    method: str
    path: str
    encode: Callable[[RequestT], Mapping[str, Any]]
    decode: Callable[[httpx.Response], ResponseT]
    accepts: Callable[[int], bool]
    scheme: str
    client_kwargs: Mapping[str, Any]

    @classmethod
    def build(
        cls,
        method: str,
        path: str,
        encode: Callable[[RequestT], Mapping[str, Any]],
        decode: Callable[[httpx.Response], ResponseT],
        client_kwargs: Mapping[str, Any] | None,
        accept_status: AcceptStatus,
        scheme: str,
    ) -> _Spec[RequestT, ResponseT]:
        if not isinstance(method, str):
            raise TypeError(f"method must be a str, not {type(method).__name__}")
        if not method.strip():
            raise ValueError("method must not be empty")
        if not _TOKEN.match(method.strip()):
            raise ValueError(f"method must be an HTTP token such as 'GET', got {method!r}")
        if not isinstance(path, str):
            raise TypeError(f"path must be a str, not {type(path).__name__}")
        if not path.startswith("/") or path.startswith("//"):
            # "//host/x" would be merged with base_url as "/x": refuse it outright.
            raise ValueError(f"path must start with a single '/', got {path!r}")
        if not callable(encode):
            raise TypeError(f"encode must be callable, not {type(encode).__name__}")
        if not callable(decode):
            raise TypeError(f"decode must be callable, not {type(decode).__name__}")
        if scheme not in _SCHEMES:
            raise ValueError(f"scheme must be 'http' or 'https', got {scheme!r}")
        if client_kwargs is None:
            client_kwargs = {}
        elif not isinstance(client_kwargs, Mapping):
            raise TypeError(f"client_kwargs must be a mapping, not {type(client_kwargs).__name__}")
        if "base_url" in client_kwargs:
            raise ValueError("client_kwargs must not set base_url: it is built from the instance")
        return cls(
            method=method.strip().upper(),
            path=path,
            encode=encode,
            decode=decode,
            accepts=_accepts(accept_status),
            scheme=scheme,
            client_kwargs=dict(client_kwargs),
        )

    def prepare(self, request: RequestT, configured: httpx.Timeout, instance: str) -> _Prepared:
        """Encode ``request`` and bound it by the retry deadline.

        Raises ``TimeoutError`` when the deadline has already passed (before
        calling ``encode``), ``TypeError`` when ``encode`` returns something unusable.
        """
        left = remaining()
        if left is not None and left <= 0:
            raise TimeoutError(
                f"deadline passed before sending {self.method} {self.path} to {instance}"
            )
        encoded = self.encode(request)
        if not isinstance(encoded, Mapping):
            raise TypeError(
                f"encode must return a mapping of httpx request arguments, "
                f"not {type(encoded).__name__}"
            )
        kwargs = dict(encoded)
        for reserved in _RESERVED_REQUEST_ARGS:
            if reserved in kwargs:
                raise TypeError(f"encode must not set {reserved!r}: the endpoint sets it")
        if left is None:
            return _Prepared(kwargs, connect_capped=False)
        own = kwargs.get("timeout", httpx.USE_CLIENT_DEFAULT)
        if own is not httpx.USE_CLIENT_DEFAULT:
            configured = httpx.Timeout(own)
        kwargs["timeout"] = _capped(configured, left)
        connect_capped = configured.connect is None or left < configured.connect
        return _Prepared(kwargs, connect_capped=connect_capped)

    def deadline_error(self, prepared: _Prepared, instance: str) -> TimeoutError | None:
        """What to raise instead of an ``httpx.ConnectTimeout`` the deadline caused."""
        if not prepared.connect_capped:
            return None
        return TimeoutError(
            f"deadline passed while connecting to {instance} ({self.method} {self.path})"
        )

    def finish(self, response: httpx.Response, instance: str) -> ResponseT:
        """Decode an accepted response; raise :class:`StatusError` for any other."""
        status = response.status_code
        if not (200 <= status < 300 or self.accepts(status)):
            raise StatusError(response, instance, self.method, self.path)
        return self.decode(response)


class _Endpoint(Generic[RequestT, ResponseT]):
    """What both endpoint kinds share: the constructor, the instance and its URL,
    the deadline handling around sending, and the repr.  Each subclass adds
    its own client, ``__call__`` and closing (``close`` or ``aclose``, never both)."""

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
        spec = _Spec.build(method, path, encode, decode, client_kwargs, accept_status, scheme)
        self._setup(instance, spec)

    @classmethod
    def _from_spec(cls, instance: str, spec: _Spec[RequestT, ResponseT]) -> Self:
        endpoint = cls.__new__(cls)
        endpoint._setup(instance, spec)
        return endpoint

    def _setup(self, instance: str, spec: _Spec[RequestT, ResponseT]) -> None:
        """Set the endpoint up (no I/O); subclasses extend it with their client."""
        self._spec = spec
        self._instance = normalize_instance(instance)
        self._base_url = f"{spec.scheme}://{self._instance}"

    @property
    def instance(self) -> str:
        """The normalised ``host:port`` this endpoint calls."""
        return self._instance

    @property
    def base_url(self) -> str:
        """``scheme://instance``."""
        return self._base_url

    @contextlib.contextmanager
    def _sending(self, prepared: _Prepared) -> Iterator[None]:
        """Around the request: a connect timeout the deadline caused becomes ``TimeoutError``."""
        try:
            yield
        except httpx.ConnectTimeout as error:
            replacement = self._spec.deadline_error(prepared, self._instance)
            if replacement is None:
                raise
            raise replacement from error

    def __repr__(self) -> str:
        spec = self._spec
        return f"<{type(self).__name__} {spec.method} {self._base_url}{spec.path}>"


class HTTPEndpoint(_Endpoint[RequestT, ResponseT]):
    """A sync endpoint calling ``method path`` on one instance over its own ``httpx.Client``.

    Usually built by :func:`factory`; the arguments are the same plus
    ``instance``.  The client is made here (no I/O) with
    ``base_url=f"{scheme}://{instance}"`` and ``client_kwargs`` (timeout,
    headers, transport, ...).  Raises ``ValueError`` for a bad instance, method,
    path or scheme and ``TypeError`` for non-callable ``encode``/``decode``.

    Calling it raises :class:`StatusError` for a refused status, ``TimeoutError``
    when the retry deadline has passed, and httpx's errors as they come.

    Thread-safe: calls may run from many threads at once (httpx's pool is).
    :meth:`close` closes the client and its connections; calls after it raise
    ``RuntimeError``.  A context manager (closes on exit).
    """

    def _setup(self, instance: str, spec: _Spec[RequestT, ResponseT]) -> None:
        super()._setup(instance, spec)
        self._client = httpx.Client(base_url=self._base_url, **spec.client_kwargs)

    @property
    def client(self) -> httpx.Client:
        """The underlying ``httpx.Client`` (for inspection; do not close it directly)."""
        return self._client

    def __call__(self, request: RequestT) -> ResponseT:
        """Send ``request``; return ``decode(response)`` or raise (see the class docstring)."""
        spec = self._spec
        prepared = spec.prepare(request, self._client.timeout, self._instance)
        with self._sending(prepared):
            response = self._client.request(spec.method, spec.path, **prepared.kwargs)
        return spec.finish(response, self._instance)

    def close(self) -> None:
        """Close the client and its pooled connections.  Idempotent; never raises for that."""
        if not self._client.is_closed:
            logger.debug("closing HTTP client for %s", self._instance)
        self._client.close()

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

    The client is made lazily, by the first call, so that it belongs to the
    event loop that uses it; a call from another loop afterwards raises
    ``RuntimeError`` (make the endpoints on, or per, the loop that uses them).
    ``encode`` and ``decode`` stay plain functions.

    Safe for concurrent tasks on that one loop.  :meth:`aclose` closes the client
    if one was made; calls after it raise ``RuntimeError``.  There is
    deliberately no ``close()``: :func:`sd.endpoint.close_endpoint` falls back to
    ``aclose()``.  An async context manager.
    """

    def _setup(self, instance: str, spec: _Spec[RequestT, ResponseT]) -> None:
        super()._setup(instance, spec)
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @property
    def client(self) -> httpx.AsyncClient | None:
        """The underlying ``httpx.AsyncClient``, or ``None`` before the first call."""
        return self._client

    def _get_client(self) -> httpx.AsyncClient:
        # No await between the checks and the assignment: tasks on one loop cannot race here.
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        loop = asyncio.get_running_loop()
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self._base_url, **self._spec.client_kwargs)
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError(
                f"{self!r} was first used on another event loop; its connections belong there"
            )
        return self._client

    async def __call__(self, request: RequestT) -> ResponseT:
        """Send ``request``; return ``decode(response)`` or raise (see :class:`HTTPEndpoint`)."""
        spec = self._spec
        client = self._get_client()
        prepared = spec.prepare(request, client.timeout, self._instance)
        with self._sending(prepared):
            response = await client.request(spec.method, spec.path, **prepared.kwargs)
        return spec.finish(response, self._instance)

    async def aclose(self) -> None:
        """Close the client, if the first call made one.  Idempotent.

        The client is closed on its own event loop: here if that is the running
        loop, else on that loop if it still runs in another thread.  If that loop
        has stopped, its connections cannot be closed cleanly; a warning is
        logged and they are left to the garbage collector.
        """
        self._closed = True
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
    hold secrets.  A ``transport`` given there is shared by every instance's
    client.  ``scheme`` is ``"http"`` or ``"https"``.

    The arguments are checked here, once: ``ValueError`` for an empty method, a
    path not starting with ``/``, a bad scheme or ``base_url`` in
    ``client_kwargs``; ``TypeError`` for wrong types.  The returned factory
    raises ``ValueError`` (``sd.errors.InvalidInstanceError``) for a bad instance.
    """
    spec = _Spec.build(method, path, encode, decode, client_kwargs, accept_status, scheme)

    def make_endpoint(instance: str) -> HTTPEndpoint[RequestT, ResponseT]:
        return HTTPEndpoint._from_spec(instance, spec)

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
    spec = _Spec.build(method, path, encode, decode, client_kwargs, accept_status, scheme)

    def make_endpoint(instance: str) -> AsyncHTTPEndpoint[RequestT, ResponseT]:
        return AsyncHTTPEndpoint._from_spec(instance, spec)

    return make_endpoint
