"""``ConsulInstancer`` and ``AsyncConsulInstancer``: the instances of one Consul service.

Theory of operation
-------------------
Both run the one watch of :mod:`sd.consul.watch` (blocking health queries
built by py-consul, sent by httpx with h11 over asyncio streams, decided by :mod:`sd.consul.index`):

* :class:`ConsulInstancer` runs it on a private event loop in its own thread
  (:class:`sd._loop_thread.LoopThread`).  One watch per ``(client, service,
  tags, passing_only)`` is shared by every instancer built with the same
  arguments (:class:`sd.instancer.SharedWatches`) and stopped when the last of
  them stops.
* :class:`AsyncConsulInstancer` runs it as a task of your event loop, not
  shared.

Stopping promptly
-----------------
A blocking query holds its request open for up to ``wait`` seconds (10 by
default, plus Consul's jitter of up to ``wait/16``).  ``stop()`` cancels the
watch's task (from any thread, through the loop), which abandons the request
in flight at once and closes the watch's private client; backoff sleeps are
cancelled the same way.  So ``stop()`` returns in milliseconds and leaves no
thread.  After a failure the next query waits 0.1-0.2 s while nothing reaches
the agent (a refused connection: it is down or restarting, and a connection
attempt costs it nothing) and through its start-up, and 10 ms doubling to 2 s
with jitter after other errors the agent answered (at most one request a
second once grown): never a busy loop, and back within ~0.15 s of an agent
that is ready again (see "Recovery" in :mod:`sd.consul.index`).

Arguments are all checked before anything starts: a bad one raises
``TypeError`` or :class:`kitsd.core.errors.MisuseError` naming it, leaving no thread,
task or shared-watch entry behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx

from kitsd.core import validate
from kitsd.core.errors import MisuseError
from kitsd.sd._async_watch import AsyncWatchHandle
from kitsd.sd._loop_thread import LoopThread
from kitsd.sd.consul.client import ConsulClient, agent_address, tags_tuple
from kitsd.sd.consul.transport import DEFAULT_TIMEOUT, AgentSettings, settings_of
from kitsd.sd.consul.watch import HealthQuery, run_watch
from kitsd.sd.instancer import (
    DEFAULT_FIRST_ANSWER_TIMEOUT,
    Broadcaster,
    InstancerHandle,
    SharedWatches,
    check_first_answer_timeout,
)

__all__ = ["AsyncConsulInstancer", "ConsulInstancer"]

DEFAULT_WAIT = 10.0
"""Seconds a blocking query may be held by the agent (Consul's ``wait``)."""


def _query(service: object, tags: Sequence[str], passing_only: object,
           wait: object) -> HealthQuery:
    """Both instancers' checked query; raises ``TypeError``/``MisuseError``."""
    if not isinstance(service, str) or not service.strip() or "/" in service:
        raise MisuseError(f"service must be a non-empty Consul service name, not {service!r}")
    checked_passing = validate.flag("passing_only", passing_only)
    checked_wait = validate.seconds("wait", wait, maximum=600)
    return HealthQuery(service, tags_tuple(tags), checked_passing, checked_wait)


class _ThreadWatch:
    """The shared watch of :class:`ConsulInstancer`: the coroutine on a :class:`LoopThread`."""

    def __init__(self, client: ConsulClient, query: HealthQuery,
                 broadcaster: Broadcaster) -> None:
        self._thread = LoopThread(
            f"kitsd-consul-watch-{query.service}",
            lambda: run_watch(client, query, broadcaster, _nothing),
        )
        self._thread.start()

    def stop(self) -> None:
        """Cancel the query in flight (or the backoff sleep) and join the thread."""
        self._thread.stop()


_WATCHES = SharedWatches()


def _nothing() -> None:
    """The thread watch's ``answered`` hook: its broadcaster is pending instead."""


class ConsulInstancer(InstancerHandle):
    """The live instances of ``service`` in Consul (implements :class:`sd.Instancer`).

    ``client`` is a py-consul client (:func:`sd.consul.connect`'s, or py-consul's
    own ``consul.Consul``): the watch talks through a private httpx client with
    its settings (address, scheme, CA, client certificate, ACL token,
    datacenter, timeout), never logging the token.  Any other object
    satisfying :class:`sd.consul.client.ConsulClient` is called as it is.
    ``tags``: keep only instances carrying all of them (the first is filtered
    by Consul, the others here).  ``passing_only``: only instances whose checks
    all pass.  ``wait``: how long the agent may hold a blocking query (seconds,
    at most 600).  ``first_answer_timeout``: the constructor waits up to this
    long (seconds, at most 600) for the watch's first answer (or error), so
    every subscriber starts from real data; when none came, it gets a
    :class:`kitsd.core.errors.RegistryUnavailableError` saying so (the watch
    keeps trying); 0 does not wait (the first answer is sent when it comes).
    ``owns_client``:
    ``stop()`` also closes ``client``.

    ``subscribe(callback)``, ``unsubscribe(callback)``, ``state`` and ``stop()``
    are :class:`sd.instancer.InstancerHandle`'s.  Instancers with the same
    client, service, tags and ``passing_only`` share one watch.

    Failures never raise: they arrive as an :class:`sd.Event` whose ``error``
    is a :class:`kitsd.core.errors.RegistryUnavailableError` (or a
    :class:`kitsd.core.errors.PermissionDeniedError` for an ACL refusal, including an
    empty answer under a default-deny ACL policy, see :mod:`sd.consul.index`),
    chained from the vendor error, keeping the last instances.  Raises
    ``TypeError`` or :class:`kitsd.core.errors.MisuseError` (a ``ValueError``) naming a
    bad argument before anything starts.  Thread-safe; ``stop()`` is
    idempotent and prompt (see the module docstring).
    """

    def __init__(
        self,
        client: ConsulClient,
        service: str,
        *,
        tags: Sequence[str] = (),
        passing_only: bool = True,
        wait: float = DEFAULT_WAIT,
        first_answer_timeout: float = DEFAULT_FIRST_ANSWER_TIMEOUT,
        owns_client: bool = False,
    ) -> None:
        query = _query(service, tags, passing_only, wait)
        first_wait = check_first_answer_timeout(first_answer_timeout)
        validate.flag("owns_client", owns_client)
        if settings_of(client) is None and not callable(
                getattr(getattr(client, "health", None), "service", None)):
            raise TypeError(f"client must be a py-consul client, not {type(client).__name__}")
        self.service, self.tags, self.passing_only = query.service, query.tags, query.passing_only
        self._client = client
        self._owns_client = owns_client
        key = (query.service, query.tags, query.passing_only)

        def start(broadcaster: Broadcaster) -> _ThreadWatch:
            return _ThreadWatch(client, query, broadcaster)

        broadcaster, _, self._release_share = _WATCHES.acquire(
            key, start, owner=client, kind="consul", service=service,  # kitsd.observe labels
            pending=True)
        super().__init__(broadcaster, self._release_watch, first_answer_timeout=first_wait,
                         source=f"Consul agent {agent_address(client)} (service {service!r})")

    @property
    def client(self) -> ConsulClient:
        """The client this instancer was built with (the watch talks through a private copy)."""
        return self._client

    def _release_watch(self) -> None:
        self._release_share()
        if self._owns_client:
            _close_client(self._client)

    def __repr__(self) -> str:
        return (f"ConsulInstancer({self.service!r}, tags={list(self.tags)!r}, "
                f"passing_only={self.passing_only}, agent={agent_address(self._client)!r})")


def _close_client(client: object) -> None:
    """Close a client's HTTP connections: ``close()`` if it has one, else ``http.close()``."""
    close = getattr(client, "close", None)
    if not callable(close):
        close = getattr(getattr(client, "http", None), "close", None)
    if callable(close):
        close()


class AsyncConsulInstancer(AsyncWatchHandle):
    """The asyncio twin of :class:`ConsulInstancer` (implements :class:`sd.Instancer`).

    ``agent`` is the agent's ``host:port`` (IPv6 in brackets), with
    ``token``/``scheme``/``verify``/``cert``/``dc``/``timeout``/``transport``
    as for :func:`sd.consul.connect`; or a py-consul client, whose settings
    are used exactly as :class:`ConsulInstancer` uses them (then leave those
    keywords unset).  ``tags``, ``passing_only`` and ``wait`` are as for
    :class:`ConsulInstancer`; ``timeout`` bounds connecting and answering on
    top of ``wait`` (default 10 s).  Subscribers are sent the watch's first
    answer when it arrives (``subscribe()`` cannot wait for it: the watch runs
    on the caller's loop), or after ``first_answer_timeout`` seconds (default
    5; 0: no bound) without one a
    :class:`kitsd.core.errors.RegistryUnavailableError` saying so; never an
    empty set nobody read.  ``await wait_answered()`` waits for it.  The watch
    is the same coroutine, on the same py-consul-over-httpx client, as
    :class:`ConsulInstancer`'s.

    Build it inside a running event loop (else ``RuntimeError``); its watch is
    a task of that loop, not shared with other instancers.  ``stop()`` cancels
    the task (idempotent, prompt); ``await aclose()`` (or ``async with``) also
    waits for it to end (it closes its HTTP client).  Errors arrive as events,
    exactly as for :class:`ConsulInstancer`.  Use it from its loop's thread.
    """

    def __init__(
        self,
        agent: str | ConsulClient,
        service: str,
        *,
        tags: Sequence[str] = (),
        passing_only: bool = True,
        token: str | None = None,
        scheme: str | None = None,
        verify: bool | str | None = None,
        cert: str | tuple[str, str] | None = None,
        dc: str | None = None,
        wait: float = DEFAULT_WAIT,
        timeout: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        first_answer_timeout: float = DEFAULT_FIRST_ANSWER_TIMEOUT,
    ) -> None:
        query = _query(service, tags, passing_only, wait)
        first_wait = check_first_answer_timeout(first_answer_timeout)
        if isinstance(agent, str):
            settings = AgentSettings.for_address(
                agent, token=token, scheme="http" if scheme is None else scheme,
                verify=True if verify is None else verify, cert=cert, dc=dc,
                timeout=DEFAULT_TIMEOUT if timeout is None else timeout, transport=transport,
            )
        else:
            found = settings_of(agent)
            if found is None:
                raise TypeError(f"agent must be host:port or a py-consul client, not "
                                f"{type(agent).__name__}")
            given = [name for name, value in (
                ("token", token), ("scheme", scheme), ("verify", verify), ("cert", cert),
                ("dc", dc), ("timeout", timeout), ("transport", transport)) if value is not None]
            if given:
                raise MisuseError(f"{', '.join(given)} come(s) from the client when agent is "
                                  "a py-consul client; set them there")
            settings = found
        _ = settings.ssl_context  # a CA or certificate that cannot be loaded fails here
        asyncio.get_running_loop()  # RuntimeError before anything is made
        self.service, self.tags, self.passing_only = query.service, query.tags, query.passing_only
        self.agent = settings.base_url
        self._answered = asyncio.Event()
        broadcaster = Broadcaster(kind="consul", service=service,  # kitsd.observe labels
                                  pending=True)
        super().__init__(
            broadcaster, lambda: run_watch(settings, query, broadcaster, self._answered.set),
            name=f"kitsd-consul-watch-{query.service}", first_answer_timeout=first_wait,
            source=f"Consul agent {settings.base_url} (service {service!r})")

    async def wait_answered(self) -> None:
        """Wait until the first answer (or error) was published (bound it with
        ``asyncio.timeout``)."""
        await self._answered.wait()

    def __repr__(self) -> str:
        return (f"AsyncConsulInstancer({self.service!r}, tags={list(self.tags)!r}, "
                f"passing_only={self.passing_only}, agent={self.agent!r})")
