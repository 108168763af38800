"""``ConsulInstancer``: the instances of one Consul service, from blocking health queries.

Theory of operation
-------------------
One *watch* per ``(client, service, tags, passing_only)`` runs on its own
thread, shared by every :class:`ConsulInstancer` built with the same
arguments (:class:`sd.instancer.SharedWatches`), and stopped when the last of
them stops.  Its loop::

    policy = WatchPolicy(required_tags=tags[1:])                 (sd.consul.index)
    loop:
        try:   (X-Consul-Index, entries) = health.service(
                   service, index=policy.index, wait=W, passing=passing_only, tag=tags[0])
               decision = policy.answered(X-Consul-Index, entries)
        except error: decision = policy.failed(map_error(error))   (index back to 0)
        publish decision.event or decision.error (keeping the last instances)
        sleep decision.delay (backoff after errors and odd indexes, else 0)

The decisions live in the pure modules :mod:`sd.consul.index` (the blocking
index rules and the loop policy) and :mod:`sd.consul.health` (entries to
instances); this module only drives them, on a thread (:class:`ConsulInstancer`)
and on asyncio (:class:`AsyncConsulInstancer`).  Backoff is
:class:`sd.backoff.Backoff`: 10 ms doubling to 60 s with jitter, so an agent
that is down sees a handful of requests per second at first and one a minute at
worst, never a busy loop.

Stopping promptly
-----------------
A blocking query holds its request open for up to ``wait`` seconds (10 by
default, plus Consul's jitter of up to ``wait/16``).  The watch talks through a
private copy of your py-consul client (:func:`sd.consul.client.private_copy`) and
``stop()`` interrupts it: it shuts down the copy's sockets, which wakes the
thread at once, then joins the thread; backoff sleeps wait on an event that
``stop()`` sets.  So ``stop()`` returns in milliseconds and leaves no thread.
(With a client that is not py-consul's, ``stop()`` waits for its current call.)

On asyncio
----------
py-consul's async client (``consul.aio``) needs aiohttp, which kitsd does not
depend on, so :class:`AsyncConsulInstancer` sends the same health query itself
with ``httpx.AsyncClient`` (a core dependency) and feeds the answers to the
same :class:`~sd.consul.index.WatchPolicy`.  Its watch is an asyncio task;
``stop()`` cancels it, which abandons the request in flight at once, and
``await aclose()`` also waits for the task to end and closes its HTTP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

import httpx

from sd.consul.client import (
    DEFAULT_TIMEOUT,
    ConsulClient,
    agent_address,
    check_status,
    go_duration,
    map_error,
    private_copy,
    tags_tuple,
)
from sd.consul.index import WatchPolicy
from sd.errors import InvalidInstanceError, MisuseError
from sd.instance import split_address
from sd.instancer import Broadcaster, InstancerHandle, SharedWatches

__all__ = ["AsyncConsulInstancer", "ConsulInstancer"]

logger = logging.getLogger(f"kitsd.{__name__}")

DEFAULT_WAIT = 10.0
"""Seconds a blocking query may be held by the agent (Consul's ``wait``)."""

_JOIN_TIMEOUT = 5.0


class _Steps:
    """What a watch does between two queries, for both drivers, so they cannot drift.

    The answer to a query (or the error it raised) goes through
    :class:`~sd.consul.index.WatchPolicy`; the decision is logged and published
    to ``broadcaster``, then ``answered()`` is called.  Each driver only sends
    the query with :attr:`index` and sleeps the delay :meth:`after` returns.
    Not thread-safe: one per watch loop.
    """

    def __init__(
        self,
        service: str,
        tags: tuple[str, ...],
        agent: str,
        broadcaster: Broadcaster,
        answered: Callable[[], object],
    ) -> None:
        self._doing = f"watching service {service!r}"
        self._agent = agent
        self._policy = WatchPolicy(
            required_tags=tags[1:], where=f"{self._doing} at Consul agent {agent}"
        )
        self._broadcaster = broadcaster
        self._answered = answered

    @property
    def index(self) -> int:
        """The index to ask the next query with (0: a plain read)."""
        return self._policy.index

    def after(self, answer: tuple[object, object] | Exception) -> float:
        """Carry out the decision on ``(X-Consul-Index, entries)`` or on the query's
        error; return the seconds to wait before the next query."""
        if isinstance(answer, Exception):
            error = map_error(answer, doing=self._doing, agent=self._agent)
            decision = self._policy.failed(error)
        else:
            decision = self._policy.answered(*answer)
        if decision.log is not None:
            logger.warning("%s", decision.log)
        if decision.event is not None:
            self._broadcaster.publish(decision.event)
        if decision.error is not None:
            self._broadcaster.publish_error(decision.error)
        self._answered()
        return decision.delay


class _HealthWatch:
    """The thread running one blocking-query loop and publishing to ``broadcaster``."""

    def __init__(
        self,
        client: ConsulClient,
        service: str,
        tags: tuple[str, ...],
        passing_only: bool,
        wait: float,
        broadcaster: Broadcaster,
    ) -> None:
        self.origin = client  # keeps id(client) in the watch key from being reused
        self._client, self._interruptible = private_copy(client)
        self._agent = agent_address(client)
        self._service = service
        self._tags = tags
        self._passing_only = passing_only
        self._wait = go_duration(wait)
        self._stopping = threading.Event()
        self._answered = threading.Event()
        self._steps = _Steps(service, tags, self._agent, broadcaster, self._answered.set)
        self._thread = threading.Thread(
            target=self._run, name=f"kitsd-consul-watch-{service}", daemon=True
        )
        self._thread.start()

    def wait_answered(self, timeout: float) -> bool:
        """Block until the first answer (or error) was published, at most ``timeout`` seconds."""
        return self._answered.wait(timeout)

    def stop(self) -> None:
        """Interrupt the query in flight and any backoff sleep, and join the thread."""
        self._stopping.set()
        if self._interruptible is not None:
            self._interruptible.close()
        if self._thread is threading.current_thread():
            return  # stopped from a subscriber callback: the loop ends on its own
        self._thread.join(_JOIN_TIMEOUT)
        if self._thread.is_alive():
            logger.warning("consul watch of %r did not stop within %.0fs; its client "
                           "call is still running", self._service, _JOIN_TIMEOUT)

    def _query(self, index: int) -> tuple[object, object]:
        return self._client.health.service(
            self._service,
            index=str(index) if index > 0 else None,
            wait=self._wait,
            passing=True if self._passing_only else None,
            tag=self._tags[0] if self._tags else None,
        )

    def _run(self) -> None:
        answer: tuple[object, object] | Exception
        while not self._stopping.is_set():
            try:
                answer = self._query(self._steps.index)
            except Exception as error:  # noqa: BLE001 - every failure becomes an error event
                answer = error
            if self._stopping.is_set():
                return  # an interrupted query is no news: publish nothing
            delay = self._steps.after(answer)
            if delay > 0:
                self._stopping.wait(delay)


def _watch_arguments(
    service: str, tags: Sequence[str], passing_only: bool, wait: float
) -> tuple[str, tuple[str, ...], bool]:
    """Both instancers' checked ``(service, tags, passing_only)``; raises ``ValueError``
    or ``TypeError`` for bad ones (``wait`` is only checked)."""
    if not isinstance(service, str) or not service.strip() or "/" in service:
        raise ValueError(f"service must be a non-empty Consul service name, not {service!r}")
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 < wait <= 600:
        raise ValueError(f"wait must be in (0, 600] seconds, not {wait!r}")
    return service, tags_tuple(tags), bool(passing_only)


_WATCHES = SharedWatches()


class ConsulInstancer(InstancerHandle):
    """The live instances of ``service`` in Consul (implements :class:`sd.Instancer`).

    ``client`` is a py-consul ``consul.Consul`` (or anything satisfying
    :class:`sd.consul.client.ConsulClient`); its ACL token is used, never logged.
    ``tags``: keep only instances carrying all of them (the first is filtered
    by Consul, the others here).  ``passing_only``: only instances whose checks
    all pass.  ``wait``: how long the agent may hold a blocking query (seconds).
    ``first_answer_timeout``: the constructor waits up to this long for the
    first answer (or error) so that the first subscriber sees real data; 0 does
    not wait.  ``owns_client``: ``stop()`` also closes ``client``'s HTTP session
    (``client.close()``, or py-consul's ``client.http.session.close()``).

    ``subscribe(callback)``, ``unsubscribe(callback)``, ``state`` and ``stop()``
    are :class:`sd.instancer.InstancerHandle`'s.  Instancers with the same
    client, service, tags and ``passing_only`` share one watch.

    Failures never raise: they arrive as an :class:`sd.Event` whose ``error``
    is a :class:`sd.errors.RegistryUnavailableError` (or a
    :class:`sd.errors.PermissionDeniedError` for an ACL refusal), chained from
    the py-consul error, keeping the last instances.  Raises ``ValueError`` or
    ``TypeError`` for bad arguments.  Thread-safe; ``stop()`` is idempotent and
    prompt (see the module docstring).
    """

    def __init__(
        self,
        client: ConsulClient,
        service: str,
        *,
        tags: Sequence[str] = (),
        passing_only: bool = True,
        wait: float = DEFAULT_WAIT,
        first_answer_timeout: float = 5.0,
        owns_client: bool = False,
    ) -> None:
        self.service, self.tags, self.passing_only = _watch_arguments(
            service, tags, passing_only, wait
        )
        self._client = client
        self._owns_client = owns_client
        key = (id(client), service, self.tags, self.passing_only)

        def start(broadcaster: Broadcaster) -> _HealthWatch:
            return _HealthWatch(client, service, self.tags, self.passing_only, wait, broadcaster)

        broadcaster, watch, self._release_share = _WATCHES.acquire(
            key, start, kind="consul", service=service)  # kitsd.observe labels
        super().__init__(broadcaster, self._release_watch)
        if first_answer_timeout > 0:
            watch.wait_answered(first_answer_timeout)

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
    """Close a client's HTTP session: ``close()`` if it has one, else py-consul's session."""
    close = getattr(client, "close", None)
    if callable(close):
        close()
        return
    session = getattr(getattr(client, "http", None), "session", None)
    close = getattr(session, "close", None)
    if callable(close):
        close()


class AsyncConsulInstancer(InstancerHandle):
    """The asyncio twin of :class:`ConsulInstancer` (implements :class:`sd.Instancer`).

    ``agent`` is the agent's ``host:port`` (IPv6 in brackets) or a py-consul
    client, whose address, scheme, TLS settings, datacenter and ACL token are
    used.  ``token``/``scheme``/``verify``/``dc`` apply to a ``host:port``
    agent.  ``tags``, ``passing_only`` and ``wait`` are as for
    :class:`ConsulInstancer`; ``timeout`` bounds connecting and answering on top
    of ``wait``.  The HTTP goes through ``httpx.AsyncClient`` (see the module
    docstring), not through py-consul.

    Build it inside a running event loop (else ``RuntimeError``); its watch is a
    task of that loop, not shared with other instancers.  ``stop()`` cancels
    the task (idempotent, prompt); ``await aclose()`` (or ``async with``) also
    waits for it to end and closes the HTTP client.  Errors arrive as events,
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
        scheme: str = "http",
        verify: bool | str = True,
        dc: str | None = None,
        wait: float = DEFAULT_WAIT,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.service, self.tags, self.passing_only = _watch_arguments(
            service, tags, passing_only, wait
        )
        loop = asyncio.get_running_loop()
        base_url, token, verify, dc = _agent_settings(agent, token, scheme, verify, dc)
        self.agent = base_url
        self._token = token
        self._dc = dc
        self._wait = wait
        self._timeout = timeout
        self._path = f"/v1/health/service/{urllib.parse.quote(service, safe='')}"
        self._http = httpx.AsyncClient(base_url=base_url, verify=verify, trust_env=False)
        self._answered = asyncio.Event()
        broadcaster = Broadcaster(kind="consul", service=service)  # kitsd.observe labels
        self._steps = _Steps(service, self.tags, base_url, broadcaster, self._answered.set)
        super().__init__(broadcaster, self._cancel)
        self._task = loop.create_task(self._run(), name=f"kitsd-consul-watch-{service}")

    async def wait_answered(self) -> None:
        """Wait until the first answer (or error) was published (bound it with
        ``asyncio.timeout``)."""
        await self._answered.wait()

    def _cancel(self) -> None:
        self._task.cancel()

    async def aclose(self) -> None:
        """:meth:`stop`, then wait for the watch task to end (it closes its HTTP client)."""
        self.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _query(self, index: int) -> tuple[object, object]:
        params: list[tuple[str, str | int | float | bool | None]] = []
        budget = self._timeout
        if index > 0:
            params += [("index", str(index)), ("wait", go_duration(self._wait))]
            budget += self._wait + self._wait / 16  # Consul adds up to wait/16 of jitter
        if self.passing_only:
            params.append(("passing", "1"))
        if self.tags:
            params.append(("tag", self.tags[0]))
        if self._dc:
            params.append(("dc", self._dc))
        headers = {"X-Consul-Token": self._token} if self._token else {}
        response = await self._http.get(self._path, params=params, headers=headers,
                                        timeout=httpx.Timeout(self._timeout, read=budget))
        found = check_status(response.status_code, response.text)
        entries: object = response.json() if found else None
        return response.headers.get("X-Consul-Index"), entries

    async def _run(self) -> None:
        answer: tuple[object, object] | Exception
        try:
            while True:
                try:
                    answer = await self._query(self._steps.index)
                except Exception as error:  # noqa: BLE001 - every failure becomes an error event
                    answer = error
                delay = self._steps.after(answer)
                if delay > 0:
                    await asyncio.sleep(delay)
        finally:
            await self._http.aclose()

    def __repr__(self) -> str:
        return (f"AsyncConsulInstancer({self.service!r}, tags={list(self.tags)!r}, "
                f"passing_only={self.passing_only}, agent={self.agent!r})")


def _agent_settings(
    agent: str | ConsulClient, token: str | None, scheme: str, verify: bool | str, dc: str | None
) -> tuple[str, str | None, bool | str, str | None]:
    """``(base URL, token, verify, dc)`` for a ``host:port`` or a py-consul client."""
    if isinstance(agent, str):
        try:
            host, port = split_address(agent)
        except InvalidInstanceError as error:
            raise MisuseError(f"Consul agent address must be host:port, not {agent!r}") \
                from error
        return f"{scheme}://{host}:{port}", token, verify, dc
    http = getattr(agent, "http", None)
    base = getattr(http, "base_uri", None)
    if not isinstance(base, str):
        raise TypeError(f"agent must be host:port or a py-consul client, not {agent!r}")
    client_token = getattr(agent, "token", None)
    client_verify = getattr(http, "verify", verify)
    client_dc = getattr(agent, "dc", None)
    return (
        base,
        client_token if isinstance(client_token, str) and client_token else token,
        client_verify if isinstance(client_verify, bool | str) else verify,
        client_dc if isinstance(client_dc, str) else dc,
    )
