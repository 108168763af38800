"""``ZKRegistrar``: keep an ephemeral sequential node for this instance under a ZooKeeper path.

Theory of operation
-------------------
``register()`` creates ``<path>/_c_<uuid>-<name><sequence>`` -- an
*ephemeral sequential* node whose data is the instance string, with the
"protected" ``_c_<uuid>-`` prefix go-kit's ``sd/zk`` registrar uses
(``CreateProtectedEphemeralSequential``) -- creating missing parents.  The node
lives as long as the client's session: a crashed process leaves discovery
when its session times out.

The prefix lets the registrar find its own node when ZooKeeper created it but
the answer was lost with the connection, so a retried create never leaves a
duplicate behind.

A session expiry deletes the node.  A small thread, woken by kazoo's state
listener, checks on every ``CONNECTED`` (a reconnect in the same session, or a
new session after expiry) that the node is still there and creates it again
if not, retrying with a jittered backoff while ZooKeeper refuses.

``deregister()`` stops the thread, removes the listener and deletes the node.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import uuid
from typing import Any, Final

from kitsd.core import validate
from kitsd.core.errors import MisuseError
from kitsd.sd.backoff import ZK_WATCH, Backoff
from kitsd.sd.instance_info import InstanceInfo
from kitsd.sd.instance_value import encode_value
from kitsd.sd.registrar import RegistrarContext
from kitsd.sd.transient import retry_transient
from kitsd.sd.zk.client import (
    Stopped,
    await_result,
    describe,
    is_no_node,
    summarize_error,
    to_backend_error,
)
from kitsd.sd.zk.view import check_instance, check_path, child_path

__all__ = ["ZKRegistrar"]

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT: Final = 2.0
_CALL_TIMEOUT: Final = 10.0
_VERBS = ("create_async", "delete_async", "exists_async", "get_children_async",
          "add_listener", "remove_listener")


class _Stop:
    """Queue sentinel."""


_STOP: Final = _Stop()


class ZKRegistrar(RegistrarContext):
    """Registers ``instance`` as an ephemeral sequential child of ``path`` (go-kit's
    ``zk.Registrar``).

    ``register()`` creates the node (and missing parents) and starts watching
    the session; ``deregister()`` deletes it.  Both are idempotent, and the
    registrar can register again after deregistering.  As a context manager it
    registers on enter and deregisters on exit.  A node lost with an expired
    session is created again as soon as the client has a new session.

    ``name`` is the node name before the sequence number (go-kit's
    ``Service.Name``).  The node's data is ``instance``, or with ``info`` (an
    :class:`~sd.InstanceInfo`) the JSON form ``{"address": ..., "weight": ...,
    "tags": [...], "meta": {...}}`` that :class:`~sd.zk.ZKInstancer` reads back as
    metadata.  ``client`` is a started ``kazoo.client.KazooClient``
    and stays the caller's.

    Raises ``TypeError`` for a client that is not a ``KazooClient`` or an ``info``
    that is not an ``InstanceInfo``,
    :class:`~kitsd.core.errors.MisuseError` (a ``ValueError``) for a bad path, name or
    ``retry_for`` and :class:`~kitsd.core.errors.InvalidInstanceError` for an instance
    that is not ``host:port``.  ``register()`` and ``deregister()`` raise
    :class:`~kitsd.core.errors.RegistryUnavailableError` or
    :class:`~kitsd.core.errors.PermissionDeniedError` (chained from kazoo's error) when
    ZooKeeper still fails them after ``retry_for`` seconds (``0`` tries once).
    Thread-safe.
    """

    def __init__(
        self, client: Any, path: str, instance: str, *, name: str = "instance",
        retry_for: float = 10.0, info: InstanceInfo | None = None,
    ) -> None:
        self._path = check_path(path)
        if not isinstance(name, str) or not name or "/" in name \
                or any(ord(char) < 0x20 for char in name):
            raise MisuseError(f"ZooKeeper node name must be a non-empty word, not {name!r}")
        self._instance = check_instance(instance)
        if info is not None and not isinstance(info, InstanceInfo):
            raise TypeError(f"ZooKeeper registrar info must be an sd.InstanceInfo or None, "
                            f"not {type(info).__name__}")
        self._info = info
        self._data = encode_value(self._instance, info).encode("utf-8")
        validate.seconds("ZooKeeper registrar retry_for", retry_for, zero=True)
        missing = [verb for verb in _VERBS if not callable(getattr(client, verb, None))]
        if missing:
            raise TypeError(f"{type(client).__name__} is not a kazoo KazooClient "
                            f"(no {', '.join(missing)})")
        self._client = client
        self._name = name
        self._retry_for = float(retry_for)
        self._protected = f"_c_{uuid.uuid4().hex}-"
        self._lock = threading.Lock()  # serialises register/deregister
        self._state_lock = threading.Lock()
        self._node: str | None = None
        self._creations = 0
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._queue: queue.SimpleQueue[str | _Stop] = queue.SimpleQueue()

    @property
    def client(self) -> Any:
        """The kazoo client given (still the caller's)."""
        return self._client

    @property
    def path(self) -> str:
        """The parent path the node is created under."""
        return self._path

    @property
    def instance(self) -> str:
        """The registered instance (normalised)."""
        return self._instance

    @property
    def info(self) -> InstanceInfo | None:
        """The metadata registered with the instance (``None``: plain ``host:port`` data)."""
        return self._info

    @property
    def node(self) -> str | None:
        """The full path of the node while registered, else ``None``."""
        with self._state_lock:
            return self._node

    @property
    def creations(self) -> int:
        """How many times the node was created: once per ``register()`` plus once per loss."""
        with self._state_lock:
            return self._creations

    @property
    def registered(self) -> bool:
        """Whether ``register()`` is in effect."""
        with self._lock:
            return self._thread is not None

    def register(self) -> None:
        """Create the node and keep it through session expiries; idempotent."""
        with self._lock:
            if self._thread is not None:
                return
            stopping = threading.Event()
            retry_transient(lambda: self._create(stopping), within=self._retry_for,
                            what=f"registering {self._instance!r} under {self._path!r}")
            self._stopping = stopping
            self._queue = queue.SimpleQueue()
            self._client.add_listener(self._on_state)
            self._thread = threading.Thread(
                target=self._keep, args=(stopping, self._queue),
                name=f"kitsd-zk-registrar {self._path}", daemon=True,
            )
            self._thread.start()
        logger.info("registered %r in ZooKeeper as %s", self._instance, self.node)

    def deregister(self) -> None:
        """Stop watching the session and delete the node; idempotent."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._stopping.set()
            self._queue.put(_STOP)
            try:
                self._client.remove_listener(self._on_state)
            except Exception as error:  # noqa: BLE001 - deregistering either way
                logger.debug("removing the state listener failed: %s", summarize_error(error))
            if thread is not threading.current_thread():
                thread.join(_JOIN_TIMEOUT)
            with self._state_lock:
                node, self._node = self._node, None
            if node is not None:
                retry_transient(lambda: self._delete(node), within=self._retry_for,
                                what=f"deregistering {self._instance!r} from ZooKeeper")
        logger.info("deregistered %r from ZooKeeper (%s)", self._instance, node)

    # -- ZooKeeper calls ----------------------------------------------------------

    def _call(self, result: Any, stopping: threading.Event) -> Any:
        return await_result(result, timeout=_CALL_TIMEOUT, stopping=stopping)

    def _create(self, stopping: threading.Event) -> None:
        what = f"registering {self._instance!r} under {self._path!r} at {describe(self._client)}"
        try:
            node = self._find_own(stopping)
            if node is None:
                node = self._call(self._client.create_async(
                    child_path(self._path, self._protected + self._name),
                    self._data,
                    ephemeral=True, sequence=True, makepath=True,
                ), stopping)
        except Stopped:
            raise
        except Exception as error:
            raise to_backend_error(error, what) from error
        with self._state_lock:
            self._node = node
            self._creations += 1

    def _find_own(self, stopping: threading.Event) -> str | None:
        """Our node, if ZooKeeper created it but the answer was lost (or it survived)."""
        try:
            names = self._call(self._client.get_children_async(self._path), stopping)
        except Exception as error:
            if is_no_node(error):
                return None
            raise
        own = sorted(name for name in names if name.startswith(self._protected))
        return child_path(self._path, own[-1]) if own else None

    def _delete(self, node: str) -> None:
        try:
            self._call(self._client.delete_async(node), threading.Event())
        except Exception as error:
            if is_no_node(error):
                return
            raise to_backend_error(
                error, f"deregistering {self._instance!r} at {describe(self._client)}"
            ) from error

    # -- keeping the node -----------------------------------------------------------

    def _on_state(self, state: Any) -> None:
        self._queue.put(str(state))

    def _keep(self, stopping: threading.Event, notes: queue.SimpleQueue[str | _Stop]) -> None:
        backoff = Backoff(curve=ZK_WATCH, rng=random.Random())
        check = False
        delay: float | None = None
        while not stopping.is_set():
            try:
                note = notes.get(timeout=delay)
            except queue.Empty:
                note = "RETRY"
            if isinstance(note, _Stop):
                break
            if note == "LOST":
                logger.warning("ZooKeeper session of %r expired: its node is gone; it will be"
                               " created again when the client reconnects", self._instance)
            check = check or note in {"CONNECTED", "RETRY"}
            if not check or not getattr(self._client, "connected", True):
                continue
            try:
                self._ensure(stopping)
            except Stopped:
                break
            except Exception as error:  # noqa: BLE001 - the registrar must outlive any failure
                delay = backoff.next_delay()
                logger.warning("keeping %r registered in ZooKeeper failed (%s); retrying in"
                               " %.2fs", self._instance, summarize_error(error), delay)
                continue
            check, delay = False, None
            backoff.reset()
        logger.debug("ZooKeeper registrar of %r stopped", self._instance)

    def _ensure(self, stopping: threading.Event) -> None:
        node = self.node
        if node is not None and self._call(self._client.exists_async(node), stopping):
            return
        self._create(stopping)
        logger.info("registered %r in ZooKeeper again as %s", self._instance, self.node)

    def __repr__(self) -> str:
        return f"ZKRegistrar(path={self._path!r}, instance={self._instance!r})"
