"""``EtcdInstancer``: the instances stored as values under an etcd key prefix.

Theory of operation
-------------------
One :class:`PrefixWatch` thread per (client, prefix) -- shared by every
:class:`EtcdInstancer` handle through :class:`sd.instancer.SharedWatches` --
runs the pure :class:`sd.etcd.revision.PrefixView` against the client:

1. read the whole prefix (``get_prefix_response``), remembering the header
   revision ``R`` (when resuming, a one-key read instead checks that our token
   and permissions still hold: the clients report a watch etcd refused at
   creation as a live one that never delivers);
2. watch the prefix from ``R + 1`` and apply each watch response to the view,
   publishing a new snapshot whenever the instances change;
3. when the watch breaks (the member died, the stream ended, a call failed),
   publish an :class:`~sd.event.Event` carrying a
   :class:`~sd.errors.RegistryUnavailableError` (the last instances are kept),
   wait a jittered, capped backoff (:class:`sd.backoff.Backoff`, 50 ms doubling
   to 5 s), clear the client's "failed endpoint" marks
   (:func:`sd.etcd.client.revive_endpoints`) and watch again from the last
   applied revision + 1: nothing lost, nothing applied twice;
4. when etcd says our revision was compacted away, go back to 1 at once.

Bad values are skipped by the view with a warning.  ``stop()`` wakes the thread
through its queue or its backoff :class:`threading.Event`, cancels the watch
and joins the thread: it does not wait out a backoff.

The watch's callbacks arrive on the client's own watch thread; they only put
``(generation, item)`` on this watch's queue, so all decisions happen on the
:class:`PrefixWatch` thread, and leftovers of an abandoned watch (an older
generation) are ignored.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from typing import Any, Final

from sd.backoff import ETCD_WATCH, Backoff
from sd.errors import BackendError, MisuseError, PermissionDeniedError
from sd.etcd.client import (
    EtcdClient,
    compacted_revision,
    current_endpoint,
    describe,
    is_token_error,
    mark_failed,
    probe_prefix,
    read_prefix,
    reauthenticate,
    revive_endpoints,
    summarize_error,
    to_backend_error,
    translate_response,
    watch_prefix,
)
from sd.etcd.revision import PrefixView
from sd.event import Event
from sd.instancer import Broadcaster, InstancerHandle, SharedWatches

__all__ = ["EtcdInstancer", "PrefixWatch", "WatchEndedError"]

logger = logging.getLogger(f"kitsd.{__name__}")

_JOIN_TIMEOUT: Final = 0.9  # stop() stays under a second even if a client call is stuck

_WATCHES = SharedWatches()


class _Stop:
    """Queue sentinel: the watch is stopping."""


_STOP: Final = _Stop()


class WatchEndedError(Exception):
    """The client ended the watch stream without saying why (e.g. it was closed)."""


class PrefixWatch:
    """The thread that keeps one :class:`~sd.instancer.Broadcaster` in step with an etcd prefix.

    Started on construction; :meth:`stop` is idempotent, prompt and joins the
    thread.  Thread-safe.  Users hold an :class:`EtcdInstancer`, not this.
    """

    def __init__(self, broadcaster: Broadcaster, client: EtcdClient, prefix: str) -> None:
        self._broadcaster = broadcaster
        self._client = client
        self._prefix = prefix
        self._view = PrefixView(source=f"etcd prefix {prefix!r}")
        self._queue: queue.Queue[tuple[int, object] | _Stop] = queue.Queue()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._stopped = False
        self._reauthenticate = False
        self._thread = threading.Thread(
            target=self._run, name=f"kitsd-etcd-watch {prefix}", daemon=True
        )
        self._thread.start()

    @property
    def revision(self) -> int:
        """The highest etcd revision applied so far (for tests and debugging)."""
        return self._view.revision

    @property
    def compactions(self) -> int:
        """How many times a compaction forced a full re-read."""
        return self._view.compactions

    def stop(self) -> None:
        """Cancel the watch and end the thread; idempotent, does not wait out a backoff."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stopping.set()
        self._queue.put(_STOP)
        if threading.current_thread() is self._thread:
            return  # stopped from a subscriber callback: the loop exits on its own
        self._thread.join(_JOIN_TIMEOUT)
        if self._thread.is_alive():
            logger.warning(
                "etcd watch of %r at %s is stuck in a client call; it will exit when the call"
                " returns (give the client a timeout, as sd.etcd.connect does)",
                self._prefix,
                describe(self._client),
            )

    # -- the thread -----------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff(curve=ETCD_WATCH, rng=random.Random())
        generation = 0
        while not self._stopping.is_set():
            generation += 1
            try:
                self._attempt(generation, backoff)
            except Exception as error:  # noqa: BLE001 - the watch must outlive any failure
                if self._stopping.is_set():
                    break
                compact = compacted_revision(error)
                if compact is not None:
                    self._view.compacted(compact)
                    continue
                delay = backoff.next_delay()
                self._report(error, delay)
                if self._stopping.wait(delay):
                    break
        logger.debug("etcd watch of %r stopped", self._prefix)

    def _attempt(self, generation: int, backoff: Backoff) -> None:
        """Read if needed, then watch: raises when the watch breaks, returns on compaction/stop."""
        revive_endpoints(self._client)
        if self._reauthenticate:
            self._reauthenticate = False
            reauthenticate(self._client)
        if self._view.needs_read:
            kvs, revision = read_prefix(self._client, self._prefix)
            self._view.apply_read(kvs, revision)
        else:
            # Resuming: no read is needed, but a one-key read proves our token and
            # permissions first -- the clients report a watch that etcd refused at
            # creation as a live watch that never delivers anything.
            probe_prefix(self._client, self._prefix)
        if self._stopping.is_set():
            return

        def deliver(item: object) -> None:
            self._queue.put((generation, item))

        endpoint = current_endpoint(self._client)
        watch_id = watch_prefix(self._client, self._prefix, self._view.watch_from, deliver)
        if isinstance(watch_id, int) and watch_id < 0:
            self._reauthenticate = True
            raise PermissionDeniedError(
                f"etcd refused the watch of {self._prefix!r} at {describe(self._client)}"
                " (permission denied or an invalid auth token)"
            )
        try:
            logger.debug(
                "etcd watch of %r at %s from revision %d",
                self._prefix, endpoint, self._view.watch_from,
            )
            self._broadcaster.publish(Event(self._view.instances()))
            backoff.reset()
            self._consume(generation, endpoint)
        finally:
            self._cancel(watch_id)

    def _consume(self, generation: int, endpoint: str | None) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, _Stop):
                return
            item_generation, payload = item
            if item_generation != generation:
                continue  # a late item from a watch we already abandoned
            compact = compacted_revision(payload)
            if compact is not None:
                self._view.compacted(compact)
                return
            if payload is None:
                raise WatchEndedError(f"the etcd client ended the watch of {self._prefix!r}")
            if isinstance(payload, BaseException):
                mark_failed(self._client, endpoint, payload)
                raise payload
            if self._view.apply_events(translate_response(payload)):
                self._broadcaster.publish(Event(self._view.instances()))

    def _cancel(self, watch_id: Any) -> None:
        try:
            self._client.cancel_watch(watch_id)
        except Exception as error:  # noqa: BLE001 - the watch is gone either way
            logger.debug("cancelling etcd watch %r failed: %s", watch_id, summarize_error(error))

    def _report(self, error: Exception, delay: float) -> None:
        what = f"etcd watch of {self._prefix!r} at {describe(self._client)}"
        mapped = to_backend_error(error, what)
        if mapped is not error and mapped.__cause__ is None:
            mapped.__cause__ = error
        if is_token_error(error):
            self._reauthenticate = True
        if not isinstance(error, BackendError | WatchEndedError) and not _is_vendor(error):
            logger.error("%s failed unexpectedly; retrying in %.2fs", what, delay, exc_info=error)
        else:
            logger.warning("%s (%s); retrying in %.2fs", mapped, summarize_error(error), delay)
        self._broadcaster.publish_error(mapped)


def _is_vendor(error: BaseException) -> bool:
    """Whether ``error`` is an expected registry failure (logged briefly, not with a traceback)."""
    module = type(error).__module__
    return (
        module.split(".")[0] in {"pyetcd", "etcd3", "grpc"}
        or isinstance(error, OSError)
        or (isinstance(error, ValueError) and "failed node" in str(error))
    )


class EtcdInstancer(InstancerHandle):
    """The instances stored as values under ``prefix`` in etcd (go-kit's ``etcdv3.Instancer``).

    Reads once, then watches from the next revision; a broken watch is resumed
    from the last applied revision + 1 (nothing lost or repeated), a compacted
    one triggers a re-read, and while etcd is unreachable subscribers get an
    :class:`~sd.event.Event` whose ``error`` is a
    :class:`~sd.errors.RegistryUnavailableError` (or
    :class:`~sd.errors.PermissionDeniedError`) with the last instances kept.
    Values that are not instances are skipped with a warning.

    ``prefix`` is a plain key prefix, as etcd understands it: end it with
    ``/`` (``/services/api/``), or ``/services/api`` also matches
    ``/services/api-v2/...``.

    Every ``EtcdInstancer`` for the same client object and prefix shares one
    watch; ``stop()`` releases this handle's share (the watch stops with the
    last handle) and is prompt.  The client stays the caller's (it is not
    closed).  Raises :class:`~sd.errors.MisuseError` (a ``ValueError``) for an
    empty prefix and ``TypeError`` for an object that is not an etcd client.
    Thread-safe.
    """

    def __init__(self, client: EtcdClient, prefix: str) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise MisuseError(f"etcd prefix must be a non-empty string, not {prefix!r}")
        missing = [
            name
            for name in ("get_prefix_response", "add_watch_prefix_callback", "cancel_watch")
            if not callable(getattr(client, name, None))
        ]
        if missing:
            raise TypeError(f"{type(client).__name__} is not an etcd client (no {missing})")
        self._client = client
        self._prefix = prefix
        broadcaster, _, release = _WATCHES.acquire(
            (id(client), prefix),
            lambda broadcaster: PrefixWatch(broadcaster, client, prefix),
        )
        super().__init__(broadcaster, release)

    @property
    def prefix(self) -> str:
        """The watched key prefix."""
        return self._prefix

    @property
    def client(self) -> EtcdClient:
        """The etcd client the watch uses."""
        return self._client

    def __repr__(self) -> str:
        return f"EtcdInstancer(prefix={self._prefix!r}, endpoints={describe(self._client)!r})"


def _running_watches() -> int:
    """How many shared watches are running (for tests)."""
    return len(_WATCHES.keys())

