"""The kazoo boundary: building a client, classifying its errors, waiting on its calls.

Everything the ZooKeeper driver needs from kazoo goes through here, through
kazoo's public API only: ``KazooClient`` and its ``*_async`` calls,
``add_listener``/``remove_listener``, ``client_state`` and ``hosts``.  kazoo is
imported when :func:`connect` builds a client or an error is classified, so
``import sd.zk`` works without it.

Credentials (digest ``user:password``) are handed to kazoo's ``auth_data`` and
never kept, logged or shown by kitsd; kazoo's own DEBUG line showing the
``Auth`` packet is redacted on the logger :func:`connect` gives it (a client
you build yourself logs to kazoo's loggers, which kitsd does not touch).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Protocol, runtime_checkable

from kitsd.core import validate
from kitsd.core.errors import (
    BackendError,
    MisuseError,
    PermissionDeniedError,
    RegistryUnavailableError,
)
from kitsd.sd.zk.view import brief

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "KAZOO_LOGGER",
    "ConnectAttempts",
    "Reconnected",
    "Stopped",
    "ZKClient",
    "attempts_of",
    "await_result",
    "check_client",
    "close_client",
    "connect",
    "describe",
    "is_no_node",
    "is_node_exists",
    "start_connecting",
    "summarize_error",
    "to_backend_error",
]

logger = logging.getLogger(__name__)

_SLICE: Final = 0.05  # how often a wait on a kazoo call looks at the stop flag

#: Seconds a server may take to answer kazoo's session handshake (see :class:`ConnectAttempts`).
HANDSHAKE_TIMEOUT: Final = 5.0


@runtime_checkable
class ZKClient(Protocol):
    """The part of ``kazoo.client.KazooClient`` the driver uses."""

    def get_children_async(self, path: str, watch: Any = None) -> Any: ...

    def get_async(self, path: str, watch: Any = None) -> Any: ...

    def exists_async(self, path: str, watch: Any = None) -> Any: ...

    def add_listener(self, listener: Callable[[Any], Any]) -> None: ...

    def remove_listener(self, listener: Callable[[Any], Any]) -> None: ...


_VERBS = ("get_children_async", "get_async", "exists_async", "add_listener", "remove_listener")


def check_client(client: object) -> None:
    """Raise ``TypeError`` unless ``client`` looks like a ``KazooClient``."""
    missing = [name for name in _VERBS if not callable(getattr(client, name, None))]
    if missing:
        raise TypeError(
            f"{type(client).__name__} is not a kazoo KazooClient (no {', '.join(missing)})"
        )


class Stopped(Exception):
    """The waiting side was stopped while a kazoo call was in flight."""


class Reconnected(Exception):
    """The client connected again while a kazoo call was in flight: a request sent on
    the connection that went away may never be answered (kazoo does not always fail
    it), so the caller asks again on the new one instead of waiting out its timeout."""


def await_result(
    result: Any, *, timeout: float, stopping: threading.Event,
    reconnected: threading.Event | None = None,
) -> Any:
    """Wait for a kazoo async result, at most ``timeout`` seconds, giving up at once
    (with :class:`Stopped`) when ``stopping`` is set, and (with :class:`Reconnected`)
    when ``reconnected`` is.  Raises what the call raised, or
    :class:`~kitsd.core.errors.RegistryUnavailableError` on timeout."""
    waited = 0.0
    while not result.wait(_SLICE):
        if stopping.is_set():
            raise Stopped
        if reconnected is not None and reconnected.is_set():
            raise Reconnected
        waited += _SLICE
        if waited >= timeout:
            raise RegistryUnavailableError(f"no answer from ZooKeeper within {timeout:g}s")
    if stopping.is_set():
        raise Stopped
    return result.get(timeout=0)


def _kazoo_exceptions() -> Any:
    from kazoo import exceptions

    return exceptions


def is_no_node(error: BaseException) -> bool:
    """Whether ``error`` is kazoo's ``NoNodeError``."""
    return isinstance(error, _kazoo_exceptions().NoNodeError)


def is_node_exists(error: BaseException) -> bool:
    """Whether ``error`` is kazoo's ``NodeExistsError``."""
    return isinstance(error, _kazoo_exceptions().NodeExistsError)


def to_backend_error(error: BaseException, what: str) -> BackendError:
    """Map a kazoo (or socket) error to the kitsd error tree; chain it with ``from``.

    Authentication and ACL refusals become :class:`~kitsd.core.errors.PermissionDeniedError`;
    everything else :class:`~kitsd.core.errors.RegistryUnavailableError`.  A
    :class:`BackendError` is returned unchanged.
    """
    if isinstance(error, BackendError):
        return error
    exceptions = _kazoo_exceptions()
    denied = (exceptions.NoAuthError, exceptions.AuthFailedError)
    kind: type[BackendError] = (
        PermissionDeniedError if isinstance(error, denied) else RegistryUnavailableError
    )
    mapped = kind(f"{what}: {summarize_error(error)}")
    mapped.__cause__ = error
    return mapped


def summarize_error(error: BaseException) -> str:
    """A short, secret-free description of ``error`` (its type and a truncated message)."""
    text = str(error)
    name = type(error).__name__
    return f"{name}: {brief(text)}" if text else name


def describe(client: object) -> str:
    """The client's server list, for messages (never its credentials)."""
    hosts = getattr(client, "hosts", None)
    try:
        listed = [f"{host}:{port}" for host, port in hosts] if hosts is not None else []
    except (TypeError, ValueError):
        listed = []
    chroot = getattr(client, "chroot", None) or ""
    return (",".join(listed) or type(client).__name__) + chroot


class _RedactAuth(logging.Filter):
    """Hide digest credentials in kazoo's own log lines.

    kazoo logs every request it sends at DEBUG, the ``Auth`` packet included
    (``Auth(auth_type=0, scheme='digest', auth='user:password')``); this filter,
    on the logger :func:`connect` hands kazoo, replaces that packet with its
    scheme alone before any handler sees it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(type(arg).__name__ == "Auth" for arg in args):
            record.args = tuple(
                f"Auth(scheme={getattr(arg, 'scheme', '?')!r}, auth='***')"
                if type(arg).__name__ == "Auth" else arg
                for arg in args
            )
        return True


class ConnectAttempts:
    """How kazoo's connecting goes, for a client :func:`connect` built.

    kazoo reports nothing while it cannot connect (no state change: the client stays
    ``CONNECTING``), and a connection that is merely slow (a loaded server, a TLS
    handshake, a first server that drops packets) looks the same from outside.  What
    tells them apart is kazoo's connection retry: it sleeps between two rounds over
    the servers only once *every* server failed (refused, unresolvable, timed out).
    And ``client.stop()`` waited for a session handshake in progress to time out (up
    to the session timeout, 10 s by default, against a server that accepts the
    connection and never answers): kazoo wakes its connection thread through a pipe
    that only its main loop listens to.

    And kazoo waits for the answer to its session handshake as long as the session
    timeout divided by the number of servers (10 s for one server, by default): a
    ZooKeeper that accepts the connection while it is starting and never answers the
    handshake (2 of 50 restarts here) held a reconnecting client that long, and with
    a session no longer than that the session expired.

    :func:`connect` gives kazoo a handler wired to this object: its ``sleep_func``
    (kazoo requires the connection retry to sleep through the handler's) is
    :meth:`sleep`, and its ``select`` is :meth:`select`, which waits on one socket in
    slices so that :func:`close_client` (:meth:`closing`) ends a handshake at once,
    and waits at most :data:`HANDSHAKE_TIMEOUT` for a handshake (kazoo then asks
    again, on the same session).  It also listens to the client's state:

    * :attr:`failing` is ``True`` from a failed round until the client connects;
    * listeners (``add_listener``) are called, on kazoo's thread, when it becomes so.

    A vendor workaround, fenced here (its contract tests are in ``tests/zk``).
    kazoo's command retries (``client.retry``) sleep through the same function: one
    that sleeps while the client is not connected also counts (it failed for want
    of a connection).  Thread-safe.
    """

    def __init__(self, handler: Any) -> None:
        self._lock = threading.Lock()
        self._connected = False
        self._failing = False
        self._closing = threading.Event()
        self._listeners: list[Callable[[], object]] = []
        self._select = handler.select
        handler.sleep_func = self.sleep
        handler.select = self.select

    @property
    def failing(self) -> bool:
        """Whether every server failed since the client was last connected."""
        return self._failing

    def add_listener(self, listener: Callable[[], object]) -> None:
        """Call ``listener()`` (on kazoo's thread; it must not block) whenever
        :attr:`failing` becomes ``True``."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], object]) -> None:
        """Forget ``listener``; an unknown one is ignored."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def closing(self) -> None:
        """The client is being stopped: a wait on one socket (a handshake) ends now."""
        self._closing.set()

    def sleep(self, seconds: float) -> None:
        """kazoo's retry sleep (see the class docstring): note the failure, then sleep."""
        with self._lock:
            news = not self._connected and not self._failing and not self._closing.is_set()
            if news:
                self._failing = True
            listeners = list(self._listeners) if news else []
        for listener in listeners:
            try:
                listener()
            except Exception:  # kazoo's connection thread must carry on
                logger.exception("a ZooKeeper connection listener raised")
        time.sleep(seconds)

    def select(self, rlist: list[Any], wlist: list[Any], xlist: list[Any],
               timeout: float | None = None) -> Any:
        """kazoo's ``select``; a wait on one socket (reading or writing a request: the
        main loop also waits on its wake-up pipe) is sliced, and ends early, with
        nothing ready, once :meth:`closing` was called; before the client is connected
        (a handshake) it lasts at most :data:`HANDSHAKE_TIMEOUT`."""
        if timeout is None or len(rlist) + len(wlist) != 1:
            return self._select(rlist, wlist, xlist, timeout)
        if not self._connected:
            timeout = min(timeout, HANDSHAKE_TIMEOUT)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready = self._select(rlist, wlist, xlist, min(_SLICE, max(left, 0.0)))
            if ready[0] or ready[1] or ready[2] or left <= _SLICE or self._closing.is_set():
                return ready

    def on_state(self, state: object) -> None:
        """kazoo's state listener: connected or not."""
        with self._lock:
            self._connected = str(state) == "CONNECTED"
            if self._connected:
                self._failing = False


def attempts_of(client: object) -> ConnectAttempts | None:
    """The :class:`ConnectAttempts` of a client :func:`connect` built, else ``None``."""
    sleep = getattr(getattr(client, "handler", None), "sleep_func", None)
    owner = getattr(sleep, "__self__", None)
    return owner if isinstance(owner, ConnectAttempts) else None


KAZOO_LOGGER: Final = "kitsd.sd.zk.kazoo"
"""The logger clients built by :func:`connect` give kazoo (credentials filtered out)."""

_kazoo_logger = logging.getLogger(KAZOO_LOGGER)
_kazoo_logger.addFilter(_RedactAuth())


def connect(
    hosts: str, *, auth: str | None = None, timeout: float = 10.0, start: bool = True
) -> Any:
    """A ``kazoo.client.KazooClient`` for ``hosts`` (``h1:2181,h2:2181``), started.

    ``auth`` is a digest credential ``user:password`` (sent to ZooKeeper on each
    connection, never logged).  ``timeout`` is the session timeout in seconds;
    with ``start`` the client connects in the background
    (:func:`start_connecting`): calls made before it is connected wait for the
    connection (kazoo's own synchronous calls without a bound), and a server that
    stays away shows up as error events, not as an exception here (the client's
    :class:`ConnectAttempts`, :func:`attempts_of`, tells a watch when every server
    failed).  The caller owns the client:
    stop it with :func:`close_client`.  Raises :class:`~kitsd.core.errors.MisuseError`
    for an empty host list, a bad timeout or a credential without ``:``, and
    ``ImportError`` without ``kazoo`` (``pip install 'kitsd[zk]'``).
    """
    if not isinstance(hosts, str) or not hosts.strip():
        raise MisuseError(f"ZooKeeper hosts must be a non-empty string, not {hosts!r}")
    validate.seconds("ZooKeeper session timeout", timeout)
    if auth is not None and (not isinstance(auth, str) or ":" not in auth):
        raise MisuseError("ZooKeeper digest auth must be a 'user:password' string")
    try:
        from kazoo.client import KazooClient
        from kazoo.handlers.threading import SequentialThreadingHandler
        from kazoo.retry import KazooRetry
    except ImportError as error:
        raise ImportError(f"the ZooKeeper driver needs kazoo: pip install 'kitsd[zk]' ({error})") \
            from error

    handler = SequentialThreadingHandler()
    attempts = ConnectAttempts(handler)  # its sleep_func and select (see ConnectAttempts)
    client = KazooClient(
        hosts=hosts,
        timeout=float(timeout),
        auth_data=[("digest", auth)] if auth is not None else None,
        handler=handler,
        # reconnect forever, with kazoo's own capped backoff: a watch must outlive an outage
        connection_retry=KazooRetry(max_tries=-1, delay=0.05, max_delay=2.0,
                                    sleep_func=handler.sleep_func),
        logger=_kazoo_logger,
    )
    client.add_listener(attempts.on_state)
    if start:
        start_connecting(client)
    return client


def start_connecting(client: Any) -> None:
    """``client.start_async()``, with the client marked as connecting first, so calls
    made before it is connected wait for the connection (as kazoo documents) instead
    of failing with ``ConnectionClosedError``.

    A vendor workaround, fenced here (its contract test is in ``tests/zk``): kazoo
    2.x refuses calls while its state is ``CLOSED``, and a new client stays ``CLOSED``
    until its connection thread has resolved the hosts and starts its first attempt
    (never, while they do not resolve).  Before any thread runs, the state is moved
    to ``CONNECTING`` through the client's own state transition, which from
    ``CLOSED`` only records the state (no listener is called).
    """
    from kazoo.protocol.states import KeeperState

    transition = getattr(client, "_session_callback", None)
    if callable(transition) and getattr(client, "client_state", None) == KeeperState.CLOSED:
        transition(KeeperState.CONNECTING)
    client.start_async()


def close_client(client: Any) -> None:
    """Stop and close a client :func:`connect` built; idempotent, never raises, and
    prompt even while a session handshake waits for a server that does not answer
    (:class:`ConnectAttempts`)."""
    attempts = attempts_of(client)
    if attempts is not None:
        attempts.closing()
    try:
        client.stop()
    except Exception as error:  # noqa: BLE001 - closing must not fail the caller
        logger.debug("stopping the ZooKeeper client failed: %s", summarize_error(error))
    try:
        client.close()
    except Exception as error:  # noqa: BLE001
        logger.debug("closing the ZooKeeper client failed: %s", summarize_error(error))
