"""``EtcdInstancer``: the instances stored as values under an etcd key prefix.

Theory of operation
-------------------
One :class:`PrefixWatch` thread per (client, prefix) -- shared by every
:class:`EtcdInstancer` handle through :class:`sd.instancer.SharedWatches` --
runs the pure :class:`sd.etcd.revision.PrefixView` against the client
(:mod:`sd.etcd.client`'s protocol; vendor clients are adapted by
:mod:`sd.etcd.adapter`):

1. read the whole prefix in pages, all at the revision ``R`` of the first page
   (:class:`sd.etcd.paging.PagedRead`: a prefix larger than the client accepts
   is read in smaller pages, and a single value too large to receive is
   skipped with a warning); when resuming, a one-key read instead checks that
   etcd answers and still accepts our token and permissions;
2. watch the prefix from ``R + 1`` and apply each watch response to the view,
   publishing a new snapshot whenever the instances change;
3. liveness: when the watch has been silent for ``liveness_timeout / 2``
   seconds, a one-key read must answer within ``liveness_timeout / 2``; if it
   does not, the connection is taken as broken (a partition, a black hole)
   and handled as in 4 -- so a broken connection is reported within about
   ``liveness_timeout`` seconds whatever the client's gRPC keepalive settings;
4. when the watch breaks (the member died, the stream ended, a call failed),
   publish an :class:`~sd.event.Event` carrying a
   :class:`~kitsd.core.errors.RegistryUnavailableError` (the last instances are kept),
   wait a jittered, capped backoff (:data:`sd.backoff.ETCD_WATCH`, 50 ms
   doubling to 5 s) -- ended early when the client's connection to etcd comes
   back (``Reconnecting.wait_connected``) -- let the client recover
   (``Reconnecting.recover``: clear vendor failure marks, log in again) and
   watch again from the last applied revision + 1: nothing lost, nothing
   applied twice;
5. when etcd says our revision was compacted away, go back to 1 at once.

An early wake-up is allowed only when the attempt before it was not itself
woken early, so a server that accepts connections and fails every call is
retried at most twice per backoff step: no hot loop while etcd is down.

``stop()`` wakes the thread through its queue or its wake event, cancels the
watch and joins the thread: it does not wait out a backoff.

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
from typing import Final

from kitsd.core import validate
from kitsd.core.errors import MisuseError, RegistryUnavailableError
from kitsd.sd.backoff import ETCD_WATCH, Backoff
from kitsd.sd.etcd.adapter import adapt
from kitsd.sd.etcd.client import Compacted, EtcdReader, Reconnecting, WatchBatch
from kitsd.sd.etcd.errors import (
    compacted_revision,
    is_deadline_exceeded,
    is_expected_failure,
    is_too_large,
    summarize_error,
    to_backend_error,
)
from kitsd.sd.etcd.paging import DEFAULT_PAGE_SIZE, PagedRead
from kitsd.sd.etcd.revision import PrefixView, quote_bytes
from kitsd.sd.event import Event
from kitsd.sd.instancer import (
    DEFAULT_FIRST_ANSWER_TIMEOUT,
    Broadcaster,
    InstancerHandle,
    SharedWatches,
    check_first_answer_timeout,
)

__all__ = ["DEFAULT_LIVENESS_TIMEOUT", "EtcdInstancer", "PrefixWatch", "WatchEndedError"]

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT: Final = 0.9  # stop() stays under a second even if a client call is stuck

#: Seconds within which a silently broken connection is reported (see step 3).
DEFAULT_LIVENESS_TIMEOUT: Final = 5.0

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

    def __init__(
        self,
        broadcaster: Broadcaster,
        client: EtcdReader,
        prefix: str,
        *,
        liveness_timeout: float | None = DEFAULT_LIVENESS_TIMEOUT,
        page_size: int = DEFAULT_PAGE_SIZE,
        name: str = "",
    ) -> None:
        self._broadcaster = broadcaster
        self._client = client
        self._recovery = client if isinstance(client, Reconnecting) else None
        self._prefix = prefix
        self._key = prefix.encode("utf-8")
        self._name = name or str(client)
        self._liveness = liveness_timeout
        self._page_size = page_size
        self._view = PrefixView(source=f"etcd prefix {prefix!r}")
        self._queue: queue.Queue[tuple[int, object] | _Stop] = queue.Queue()
        self._stopping = threading.Event()
        self._wake = threading.Event()  # set by stop() and by a connection coming back
        self._lock = threading.Lock()
        self._stopped = False
        self._watching = False  # whether the current attempt got a watch running
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
        self._wake.set()
        self._queue.put(_STOP)
        if threading.current_thread() is self._thread:
            return  # stopped from a subscriber callback: the loop exits on its own
        self._thread.join(_JOIN_TIMEOUT)
        if self._thread.is_alive():
            logger.warning(
                "etcd watch of %r at %s is stuck in a client call; it will exit when the call"
                " returns (give the client a timeout, as sd.etcd.connect does)",
                self._prefix,
                self._name,
            )

    # -- the thread -----------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff(curve=ETCD_WATCH, rng=random.Random())
        generation = 0
        error: Exception | None = None
        woken_early = False
        while not self._stopping.is_set():
            generation += 1
            self._watching = False
            try:
                if self._recovery is not None:
                    self._recovery.recover(error)
                self._attempt(generation, backoff)
                error = None
            except Exception as failure:  # noqa: BLE001 - the watch must outlive any failure
                if self._stopping.is_set():
                    break
                compact = compacted_revision(failure)
                if compact is not None:
                    self._view.compacted(compact)
                    error = None
                    continue
                delay = backoff.next_delay()
                self._report(failure, delay)
                error = failure
                # An early wake-up only if the last one led to a working watch (or there was
                # none): a server that accepts connections but fails calls gets no hot loop.
                woken_early = self._wait(delay, allow_early=self._watching or not woken_early)
        logger.debug("etcd watch of %r stopped", self._prefix)

    def _wait(self, delay: float, *, allow_early: bool) -> bool:
        """Wait ``delay`` s (or until stopped); returns whether the connection ended it early."""
        self._wake.clear()
        if self._stopping.is_set():
            return False
        if allow_early and self._recovery is not None:
            try:
                self._recovery.wait_connected(delay, self._wake)
            except Exception:
                logger.debug("waiting for the etcd connection failed", exc_info=True)
                self._wake.wait(delay)
        else:
            self._wake.wait(delay)
        return self._wake.is_set() and not self._stopping.is_set()

    def _attempt(self, generation: int, backoff: Backoff) -> None:
        """Read if needed, then watch: raises when the watch breaks, returns on compaction/stop."""
        if self._view.needs_read:
            self._read()
        else:
            # Resuming: no read is needed, but a one-key read proves that etcd answers and
            # still accepts our token and permissions -- a client reports a watch etcd
            # refused at creation as a live watch that never delivers anything.
            self._probe()
        if self._stopping.is_set():
            return

        def deliver(item: object) -> None:
            self._queue.put((generation, item))

        watch_id = self._client.watch(self._key, self._view.watch_from, deliver)
        try:
            logger.debug("etcd watch of %r at %s from revision %d",
                         self._prefix, self._name, self._view.watch_from)
            self._broadcaster.publish(Event(self._view.instances(), info=self._view.info()))
            backoff.reset()
            self._watching = True
            self._consume(generation)
        finally:
            self._cancel(watch_id)

    def _read(self) -> None:
        """Read the whole prefix in pages at one revision and load it into the view."""
        read = PagedRead(page_size=self._page_size)
        while (request := read.next_request()) is not None:
            if self._stopping.is_set():
                return
            try:
                page = self._client.read_prefix(
                    self._key, after=request.after, revision=request.revision,
                    limit=request.limit, keys_only=request.keys_only)
            except Exception as error:
                if not is_too_large(error):
                    raise
                read.too_large()
                continue
            read.page(page.kvs, page.revision, page.more)
        for key in read.skipped:
            logger.warning(
                "skipping etcd key %s under %r: its value is larger than the client accepts"
                " (gRPC RESOURCE_EXHAUSTED)", quote_bytes(key), self._prefix)
        self._view.apply_read(read.kvs, read.revision)

    def _probe(self) -> None:
        """A one-key read bounded by half the liveness timeout; raises if etcd does not answer."""
        timeout = None if self._liveness is None else self._liveness / 2
        try:
            self._client.read_prefix(self._key, limit=1, keys_only=True, timeout=timeout)
        except Exception as error:
            if timeout is None or not is_deadline_exceeded(error):
                raise
            raise RegistryUnavailableError(
                f"etcd at {self._name} did not answer a liveness read within {timeout:g}s"
            ) from error

    def _consume(self, generation: int) -> None:
        quiet = None if self._liveness is None else self._liveness / 2
        while True:
            try:
                item = self._queue.get(timeout=quiet)
            except queue.Empty:
                self._probe()  # the watch was silent: make sure the connection still works
                continue
            if isinstance(item, _Stop):
                return
            item_generation, payload = item
            if item_generation != generation:
                continue  # a late item from a watch we already abandoned
            if isinstance(payload, Compacted):
                self._view.compacted(payload.revision)
                return
            if payload is None:
                raise WatchEndedError(f"the etcd client ended the watch of {self._prefix!r}")
            if isinstance(payload, BaseException):
                raise payload
            if isinstance(payload, WatchBatch) and self._view.apply_events(payload.events):
                self._broadcaster.publish(Event(self._view.instances(), info=self._view.info()))

    def _cancel(self, watch_id: object) -> None:
        try:
            self._client.cancel(watch_id)
        except Exception as error:  # noqa: BLE001 - the watch is gone either way
            logger.debug("cancelling etcd watch %r failed: %s", watch_id, summarize_error(error))

    def _report(self, error: Exception, delay: float) -> None:
        what = f"etcd watch of {self._prefix!r} at {self._name}"
        mapped = to_backend_error(error, what)
        if mapped is not error and mapped.__cause__ is None:
            mapped.__cause__ = error
        if not isinstance(error, WatchEndedError) and not is_expected_failure(error):
            logger.error("%s failed unexpectedly; retrying in %.2fs", what, delay, exc_info=error)
        else:
            logger.warning("%s (%s); retrying in %.2fs", mapped, summarize_error(error), delay)
        self._broadcaster.publish_error(mapped)


class EtcdInstancer(InstancerHandle):
    """The instances stored as values under ``prefix`` in etcd (go-kit's ``etcdv3.Instancer``).

    Reads once, then watches from the next revision; a broken watch is resumed
    from the last applied revision + 1 (nothing lost or repeated), a compacted
    one triggers a re-read, and while etcd is unreachable subscribers get an
    :class:`~sd.event.Event` whose ``error`` is a
    :class:`~kitsd.core.errors.RegistryUnavailableError` (or
    :class:`~kitsd.core.errors.PermissionDeniedError`) with the last instances kept.
    Values are plain ``host:port`` or the JSON form
    ``{"address": "host:port", "weight": 3, "tags": [...], "meta": {...}}``, whose
    metadata subscribers get as ``event.info`` (an :class:`~sd.InstanceInfo` per
    instance); values that are neither are skipped with a (truncated) warning.

    ``prefix`` is a plain key prefix, as etcd understands it: end it with
    ``/`` (``/services/api/``), or ``/services/api`` also matches
    ``/services/api-v2/...``.

    ``client`` is what :func:`~sd.etcd.connect` returns, your own ``pyetcd`` or
    ``etcd3`` client, or any :class:`~sd.etcd.client.EtcdReader`.
    ``liveness_timeout`` (seconds, default 5; ``None`` disables) bounds how long
    a silently broken connection (a partition) goes unreported: after half of
    it without watch traffic, a one-key read must answer within the other
    half.  ``page_size`` is how many keys one read request asks for.
    ``first_answer_timeout`` (seconds, default 5; 0 does not wait): how long
    the constructor waits for the first read (as go-kit's), so subscribers start
    from the prefix's real content or an error, never from an empty set nobody read.

    Every ``EtcdInstancer`` for the same client object and prefix shares one
    watch; ``stop()`` releases this handle's share (the watch stops with the
    last handle) and is prompt.  The client stays the caller's (it is not
    closed).  Raises :class:`~kitsd.core.errors.MisuseError` (a ``ValueError``) for an
    empty prefix or a bad ``liveness_timeout``/``page_size`` and ``TypeError``
    for an object that is not an etcd client; nothing is started then.
    Thread-safe.
    """

    def __init__(
        self,
        client: object,
        prefix: str,
        *,
        liveness_timeout: float | None = DEFAULT_LIVENESS_TIMEOUT,
        page_size: int = DEFAULT_PAGE_SIZE,
        first_answer_timeout: float = DEFAULT_FIRST_ANSWER_TIMEOUT,
    ) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise MisuseError(f"etcd prefix must be a non-empty string, not {prefix!r}")
        validate.optional_seconds("liveness_timeout", liveness_timeout)
        validate.integer("page_size", page_size, minimum=1)
        first_wait = check_first_answer_timeout(first_answer_timeout)
        adapted = adapt(client)  # TypeError for an object that is not an etcd client
        if not isinstance(adapted, EtcdReader):
            raise TypeError(f"{type(client).__name__} cannot read and watch etcd prefixes")
        self._client = client
        self._adapted = adapted
        self._prefix = prefix
        name = str(adapted)
        broadcaster, _, release = _WATCHES.acquire(
            (prefix, liveness_timeout, page_size),
            lambda broadcaster: PrefixWatch(
                broadcaster, adapted, prefix, liveness_timeout=liveness_timeout,
                page_size=page_size, name=name),
            owner=client, kind="etcd", service=prefix, pending=True,  # kitsd.observe labels
        )
        super().__init__(broadcaster, release, first_answer_timeout=first_wait,
                         source=f"etcd prefix {prefix!r} at {name}")

    @property
    def prefix(self) -> str:
        """The watched key prefix."""
        return self._prefix

    @property
    def client(self) -> object:
        """The etcd client given to the constructor."""
        return self._client

    def __repr__(self) -> str:
        return f"EtcdInstancer(prefix={self._prefix!r}, endpoints={str(self._adapted)!r})"


def _running_watches() -> int:
    """How many shared watches are running (for tests)."""
    return len(_WATCHES.keys())

