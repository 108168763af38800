"""The slice of py-consul the Consul driver uses, a :func:`connect` helper, and error mapping.

Narrow protocols
----------------
:class:`ConsulClient` names the few calls the driver makes (``health.service``,
``agent.service.register``/``deregister``, ``agent.check.ttl_pass``), exactly as
py-consul's ``consul.Consul`` spells them, so a test can script odd answers with
a small fake object.

Interruptible requests
----------------------
A blocking query holds an HTTP request open for up to ``wait`` seconds, and
``requests`` offers no way to abandon a request another thread is blocked in
(closing the session only closes *idle* connections).  :class:`InterruptibleConsul`
is a ``consul.Consul`` whose connections remember their sockets;
:meth:`InterruptibleConsul.interrupt` shuts them down (``shutdown(SHUT_RDWR)``
wakes a thread blocked in ``recv``), and every request started afterwards fails
at once.  The watchers never interrupt *your* client: :func:`private_copy` makes
them a private :class:`InterruptibleConsul` with your client's address, TLS
settings, datacenter and ACL token, which they interrupt and close on ``stop()``.
A client that is not py-consul's (a test fake) is used as it is, and ``stop()``
then waits for its current call to return.

Errors
------
:func:`map_error` turns py-consul, ``requests`` and httpx exceptions into the kitsd
error tree (:mod:`sd.errors`), chained with ``from``: ACL refusals (HTTP 403,
and 401) become :class:`~sd.errors.PermissionDeniedError`, everything else
(unreachable agent, timeouts, 5xx such as "No cluster leader", unreadable
answers) :class:`~sd.errors.RegistryUnavailableError`.  Messages are stable (no
object addresses), so a registry that keeps failing the same way publishes one
error event, not one per retry, and they never include the ACL token.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

import consul
import consul.exceptions
import consul.std
import httpx
import requests
import requests.adapters
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

from sd.errors import (
    BackendError,
    InvalidInstanceError,
    MisuseError,
    PermissionDeniedError,
    RegistryUnavailableError,
)
from sd.instance import split_address

__all__ = [
    "AgentAPI",
    "AgentCheckAPI",
    "AgentServiceAPI",
    "ConsulClient",
    "HealthAPI",
    "InterruptibleConsul",
    "agent_address",
    "check_status",
    "connect",
    "map_error",
    "private_copy",
    "tags_tuple",
]

logger = logging.getLogger(f"kitsd.{__name__}")

DEFAULT_TIMEOUT = 10.0
"""Seconds :func:`connect` gives the agent to connect and answer (a blocking
query's ``wait`` is added, as py-consul does)."""


class HealthAPI(Protocol):
    """``client.health``: the one call the instancer makes."""

    def service(
        self,
        service: str,
        *,
        index: str | None = ...,
        wait: str | None = ...,
        passing: bool | None = ...,
        tag: str | None = ...,
    ) -> tuple[object, object]:
        """``(X-Consul-Index, decoded JSON entries)`` for ``service``."""
        ...


class AgentServiceAPI(Protocol):
    """``client.agent.service``: register and deregister with the local agent."""

    def register(
        self,
        name: str,
        service_id: str | None = ...,
        address: str | None = ...,
        port: int | None = ...,
        tags: list[str] | None = ...,
        check: Mapping[str, object] | None = ...,
    ) -> object:
        """Register (or replace) a service on the local agent."""
        ...

    def deregister(self, service_id: str) -> object:
        """Remove a service from the local agent (``False``/``None`` if unknown)."""
        ...


class AgentCheckAPI(Protocol):
    """``client.agent.check``: the TTL heartbeat."""

    def ttl_pass(self, check_id: str, notes: str | None = ...) -> object:
        """Mark a TTL check passing; py-consul returns ``False`` when the agent answers 404."""
        ...


class AgentAPI(Protocol):
    """``client.agent``."""

    @property
    def service(self) -> AgentServiceAPI: ...

    @property
    def check(self) -> AgentCheckAPI: ...


class ConsulClient(Protocol):
    """The part of ``consul.Consul`` kitsd uses; any object with these attributes will do."""

    @property
    def health(self) -> HealthAPI: ...

    @property
    def agent(self) -> AgentAPI: ...


# --- interruptible connections -------------------------------------------------


class _SocketTracker:
    """The sockets of one client's connections, so another thread can shut them down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            if not self._closed:
                self._sockets.add(sock)
                return
        _shutdown(sock)  # interrupted already: this request must not start

    def shutdown_all(self) -> None:
        with self._lock:
            self._closed = True
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    # socket.socket.shutdown on the raw fd, even for an SSLSocket: its own shutdown()
    # would also tear down TLS state under the feet of the thread reading from it.
    # OSError: already closed or never connected, so there is nothing to interrupt.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _pool_classes(tracker: _SocketTracker) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes whose connections register their sockets with ``tracker``."""

    class TrackedHTTPConnection(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            if self.sock is not None:
                tracker.add(self.sock)

    class TrackedHTTPSConnection(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            if self.sock is not None:
                tracker.add(self.sock)

    class TrackedHTTPPool(HTTPConnectionPool):
        ConnectionCls = TrackedHTTPConnection

    class TrackedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = TrackedHTTPSConnection

    return {"http": TrackedHTTPPool, "https": TrackedHTTPSPool}


class _TrackingAdapter(requests.adapters.HTTPAdapter):
    """A requests adapter whose pools (direct and through proxies) track their sockets."""

    def __init__(self, tracker: _SocketTracker) -> None:
        self._classes = _pool_classes(tracker)
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(self._classes)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager = cast(PoolManager, super().proxy_manager_for(proxy, **proxy_kwargs))
        manager.pool_classes_by_scheme = dict(self._classes)
        return manager


class _InterruptibleHTTPClient(consul.std.HTTPClient):  # type: ignore[misc]  # py-consul is untyped
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracker = _SocketTracker()
        adapter = _TrackingAdapter(self.tracker)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()


class InterruptibleConsul(consul.Consul):  # type: ignore[misc]  # py-consul is untyped
    """A ``consul.Consul`` whose requests another thread can interrupt.

    Construct it like ``consul.Consul`` (plus py-consul's ``connections_timeout``);
    :func:`connect` is the short way.  :meth:`interrupt` and :meth:`close` are
    safe to call from any thread; the rest is as thread-safe as py-consul.
    The ACL token is never part of its ``repr``.
    """

    def http_connect(
        self, host: str, port: int, scheme: str, verify: bool | str = True, cert: object = None
    ) -> _InterruptibleHTTPClient:
        return _InterruptibleHTTPClient(
            host, port, scheme, verify, cert, connections_timeout=self.connections_timeout
        )

    @property
    def closed(self) -> bool:
        """Whether :meth:`interrupt` or :meth:`close` was called."""
        return bool(self.http.tracker.closed)

    def interrupt(self) -> None:
        """Abort every request in flight (they raise ``requests.ConnectionError``);
        requests made afterwards fail at once.  Idempotent."""
        self.http.tracker.shutdown_all()

    def close(self) -> None:
        """:meth:`interrupt`, then close the HTTP session.  Idempotent."""
        self.interrupt()
        self.http.close()

    def __enter__(self) -> InterruptibleConsul:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"InterruptibleConsul({self.http.base_uri!r})"


def connect(
    address: str = "127.0.0.1:8500",
    *,
    token: str | None = None,
    scheme: str = "http",
    verify: bool | str = True,
    cert: str | tuple[str, str] | None = None,
    dc: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> InterruptibleConsul:
    """A py-consul client for the agent at ``address`` (``host:port``, IPv6 in brackets).

    ``token`` is the ACL token sent with every request; unlike plain
    ``consul.Consul(token=...)``, an explicit token here wins over the
    ``CONSUL_HTTP_TOKEN`` environment variable.  ``timeout`` bounds connecting
    and answering (``None``: no bound).  Close the client when done.
    Raises ``ValueError`` for an address that is not ``host:port``.
    """
    try:
        host, port = split_address(address)
    except InvalidInstanceError as error:
        raise MisuseError(f"Consul agent address must be host:port, not {address!r}") from error
    client = InterruptibleConsul(
        host=host, port=port, scheme=scheme, verify=verify, cert=cert,
        dc=dc, connections_timeout=timeout,
    )
    if token is not None:
        client.token = token
    return client


def private_copy(client: ConsulClient) -> tuple[ConsulClient, InterruptibleConsul | None]:
    """A client for a watcher's own use, and the object that interrupts it (see module doc).

    For a py-consul ``consul.Consul`` (the requests-based one): a new
    :class:`InterruptibleConsul` with the same address, scheme, TLS settings,
    datacenter, consistency, timeout and ACL token, returned twice.  For any
    other object: ``(client, None)``: it is used as it is.
    """
    http = getattr(client, "http", None)
    if not isinstance(client, consul.Consul) or not isinstance(http, consul.std.HTTPClient):
        return client, None
    copy = InterruptibleConsul(
        host=http.host, port=http.port, scheme=http.scheme, verify=http.verify, cert=http.cert,
        dc=client.dc, consistency=client.consistency,
        connections_timeout=getattr(client, "connections_timeout", DEFAULT_TIMEOUT),
    )
    copy.token = client.token
    return copy, copy


def agent_address(client: object) -> str:
    """A printable name for the agent ``client`` talks to (its base URL; never the token)."""
    http = getattr(client, "http", None)
    base = getattr(http, "base_uri", None)
    return base if isinstance(base, str) else type(client).__name__


# --- error mapping ---------------------------------------------------------------------


def _summary(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def map_error(error: BaseException, *, doing: str, agent: str) -> BackendError:
    """The kitsd error for a py-consul/``requests`` failure while ``doing`` something.

    ``doing`` is a phrase such as ``"watching service 'web'"``; ``agent`` names the
    agent (see :func:`agent_address`).  A kitsd :class:`~sd.errors.BackendError`
    comes back unchanged.  The result has
    ``__cause__`` set to ``error`` (as ``raise ... from error`` would), so callers
    can ``raise map_error(...)`` or publish it.  Never raises.
    """
    if isinstance(error, BackendError):
        return error
    where = f"{doing} at Consul agent {agent}"
    mapped: BackendError
    if isinstance(error, consul.ACLPermissionDenied):
        mapped = PermissionDeniedError(f"{where}: permission denied (check the ACL token)")
    elif isinstance(error, consul.ACLDisabled):
        mapped = PermissionDeniedError(f"{where}: unauthorized (401)")
    elif isinstance(error, consul.Timeout | requests.Timeout | httpx.TimeoutException):
        mapped = RegistryUnavailableError(f"{where}: timed out")
    elif isinstance(error, requests.ConnectionError | ConnectionError | httpx.TransportError):
        mapped = RegistryUnavailableError(f"{where}: cannot connect")
    elif isinstance(error, consul.NotFound):
        mapped = RegistryUnavailableError(f"{where}: not found (404)")
    elif isinstance(error, consul.ConsulException):
        mapped = RegistryUnavailableError(f"{where}: {_summary(error)}")
    elif isinstance(error, ValueError | TypeError | KeyError | AttributeError):
        mapped = RegistryUnavailableError(f"{where}: unreadable answer: {_summary(error)}")
    else:
        mapped = RegistryUnavailableError(f"{where}: {type(error).__name__}: {_summary(error)}")
    mapped.__cause__ = error
    return mapped


def check_status(status: int, body: str) -> bool:
    """Judge an HTTP answer of the agent as py-consul does; ``False`` for a 404.

    For the driver's own HTTP calls (the asyncio instancer, on httpx): raises the
    py-consul exception py-consul would raise for the same status
    (``ACLPermissionDenied`` for 403, ``ACLDisabled`` for 401, ``ConsulException``
    for 5xx, ...), so :func:`map_error` treats both paths alike.
    """
    if status == 404:
        return False
    if status == 400:
        raise consul.exceptions.BadRequest(f"{status} {body}")
    if status == 401:
        raise consul.ACLDisabled(body)
    if status == 403:
        raise consul.ACLPermissionDenied(body)
    if 400 <= status < 600:
        error_class = consul.exceptions.ClientError if status < 500 else consul.ConsulException
        raise error_class(f"{status} {body}")
    return True


def go_duration(seconds: float) -> str:
    """A Go duration string Consul accepts, in whole milliseconds (rounded up, at least 1)."""
    return f"{max(1, math.ceil(seconds * 1000))}ms"


def tags_tuple(tags: Sequence[str], what: str = "tags") -> tuple[str, ...]:
    """``tags`` as a tuple, checked: a sequence of non-empty strings (not one string).

    Raises ``TypeError``/``ValueError`` naming the offending value.
    """
    if isinstance(tags, str | bytes):
        raise TypeError(f"{what} must be a sequence of strings, not one string {tags!r}")
    result = tuple(tags)
    for tag in result:
        if not isinstance(tag, str) or not tag.strip():
            raise ValueError(f"{what} must be non-empty strings, not {tag!r}")
    return result
