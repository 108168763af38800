"""The one EndpointSlice watch, run by both instancers.

Theory of operation
-------------------
:func:`run_watch` is a coroutine: it opens an :class:`~sd.k8s.api.ApiClient`,
then loops::

    view = SliceView(port, address_types)        (sd.k8s.slices: conditions, merging)
    lw   = ListWatch(selector)                   (sd.k8s.list_watch: RVs, 410, paging)
    loop:
        if lw.needs_list:  list every page; view.replace(slices); publish
        watch from lw.resource_version (bookmarks on, timeoutSeconds 5-10 min):
            the stream opened: publish (this clears an error event -- after an error,
                only once a first event arrived or the watch stayed quiet for 1 s: a
                server may accept a watch and answer 410 as its first event)
            per batch of events that arrived together:
                lw.observe(event) -> view.upsert / view.delete; publish once
            the stream ended (its timeout, or silent for liveness_timeout): watch again
        410 Gone:           lw.gone() -> list again (after a backoff if nothing was applied
                            since the last list: no list/watch loop)
        any other failure:  publish an error event keeping the last instances, back off
                            (sd.backoff.K8S_WATCH, jittered), resume from the same RV

"Publish" hands the broadcaster only what changed (:meth:`SliceView.changes`
and :meth:`Broadcaster.apply`): O(changed), not O(all endpoints).  When the
slices make the port ambiguous or unknown, the event carries a
:class:`~kitsd.core.errors.MisuseError` saying so.

``EndpointSliceInstancer`` runs this coroutine on a private loop in its own
thread (:class:`sd._loop_thread.LoopThread`), ``AsyncEndpointSliceInstancer`` as
a task of your loop: one algorithm, two thin drivers.  Cancelling the task
(``stop()``) abandons a request or a backoff sleep at once and closes the
client's connections.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx

from kitsd.core.errors import BackendError, MisuseError, RegistryUnavailableError
from kitsd.sd.backoff import K8S_WATCH, Backoff
from kitsd.sd.event import Event
from kitsd.sd.instancer import Broadcaster
from kitsd.sd.k8s.api import ApiClient
from kitsd.sd.k8s.config import ClusterConfig
from kitsd.sd.k8s.list_watch import (
    MIN_WATCH_TIMEOUT,
    RESOURCE,
    SERVICE_LABEL,
    Expired,
    ListWatch,
    WatchEvent,
    slices_path,
    watch_timeout,
)
from kitsd.sd.k8s.slices import PortChoice, SliceView

__all__ = ["DEFAULT_LIVENESS_TIMEOUT", "WATCH_GRACE", "SliceQuery", "WatchStats", "run_watch"]

logger = logging.getLogger(__name__)

DEFAULT_LIVENESS_TIMEOUT = 120.0
"""Seconds a watch may stay silent before it is opened again (the API server sends a
bookmark about every minute, so a healthy quiet watch is not reopened for silence).
TCP keepalives notice a vanished peer sooner (about 30 s)."""

_PRODUCTIVE = 1.0  # seconds a watch must last (or deliver) to count as working
_CONFIRM = 1.0  # seconds a resumed watch must stay quiet before an error event is cleared
#: Seconds past its ``timeoutSeconds`` a watch stream is held before kitsd ends it itself
#: (as client-go's typed clients time the request out): a server that never ends a watch
#: -- or trickles its headers -- cannot keep one open for ever.
WATCH_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class SliceQuery:
    """What one watch reads: checked by the instancers before anything starts."""

    namespace: str
    service: str
    port: PortChoice
    address_types: tuple[str, ...]
    liveness_timeout: float | None = DEFAULT_LIVENESS_TIMEOUT
    watch_timeout: float = MIN_WATCH_TIMEOUT

    @property
    def name(self) -> str:
        """``namespace/service``."""
        return f"{self.namespace}/{self.service}"


@dataclass
class WatchStats:
    """Counters of one watch (for tests, debugging and metrics); written by the watch only."""

    lists: int = 0
    """Full lists made (the first one, and one per 410)."""
    relists: int = 0
    """Lists forced by a ``410 Gone``."""
    watches: int = 0
    """Watch streams opened."""
    bookmarks: int = 0
    """Bookmarks received."""
    errors: int = 0
    """Error events published."""


class _Publisher:
    """Hands the view's changes to the broadcaster (see the module docstring)."""

    def __init__(self, view: SliceView, broadcaster: Broadcaster) -> None:
        self._view = view
        self._broadcaster = broadcaster

    def __call__(self) -> None:
        view, broadcaster = self._view, self._broadcaster
        change = view.changes()
        problem = view.problem
        if problem is not None:
            broadcaster.publish(Event(view.instances(), MisuseError(problem), info=view.info()))
        elif change or broadcaster.state.error is not None or not broadcaster.answered:
            # (a first list of nothing is news to a pending broadcaster: its first answer)
            broadcaster.apply(change.added, change.removed, info=change.info)


async def run_watch(
    config: ClusterConfig,
    query: SliceQuery,
    broadcaster: Broadcaster,
    answered: Callable[[], object],
    *,
    stats: WatchStats | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Keep ``broadcaster`` in step with the EndpointSlices of ``query`` until cancelled.

    ``answered()`` is called after the first list (or the first error) is published,
    and after each later one.  ``transport`` replaces the real connection (tests).
    Never raises but ``CancelledError``.
    """
    stats = stats if stats is not None else WatchStats()
    client = ApiClient(config, transport=transport)
    view = SliceView(query.port, address_types=query.address_types,
                     source=f"service {query.name}")
    publish = _Publisher(view, broadcaster)
    lw = ListWatch(f"{SERVICE_LABEL}={query.service}")
    backoff = Backoff(curve=K8S_WATCH, rng=random.Random())
    rng = random.Random()
    path = slices_path(query.namespace)
    what = f"{RESOURCE} in namespace {query.namespace!r}"
    loop = asyncio.get_running_loop()
    try:
        while True:
            delay = 0.0
            try:
                if lw.needs_list:
                    slices = None
                    while slices is None:
                        continued = "continue" in lw.list_params()
                        try:
                            page = await client.get_json(path, lw.list_params(), verb="list",
                                                         what=what)
                        except Expired:
                            if not continued:
                                raise
                            lw.page_expired()  # the continue token expired: start over
                            continue
                        slices = lw.page(page)
                    view.replace(slices)
                    stats.lists += 1
                    publish()
                    answered()
                seconds = watch_timeout(rng.random(), query.watch_timeout)
                params = lw.watch_params(seconds)
                started = loop.time()
                delivered = False
                try:
                    async with asyncio.timeout(seconds + WATCH_GRACE), client.watch(
                            path, params, read_timeout=query.liveness_timeout,
                            what=what) as batches:
                        stats.watches += 1
                        delivered = await _consume(
                            batches, lw, view, publish, stats,
                            confirm=broadcaster.state.error is not None)
                except TimeoutError:  # held past timeoutSeconds: watch again from our RV
                    logger.debug("EndpointSlice watch of %s held past its %ds; reopening",
                                 query.name, seconds)
                if delivered or loop.time() - started >= _PRODUCTIVE:
                    backoff.reset()
                else:  # ended at once with nothing: do not turn that into a hot loop
                    delay = backoff.next_delay()
            except Expired as expired:
                wait = lw.gone()
                stats.relists = lw.relists
                logger.info("EndpointSlices of %s: %s (410 Gone); listing again",
                            query.name, expired)
                if wait:
                    delay = backoff.next_delay()
            except (BackendError, ValueError) as failure:
                error = failure if isinstance(failure, BackendError) else \
                    RegistryUnavailableError(f"kube-apiserver at {config.server}: {failure}")
                if error is not failure:
                    error.__cause__ = failure
                delay = backoff.next_delay()
                _report(query, error, delay, broadcaster, stats)
                answered()
            except Exception as failure:
                error = RegistryUnavailableError(
                    f"watching EndpointSlices of {query.name} failed unexpectedly: "
                    f"{type(failure).__name__}")
                error.__cause__ = failure
                delay = backoff.next_delay()
                logger.exception("EndpointSlice watch of %s failed unexpectedly", query.name)
                _report(query, error, delay, broadcaster, stats)
                answered()
            await asyncio.sleep(delay)  # always yield: stop() arrives through the loop
    finally:
        await client.aclose()


async def _consume(batches: AsyncIterator[list[WatchEvent]], lw: ListWatch, view: SliceView,
                   publish: Callable[[], None], stats: WatchStats, *, confirm: bool) -> bool:
    """Apply a watch stream's batches until it ends; returns whether any arrived.

    ``confirm``: an error event is out.  A watch the server accepted may still answer
    410 as its first event (the RV is too old for its watch cache), so the error is
    cleared only once a first batch arrived or :data:`_CONFIRM` seconds passed without
    one -- subscribers never see a stale state announced as current.
    """
    iterator = aiter(batches)
    delivered = False
    first: asyncio.Future[list[WatchEvent]] | None = None
    if confirm:
        first = asyncio.ensure_future(anext(iterator))
        try:
            done, _ = await asyncio.wait({first}, timeout=_CONFIRM)
            if not done:
                publish()  # quiet but accepted: the state is current again
            batch: list[WatchEvent] | None
            try:
                batch = await first
            except StopAsyncIteration:
                batch = None
        finally:
            if not first.done():  # cancelled while waiting (stop()): let it end here
                first.cancel()
                await asyncio.wait({first})
        if batch is None:
            return delivered
        delivered = True
        _apply(batch, lw, view)
        stats.bookmarks = lw.bookmarks
        publish()
    else:
        publish()
    async for batch in iterator:
        delivered = True
        _apply(batch, lw, view)
        stats.bookmarks = lw.bookmarks
        publish()
    return delivered


def _apply(batch: list[WatchEvent], lw: ListWatch, view: SliceView) -> None:
    for event in batch:
        if lw.observe(event):
            if event.kind == "DELETED":
                view.delete(event.object)
            else:
                view.upsert(event.object)


def _report(query: SliceQuery, error: BackendError, delay: float, broadcaster: Broadcaster,
            stats: WatchStats) -> None:
    stats.errors += 1
    logger.warning("EndpointSlice watch of %s: %s; retrying in %.2fs", query.name, error, delay)
    broadcaster.publish_error(error)
