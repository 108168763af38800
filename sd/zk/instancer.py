"""``ZKInstancer``: the instances stored as the data of a ZooKeeper node's children.

Theory of operation
-------------------
One :class:`ChildrenWatch` thread per (client, path) -- shared by every
:class:`ZKInstancer` handle through :class:`sd.instancer.SharedWatches` --
keeps the pure :class:`sd.zk.view.ChildrenView` in step with ZooKeeper:

1. *sync* (once kazoo is connected: while it is not, calls would only queue; an
   error event says so as soon as kazoo failed to reach every server, see
   :class:`sd.zk.client.ConnectAttempts` -- a connection that is only slow is not
   an error -- or, for a client :func:`sd.zk.connect` did not build, after
   :data:`CONNECT_GRACE` seconds): list the children
   with a children watch (or, when the node does not
   exist, set an ``exists`` watch on it and publish an empty set), read the data
   of every child the view says is new or changed, each with a data watch, and
   publish the view's instances;
2. *wait*: every watch that fires, and every connection state change kazoo
   reports, only puts a note on this watch's queue (kazoo's callback threads
   never block); the thread turns the notes into view marks and goes back to 1;
3. *connection loss* (kazoo ``SUSPENDED``) and *session expiry* (``LOST``):
   kazoo drops every watcher, so the view is reset and subscribers get an
   :class:`~sd.event.Event` carrying a
   :class:`~kitsd.core.errors.RegistryUnavailableError` with the last instances kept;
   when kazoo reports ``CONNECTED`` again (same session or a new one) the
   thread re-lists and re-reads everything with fresh watches, so no change
   made meanwhile is lost;
4. a failed call publishes the error the same way and retries after a jittered
   backoff (:class:`sd.backoff.Backoff`), or at once when the connection
   comes back; a call still waiting when kazoo connects again after a loss is
   abandoned (its request may have gone with the old connection, unanswered)
   and the sync starts over on the new connection.

``stop()`` removes the state listener, wakes the thread through its queue,
and joins it; a kazoo call in flight is abandoned (waits are sliced, see
:func:`sd.zk.client.await_result`): it does not wait out a backoff or a call.
Watchers already handed to kazoo stay in its tables until they fire and are
then ignored; the client remains the caller's.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from typing import Any, Final

from kitsd.core.errors import BackendError, RegistryUnavailableError
from kitsd.sd.backoff import ZK_WATCH, Backoff
from kitsd.sd.event import Event
from kitsd.sd.instancer import (
    DEFAULT_FIRST_ANSWER_TIMEOUT,
    Broadcaster,
    InstancerHandle,
    SharedWatches,
    check_first_answer_timeout,
)
from kitsd.sd.zk.client import (
    Reconnected,
    Stopped,
    ZKClient,
    attempts_of,
    await_result,
    check_client,
    describe,
    is_no_node,
    summarize_error,
    to_backend_error,
)
from kitsd.sd.zk.view import ChildrenView, check_path, child_path

__all__ = ["ChildrenWatch", "ZKInstancer"]

logger = logging.getLogger(__name__)


_JOIN_TIMEOUT: Final = 0.9
_CALL_TIMEOUT: Final = 10.0

#: Seconds the watch waits for a client it cannot follow (one not built by
#: :func:`sd.zk.connect`) to connect before it publishes an error saying so.
CONNECT_GRACE: Final = 5.0

_WATCHES = SharedWatches()


class _Stop:
    """Queue sentinel: the watch is stopping."""


_STOP: Final = _Stop()

# Notes the kazoo callbacks leave on the queue.
_CHILDREN: Final = "children"
_DATA: Final = "data"
_STATE: Final = "state"
_UNREACHABLE: Final = "UNREACHABLE"  # a _STATE detail: kazoo failed to reach every server


class ChildrenWatch:
    """The thread that keeps one :class:`~sd.instancer.Broadcaster` in step with a node's children.

    Started on construction; :meth:`stop` is idempotent, prompt and joins the
    thread.  Thread-safe.  Users hold a :class:`ZKInstancer`, not this.
    """

    def __init__(
        self, broadcaster: Broadcaster, client: ZKClient, path: str, *,
        call_timeout: float = _CALL_TIMEOUT,
    ) -> None:
        self._broadcaster = broadcaster
        self._client = client
        self._path = path
        self._call_timeout = call_timeout
        self._view = ChildrenView(source=f"ZooKeeper node {path!r}")
        self._queue: queue.SimpleQueue[tuple[str, str] | _Stop] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._reconnected = threading.Event()
        self._lost = False  # kazoo reported a connection loss not yet followed by CONNECTED
        self._lock = threading.Lock()
        self._stopped = False
        self._syncs = 0
        client.add_listener(self._on_state)
        self._thread = threading.Thread(
            target=self._run, name=f"kitsd-zk-watch {path}", daemon=True
        )
        try:
            self._thread.start()
        except BaseException:
            client.remove_listener(self._on_state)
            raise

    @property
    def syncs(self) -> int:
        """How many full or partial syncs completed (for tests and debugging)."""
        return self._syncs

    def stop(self) -> None:
        """Stop watching and end the thread; idempotent, prompt."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stopping.set()
        self._queue.put(_STOP)
        try:
            self._client.remove_listener(self._on_state)
        except Exception as error:  # noqa: BLE001 - the watch is stopping either way
            logger.debug("removing the ZooKeeper state listener failed: %s",
                         summarize_error(error))
        if threading.current_thread() is self._thread:
            return  # stopped from a subscriber callback: the loop exits on its own
        self._thread.join(_JOIN_TIMEOUT)
        if self._thread.is_alive():
            logger.warning("ZooKeeper watch of %r did not stop within %.1fs",
                           self._path, _JOIN_TIMEOUT)

    # -- kazoo's threads: only leave notes ------------------------------------

    def _on_state(self, state: Any) -> None:
        name = str(state)
        if name in {"SUSPENDED", "LOST"}:
            self._lost = True
        elif name == "CONNECTED" and self._lost:
            # connected again after a loss: a call in flight may have gone with the old
            # connection (kazoo does not always fail it), so the sync starts over
            self._lost = False
            self._reconnected.set()
        self._queue.put((_STATE, name))

    def _on_unreachable(self) -> None:
        self._queue.put((_STATE, _UNREACHABLE))

    def _on_children(self, event: Any) -> None:
        self._queue.put((_CHILDREN, ""))

    def _on_data(self, event: Any) -> None:
        path = getattr(event, "path", None) or ""
        name = path.rpartition("/")[2] if path.startswith(self._path + "/") else ""
        # A watch fired with no path is kazoo dropping it on a connection loss.
        self._queue.put((_DATA, name) if name else (_STATE, "WATCH_DROPPED"))

    # -- the thread -----------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff(curve=ZK_WATCH, rng=random.Random())
        delay: float | None = None  # None: wait for a note; else retry after delay
        while not self._stopping.is_set():
            if not self._wait(delay):
                break
            if self._view.in_sync:
                delay = None
                continue
            if not self._await_connection():
                break
            try:
                self._sync()
            except Stopped:
                break
            except Reconnected:  # connected again mid-sync: sync anew on this connection
                self._view.reset()
                delay = None
                continue
            except Exception as error:  # noqa: BLE001 - the watch must outlive any failure
                if self._stopping.is_set():
                    break
                self._view.reset()
                delay = backoff.next_delay()
                self._report(error, delay)
                continue
            backoff.reset()
            delay = None
        logger.debug("ZooKeeper watch of %r stopped", self._path)

    def _connected(self) -> bool:
        return bool(getattr(self._client, "connected", True))

    def _await_connection(self) -> bool:
        """Block until kazoo is connected (``True``) or the watch stops (``False``),
        applying the notes meanwhile.  A call made now would only queue in kazoo (and
        pile up, one per retry), and kazoo reports no error while it keeps failing to
        connect: the watch publishes one when every server failed
        (:class:`~sd.zk.client.ConnectAttempts`), or after :data:`CONNECT_GRACE`
        seconds for a client it cannot follow.  A connection that is only slow is
        waited for (the instancer's ``first_answer_timeout`` bounds the wait for a
        first answer)."""
        if self._connected():
            return True
        attempts = attempts_of(self._client)
        if attempts is not None:
            attempts.add_listener(self._on_unreachable)
        try:
            return self._until_connected(attempts is not None and attempts.failing,
                                         followed=attempts is not None)
        finally:
            if attempts is not None:
                attempts.remove_listener(self._on_unreachable)

    def _until_connected(self, unreachable: bool, *, followed: bool) -> bool:
        deadline = time.monotonic() + CONNECT_GRACE
        reported = False
        while not self._connected():
            late = not followed and time.monotonic() >= deadline
            if not reported and (unreachable or late):
                why = "no server could be reached" if unreachable else \
                    f"not connected within {CONNECT_GRACE:g}s"
                self._broadcaster.publish_error(RegistryUnavailableError(
                    f"ZooKeeper watch of {self._path!r} at {describe(self._client)}: {why}"
                    " (still trying)"))
                reported = True
            # the notes wake us; the poll is a safety net for a missed one
            left = deadline - time.monotonic()
            wait = 0.5 if reported or followed else min(0.5, max(left, 0.0))
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                continue
            if isinstance(item, _Stop):
                return False
            if item == (_STATE, _UNREACHABLE):
                unreachable = True
            self._note(*item)
        return True

    def _wait(self, delay: float | None) -> bool:
        """Apply the notes on the queue to the view, blocking first for one note when the
        view is in sync (or up to ``delay`` seconds after a failure); ``False`` on stop."""
        block = delay is not None or self._view.in_sync
        while True:
            try:
                item = self._queue.get(timeout=delay) if block else self._queue.get_nowait()
            except queue.Empty:
                return True
            if isinstance(item, _Stop):
                return False
            self._note(*item)
            block = False  # drain what else is there without waiting

    def _note(self, kind: str, detail: str) -> None:
        if detail == _UNREACHABLE:
            return  # (for _await_connection only)
        if kind == _CHILDREN:
            self._view.children_changed()
        elif kind == _DATA:
            self._view.data_changed(detail)
        elif detail in {"SUSPENDED", "LOST", "WATCH_DROPPED"}:
            if detail != "WATCH_DROPPED":
                what = "connection lost" if detail == "SUSPENDED" else "session expired"
                self._broadcaster.publish_error(RegistryUnavailableError(
                    f"ZooKeeper watch of {self._path!r} at {describe(self._client)}: {what};"
                    " keeping the last instances until it is back"
                ))
            self._view.reset()
        else:  # CONNECTED: re-read everything with fresh watches
            self._view.reset()

    def _sync(self) -> None:
        self._reconnected.clear()
        view = self._view
        if view.needs_list:
            try:
                names = self._call(self._client.get_children_async(self._path, self._on_children))
            except Exception as error:
                if not is_no_node(error):
                    raise
                # No node yet: watch for its creation (exists() sets a watch either way).
                if self._call(self._client.exists_async(self._path, self._on_children)):
                    view.children_changed()  # created between the two calls: list again
                    return
                view.apply_missing_node()
                names = None
            if names is not None:
                view.apply_children(names)
        # Send every read at once (kazoo pipelines them on the one connection), then
        # collect: a full re-read of N children costs about one round trip, not N.
        pending = [
            (name, self._client.get_async(child_path(self._path, name), self._on_data))
            for name in sorted(view.stale)
        ]
        for name, result in pending:
            try:
                data, _ = self._call(result)
            except Exception as error:
                if not is_no_node(error):
                    raise
                view.apply_data(name, None, exists=False)
            else:
                view.apply_data(name, data)
        self._syncs += 1
        self._broadcaster.publish(Event(view.instances(), info=view.info()))

    def _call(self, result: Any) -> Any:
        return await_result(result, timeout=self._call_timeout, stopping=self._stopping,
                            reconnected=self._reconnected)

    def _report(self, error: Exception, delay: float) -> None:
        what = f"ZooKeeper watch of {self._path!r} at {describe(self._client)}"
        mapped = to_backend_error(error, what)
        expected = isinstance(error, BackendError | OSError) or \
            type(error).__module__.startswith("kazoo")
        if expected:
            logger.warning("%s; retrying in %.2fs", mapped, delay)
        else:
            logger.error("%s failed unexpectedly; retrying in %.2fs", what, delay,
                         exc_info=error)
        self._broadcaster.publish_error(mapped)


class ZKInstancer(InstancerHandle):
    """The instances stored as the data of the children of ``path`` (go-kit's ``zk.Instancer``).

    Each child node's data is one ``host:port`` instance string (as
    :class:`ZKRegistrar` and go-kit's ``sd/zk`` registrar write them).  The
    children and each child's data are watched; after a connection loss or a
    session expiry everything is re-read with fresh watches, so no change is
    lost.  While ZooKeeper is unreachable subscribers get an
    :class:`~sd.event.Event` whose ``error`` is a
    :class:`~kitsd.core.errors.RegistryUnavailableError` (or
    :class:`~kitsd.core.errors.PermissionDeniedError`) with the last instances kept.
    A missing node is an empty set (its creation is watched); children whose
    data is not an instance are skipped with a warning.

    ``client`` is a ``kazoo.client.KazooClient`` (started or starting; it stays
    the caller's).  Every ``ZKInstancer`` for the same client object and path
    shares one watch; ``stop()`` releases this handle's share and is prompt.
    ``first_answer_timeout`` (seconds, default 5; 0 does not wait): how long
    the constructor waits for the first read of the children (as go-kit's),
    so subscribers start from what ZooKeeper holds or an error, never from an
    empty set nobody read.
    Raises ``TypeError`` for a client that is not a ``KazooClient`` and
    :class:`~kitsd.core.errors.MisuseError` (a ``ValueError``) for a path that is not an
    absolute node path.  Thread-safe.
    """

    def __init__(
        self, client: ZKClient, path: str, *,
        first_answer_timeout: float = DEFAULT_FIRST_ANSWER_TIMEOUT,
    ) -> None:
        normalized = check_path(path)
        first_wait = check_first_answer_timeout(first_answer_timeout)
        check_client(client)
        self._client = client
        self._path = normalized
        broadcaster, _, release = _WATCHES.acquire(
            normalized, lambda broadcaster: ChildrenWatch(broadcaster, client, normalized),
            owner=client, kind="zk", service=normalized, pending=True,  # kitsd.observe labels
        )
        super().__init__(broadcaster, release, first_answer_timeout=first_wait,
                         source=f"ZooKeeper node {normalized!r} at {describe(client)}")

    @property
    def path(self) -> str:
        """The watched node's path."""
        return self._path

    @property
    def client(self) -> ZKClient:
        """The kazoo client the watch uses."""
        return self._client

    def __repr__(self) -> str:
        return f"ZKInstancer(path={self._path!r}, hosts={describe(self._client)!r})"


def _running_watches() -> int:
    """How many shared watches are running (for tests)."""
    return len(_WATCHES.keys())
