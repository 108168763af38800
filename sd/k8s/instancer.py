"""``EndpointSliceInstancer`` and ``AsyncEndpointSliceInstancer``: a Service's instances.

Theory of operation
-------------------
Both run the one watch of :mod:`sd.k8s.watch` (list, then watch the Service's
EndpointSlices over httpx; the rules in :mod:`sd.k8s.slices` and
:mod:`sd.k8s.list_watch`):

* :class:`EndpointSliceInstancer` runs it on a private event loop in its own
  thread (:class:`sd._loop_thread.LoopThread`).  One watch per (configuration,
  namespace, Service, port, address types, timeouts) is shared by every
  instancer built with the same arguments (:class:`sd.instancer.SharedWatches`)
  and stopped when the last of them stops.
* :class:`AsyncEndpointSliceInstancer` runs it as a task of your event loop,
  not shared.

``stop()`` cancels the watch's task (from any thread, through the loop): the
request in flight or the backoff sleep is abandoned at once and the
connections are closed, so ``stop()`` returns in milliseconds and leaves no
thread.  Arguments are all checked before anything starts: a bad one raises
``TypeError`` or :class:`kitsd.core.errors.MisuseError` naming it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable

import httpx

from kitsd.core import validate
from kitsd.core.errors import MisuseError, clip
from kitsd.sd._async_watch import AsyncWatchHandle
from kitsd.sd._loop_thread import LoopThread
from kitsd.sd.instancer import (
    DEFAULT_FIRST_ANSWER_TIMEOUT,
    Broadcaster,
    InstancerHandle,
    SharedWatches,
    check_first_answer_timeout,
)
from kitsd.sd.k8s.config import ClusterConfig
from kitsd.sd.k8s.list_watch import MIN_WATCH_TIMEOUT
from kitsd.sd.k8s.slices import ADDRESS_TYPES, DEFAULT_ADDRESS_TYPES, PortChoice
from kitsd.sd.k8s.watch import DEFAULT_LIVENESS_TIMEOUT, SliceQuery, WatchStats, run_watch

__all__ = ["AsyncEndpointSliceInstancer", "EndpointSliceInstancer", "check_port"]

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SERVICE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def check_port(port: object) -> str | int | None:
    """A user's ``port``: ``None``, a port number 1-65535, or a port name (a DNS
    label, as Service port names are).  Raises ``TypeError``/``MisuseError``."""
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, int | str):
        raise TypeError(f"port must be a port name, a number or None, not {type(port).__name__}")
    if isinstance(port, int):
        if not 1 <= port <= 65535:
            raise MisuseError(f"port must be in 1-65535, not {port}")
        return port
    if not _DNS_LABEL.fullmatch(port) or len(port) > 63:
        raise MisuseError(f"port must be a port number or a Service port name (a DNS label), "
                          f"not {clip(port, 80)!r}")
    return port


def _query(service: object, namespace: object, port: object, config: ClusterConfig,
           address_types: Iterable[str], liveness_timeout: object,
           watch_timeout: object) -> SliceQuery:
    """Both instancers' checked query; raises ``TypeError``/``MisuseError``."""
    if not isinstance(service, str) or not _SERVICE.fullmatch(service) or len(service) > 63:
        raise MisuseError(f"service must be a Kubernetes Service name (a DNS-1035 label), not "
                          f"{clip(str(service), 80)!r}")
    if namespace is None:
        namespace = config.namespace
    if not isinstance(namespace, str) or not _DNS_LABEL.fullmatch(namespace) \
            or len(namespace) > 63:
        raise MisuseError(f"namespace must be a Kubernetes namespace name (a DNS label), not "
                          f"{clip(str(namespace), 80)!r}")
    if isinstance(address_types, str) or not isinstance(address_types, Iterable):
        raise TypeError("address_types must be an iterable of address types (\"IPv4\", "
                        f"\"IPv6\", \"FQDN\"), not {type(address_types).__name__}")
    address_types = list(address_types)
    if not all(isinstance(kind, str) for kind in address_types):
        raise TypeError("address_types must be address type names (strings)")
    types = tuple(sorted(set(address_types)))
    unknown = [kind for kind in types if kind not in ADDRESS_TYPES]
    if not types or unknown:
        raise MisuseError(f"address_types must be some of {sorted(ADDRESS_TYPES)}, not "
                          f"{list(address_types)!r}")
    liveness = validate.optional_seconds("liveness_timeout", liveness_timeout, maximum=3600)
    every = validate.seconds("watch_timeout", watch_timeout, minimum=1, maximum=3600)
    return SliceQuery(namespace, service, PortChoice.of(check_port(port)), types,
                      liveness_timeout=liveness, watch_timeout=every or MIN_WATCH_TIMEOUT)


def _transport(transport: object) -> httpx.AsyncBaseTransport | None:
    if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
        raise TypeError(f"transport must be an httpx.AsyncBaseTransport or None, not "
                        f"{type(transport).__name__}")
    return transport


def _config(config: object) -> ClusterConfig:
    if config is None:
        return ClusterConfig.load()
    if not isinstance(config, ClusterConfig):
        raise TypeError(f"config must be an sd.k8s.ClusterConfig or None, not "
                        f"{type(config).__name__}")
    return config


class _ThreadWatch:
    """The shared watch of :class:`EndpointSliceInstancer`: the coroutine on a LoopThread."""

    def __init__(self, config: ClusterConfig, query: SliceQuery, broadcaster: Broadcaster,
                 transport: httpx.AsyncBaseTransport | None) -> None:
        self.stats = WatchStats()
        self._thread = LoopThread(
            f"kitsd-k8s-watch-{query.name}",
            lambda: run_watch(config, query, broadcaster, _nothing,
                              stats=self.stats, transport=transport),
        )
        self._thread.start()

    def stop(self) -> None:
        """Cancel the request in flight (or the backoff sleep) and join the thread."""
        self._thread.stop()


_WATCHES = SharedWatches()


def _nothing() -> None:
    """The thread watch's ``answered`` hook: its broadcaster is pending instead."""


class _Watched:
    """What both EndpointSlice instancers say about the Service they watch."""

    query: SliceQuery
    config: ClusterConfig

    @property
    def service(self) -> str:
        """The Service name."""
        return self.query.service

    @property
    def namespace(self) -> str:
        """The Service's namespace."""
        return self.query.namespace

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.query.name!r}, {self.query.port}, "
                f"server={self.config.server!r})")


class EndpointSliceInstancer(_Watched, InstancerHandle):
    """The instances of a Kubernetes Service, from its EndpointSlices (implements
    :class:`sd.Instancer`).

    One ``address:port`` per endpoint that is ready and not terminating, for the
    chosen ``port``: a Service port name (``"http"``), the endpoints' port number
    (the pods' target port), or ``None`` for a Service with one port.  When no
    endpoint is ready, the terminating ones that still serve are used rather than
    none (kube-proxy's rule; the README's conditions table has them all).  Each
    instance's :class:`sd.InstanceInfo` ``meta`` has ``zone``, ``node``, ``pod`` and
    ``for-zones`` (topology hints) when the slice says them.

    ``namespace``: the Service's namespace (``None``: the configuration's, as
    kubectl's default namespace).  ``config``: an :class:`sd.k8s.ClusterConfig`, or
    ``None`` for :meth:`ClusterConfig.load` (``$KUBECONFIG``, in-cluster, or
    ``~/.kube/config``).  ``address_types``: which slices to read (``"IPv4"``,
    ``"IPv6"``, ``"FQDN"``; default the first two).  ``first_answer_timeout``: the
    constructor waits up to this long (seconds, default 5, at most 600) for the
    first list or error, so every subscriber starts from real data; when none
    came, it gets a :class:`kitsd.core.errors.RegistryUnavailableError` saying so
    (the watch keeps trying); 0 does not wait (the first answer is sent when it
    comes, never an empty set nobody read).
    ``liveness_timeout``: a watch silent this long is opened again (``None``:
    never); ``watch_timeout``: each watch asks the server to end it after this to
    twice this many seconds (default 5 min, as client-go).  ``transport``: an httpx
    async transport to use instead of a real connection (tests).

    Failures never raise: they arrive as an :class:`sd.Event` whose ``error`` is a
    :class:`kitsd.core.errors.PermissionDeniedError` (401/403, naming the verb and
    the resource) or a :class:`kitsd.core.errors.RegistryUnavailableError`, chained
    from the cause, keeping the last instances; a port that the slices make
    ambiguous or lack gives a :class:`kitsd.core.errors.MisuseError` event.  Raises
    ``TypeError`` or :class:`kitsd.core.errors.MisuseError` for a bad argument (or no
    configuration found) before anything starts.  Thread-safe; ``stop()`` is
    idempotent and prompt.  Instancers with equal arguments share one watch.
    """

    def __init__(
        self,
        service: str,
        *,
        namespace: str | None = "default",
        port: str | int | None = None,
        config: ClusterConfig | None = None,
        address_types: Iterable[str] = DEFAULT_ADDRESS_TYPES,
        first_answer_timeout: float = DEFAULT_FIRST_ANSWER_TIMEOUT,
        liveness_timeout: float | None = DEFAULT_LIVENESS_TIMEOUT,
        watch_timeout: float = MIN_WATCH_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        transport = _transport(transport)
        cluster = _config(config)
        query = _query(service, namespace, port, cluster, address_types, liveness_timeout,
                       watch_timeout)
        first_wait = check_first_answer_timeout(first_answer_timeout)
        _ = cluster.ssl_context  # a CA or certificate that cannot be loaded fails here
        self.query, self.config = query, cluster
        key = (cluster, query)

        def start(broadcaster: Broadcaster) -> _ThreadWatch:
            return _ThreadWatch(cluster, query, broadcaster, transport)

        broadcaster, watch, release = _WATCHES.acquire(
            key, start, owner=transport, kind="k8s", service=query.name,  # kitsd.observe labels
            pending=True)
        self._watch = watch
        super().__init__(broadcaster, release, first_answer_timeout=first_wait,
                         source=f"kube-apiserver {cluster.server} ({query.name})")

    @property
    def stats(self) -> WatchStats:
        """The shared watch's counters (lists, relists after 410, watches, bookmarks, errors)."""
        return self._watch.stats


class AsyncEndpointSliceInstancer(_Watched, AsyncWatchHandle):
    """The asyncio twin of :class:`EndpointSliceInstancer` (implements :class:`sd.Instancer`):
    the same arguments, the same watch coroutine as a task of the running loop, not
    shared.  Subscribers are sent the first list when it arrives (``subscribe()``
    cannot wait for it: the watch runs on the caller's loop), or after
    ``first_answer_timeout`` seconds (default 5; 0: no bound) without one a
    :class:`kitsd.core.errors.RegistryUnavailableError` saying so; never an empty
    set nobody read.  ``await wait_answered()`` waits for it.

    Build it inside a running event loop (else ``RuntimeError``).  ``stop()`` cancels
    the task (idempotent, prompt); ``await aclose()`` (or ``async with``) also waits
    for it to end (it closes its connections).  Errors arrive as events, exactly as
    for :class:`EndpointSliceInstancer`.  Use it from its loop's thread.
    """

    def __init__(
        self,
        service: str,
        *,
        namespace: str | None = "default",
        port: str | int | None = None,
        config: ClusterConfig | None = None,
        address_types: Iterable[str] = DEFAULT_ADDRESS_TYPES,
        liveness_timeout: float | None = DEFAULT_LIVENESS_TIMEOUT,
        watch_timeout: float = MIN_WATCH_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        first_answer_timeout: float = DEFAULT_FIRST_ANSWER_TIMEOUT,
    ) -> None:
        transport = _transport(transport)
        cluster = _config(config)
        query = _query(service, namespace, port, cluster, address_types, liveness_timeout,
                       watch_timeout)
        first_wait = check_first_answer_timeout(first_answer_timeout)
        _ = cluster.ssl_context
        asyncio.get_running_loop()  # RuntimeError before anything is made
        self.query, self.config = query, cluster
        self.stats = WatchStats()
        self._answered = asyncio.Event()
        broadcaster = Broadcaster(kind="k8s", service=query.name,  # kitsd.observe labels
                                  pending=True)
        super().__init__(
            broadcaster,
            lambda: run_watch(cluster, query, broadcaster, self._answered.set,
                              stats=self.stats, transport=transport),
            name=f"kitsd-k8s-watch-{query.name}", first_answer_timeout=first_wait,
            source=f"kube-apiserver {cluster.server} ({query.name})")

    async def wait_answered(self) -> None:
        """Wait until the first list (or error) was published (bound it with
        ``asyncio.timeout``)."""
        await self._answered.wait()

