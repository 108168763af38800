"""The slice of py-consul the Consul driver uses, :func:`connect`, and error mapping.

Narrow protocols
----------------
:class:`ConsulClient` names the few calls the driver makes (``health.service``,
``agent.service.register``/``deregister``, ``agent.check.ttl_pass``), exactly as
py-consul's ``consul.Consul`` spells them.  Any py-consul client (its own
``requests`` one, or :func:`connect`'s, on httpx) is accepted.

Private clients
---------------
Watches and heartbeats never use *your* client: :func:`private_client` gives
them a :class:`~sd.consul.transport.AsyncHttpxConsul` with your client's
settings (:func:`~sd.consul.transport.settings_of`: address, scheme, CA,
client certificate, token, datacenter, consistency, timeout), which they run
on an event loop (yours for :class:`~sd.consul.AsyncConsulInstancer`, a private
one on their thread otherwise) and cancel on ``stop()``: cancelling abandons a
held blocking query at once.  An object that is not a py-consul client (a
test double of the narrow protocol) is used as it is.

Errors
------
:func:`map_error` turns py-consul, httpx (and ``requests``, for py-consul's own
client) exceptions into the kitsd error tree (:mod:`kitsd.core.errors`), chained with
``from``: ACL refusals (HTTP 403, and 401) become
:class:`~kitsd.core.errors.PermissionDeniedError`, everything else (unreachable agent,
timeouts, 5xx such as "No cluster leader", unreadable answers)
:class:`~kitsd.core.errors.RegistryUnavailableError`.  Messages are stable (no object
addresses), so a registry that keeps failing the same way publishes one error
event, not one per retry, and they never include the ACL token.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, cast

import consul
import httpx
import requests

from kitsd.core.errors import BackendError, PermissionDeniedError, RegistryUnavailableError
from kitsd.sd.consul.transport import (
    DEFAULT_TIMEOUT,
    AgentSettings,
    HttpxConsul,
    settings_of,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "AgentAPI",
    "AgentCheckAPI",
    "AgentServiceAPI",
    "ConsulClient",
    "HealthAPI",
    "HttpxConsul",
    "agent_address",
    "connect",
    "map_error",
    "maybe_await",
    "private_client",
    "reached_agent",
    "tags_tuple",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


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


def connect(
    address: str = "127.0.0.1:8500",
    *,
    token: str | None = None,
    scheme: str = "http",
    verify: bool | str = True,
    cert: str | tuple[str, str] | None = None,
    dc: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
) -> HttpxConsul:
    """A py-consul client over httpx for the agent at ``address`` (``host:port``,
    IPv6 in brackets).

    ``token`` is the ACL token sent with every request; unlike plain
    ``consul.Consul(token=...)``, an explicit token here wins over the
    ``CONSUL_HTTP_TOKEN`` environment variable.  ``scheme="https"`` with
    ``verify`` (``True``, ``False`` or a CA file) and ``cert`` (client
    certificate file, or ``(certificate, key)``) for TLS and mTLS.
    ``timeout`` bounds connecting and answering (``None``: no bound).
    ``transport``: an httpx transport for tests (``httpx.MockTransport``; the
    watches built on this client use it too).  Close the client when done.
    Raises ``TypeError`` or :class:`kitsd.core.errors.MisuseError` (a ``ValueError``)
    naming a bad argument, before anything is opened; an unreadable CA or
    certificate file is a :class:`~kitsd.core.errors.MisuseError` too.
    """
    settings = AgentSettings.for_address(
        address, token=token, scheme=scheme, verify=verify, cert=cert, dc=dc, timeout=timeout,
        transport=transport,
    )
    _ = settings.ssl_context  # load the certificates now: a bad file fails here
    return settings.sync_client()


def private_client(client: ConsulClient) -> tuple[Any, AgentSettings | None]:
    """The client a watch or heartbeat talks through, and the settings it came from.

    For a py-consul client: a new :class:`~sd.consul.transport.AsyncHttpxConsul`
    with its settings (see the module docstring); the caller closes it
    (``await client.aclose()``) and must create it on the loop that uses it.
    For any other object: ``(client, None)``, used as it is.
    """
    settings = settings_of(client)
    if settings is None:
        return client, None
    return settings.async_client(), settings


async def maybe_await(value: T | Awaitable[T]) -> T:
    """``value``, awaited if it is awaitable (an async client's answer)."""
    if inspect.isawaitable(value):
        return cast(T, await value)
    return value


def agent_address(client: object) -> str:
    """A printable name for the agent ``client`` talks to (its base URL; never the token)."""
    settings = settings_of(client)
    return settings.base_url if settings is not None else type(client).__name__


# --- error mapping ---------------------------------------------------------------------


def _summary(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def map_error(error: BaseException, *, doing: str, agent: str) -> BackendError:
    """The kitsd error for a py-consul/``requests`` failure while ``doing`` something.

    ``doing`` is a phrase such as ``"watching service 'web'"``; ``agent`` names the
    agent (see :func:`agent_address`).  A kitsd :class:`~kitsd.core.errors.BackendError`
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
    elif isinstance(error, consul.ConsulException) and str(error).startswith(
            "Missing index header"):
        mapped = RegistryUnavailableError(f"{where}: answer with no X-Consul-Index header")
    elif isinstance(error, consul.ConsulException):
        mapped = RegistryUnavailableError(f"{where}: {_summary(error)}")
    elif isinstance(error, ValueError | TypeError | KeyError | AttributeError):
        mapped = RegistryUnavailableError(f"{where}: unreadable answer: {_summary(error)}")
    else:
        mapped = RegistryUnavailableError(f"{where}: {type(error).__name__}: {_summary(error)}")
    mapped.__cause__ = error
    return mapped


def reached_agent(error: BaseException) -> bool:
    """Whether the request that failed with ``error`` reached the agent: ``False`` for
    a refused or unreachable connection and a connect timeout (nothing was sent), so
    the watch may try again soon at no cost to the agent (:mod:`sd.consul.index`)."""
    return not isinstance(error, httpx.ConnectError | httpx.ConnectTimeout
                          | ConnectionRefusedError | requests.ConnectTimeout)


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
