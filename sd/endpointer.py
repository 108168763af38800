"""The :class:`Endpointer`: one live endpoint per instance (go-kit's ``sd.Endpointer``).

Theory of operation
-------------------
Changes arrive on the instancer's thread and go through the pure
:class:`~sd.endpoint_cache.EndpointCache` under the Endpointer's lock; the cache
hands back what to close, and the Endpointer publishes the cache's new
:class:`~sd.endpoint_cache.View` by replacing one reference.  Picks read that
reference once and take no lock: a pick never waits for a change, however large
the set.  Only a pick that finds an error whose ``invalidate_on_error`` deadline
has passed takes the lock, to invalidate exactly once.

Endpoints are closed outside every lock, and closing one never blocks the thread
that published the change (which may hold its registry's locks): the endpoints
a change retires that have a ``close()`` or ``aclose()`` are handed to a closer
thread the Endpointer owns (started when there is a close to run, ending a few
seconds after the last one, so a burst of removals starts it once; joined by
:meth:`Endpointer.close` and awaited by :meth:`Endpointer.aclose`).  There a
sync ``close()`` runs, and an ``aclose()`` goes to the loop the Endpointer was
made on if it runs, else runs on the closer thread.  :meth:`Endpointer.close`
itself closes the rest on the caller's thread (the caller holds none of our
locks), ``aclose()`` coroutines on the running loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Generic, Self, cast

from typing_extensions import TypeVar

from kitsd.core.endpoint import Endpoint, Pending, close_endpoint
from kitsd.core.errors import MisuseError, shown_value
from kitsd.sd.endpoint_cache import EndpointCache, View
from kitsd.sd.endpoint_set import EMPTY, EndpointSet
from kitsd.sd.event import Event
from kitsd.sd.instance_info import InfoFactory, InstanceInfo
from kitsd.sd.instancer import Instancer

__all__ = ["Endpointer"]

LINGER = 2.0
"""Seconds the closer thread waits for more closes before it ends (see ``_Closer``)."""

# The view of a closed Endpointer: its error marks "closed" (checked by identity).
_CLOSED = View(EMPTY, RuntimeError("endpointer is closed"), -math.inf)


#: The kind of endpoint the factory makes (``Callable[[Req], Resp]``); unsaid, any.
E = TypeVar("E", covariant=True, default=Endpoint)


class Endpointer(Generic[E]):
    """Turns an instancer's snapshots into endpoints, one per distinct instance.

    ``factory(instance)`` builds an endpoint the first time an instance appears
    (a factory made by :func:`~sd.factory_with_info` gets the instance's
    :class:`~sd.InstanceInfo` too);
    the endpoint's ``close()`` (or ``aclose()``) is called exactly once, when the
    instance leaves or this Endpointer closes.  A factory that raises, or returns
    something that is not callable, is logged and the instance skipped until the
    next event.  On an event with an error the last endpoints keep serving; with
    ``invalidate_on_error=T`` (seconds; ``math.inf`` means never), once ``T``
    seconds have passed in the error state, :meth:`endpoints` closes them all and
    raises the first stored error until a good event arrives.  :attr:`answered`
    and :attr:`error` say whether the registry ever answered and why it fails now,
    so an empty set can be explained ("registry unreachable" or "no instances").

    Raises ``TypeError`` for an ``instancer`` without ``subscribe``/``unsubscribe``
    or a ``factory`` that is not callable, and :class:`~kitsd.core.errors.MisuseError` for
    a negative or NaN ``invalidate_on_error``, before subscribing anything.

    Thread-safe; :meth:`snapshot` and :meth:`endpoints` take no lock.  ``aclose()``
    endpoints are closed on the event loop that was running when the Endpointer
    was made (or the one running at close time), else on a closer thread of its
    own; ``await endpointer.aclose()`` waits for them.  ``clock`` is injectable
    for tests.
    """

    def __init__(
        self,
        instancer: Instancer,
        factory: Callable[[str], E],
        *,
        invalidate_on_error: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for method in ("subscribe", "unsubscribe"):
            if not callable(getattr(instancer, method, None)):
                raise TypeError(
                    "instancer must be an sd.Instancer (with subscribe() and unsubscribe()), "
                    f"got {shown_value(instancer)}"
                )
        if not callable(factory):
            raise TypeError(
                "factory must be callable as factory(instance) -> endpoint, "
                f"got {shown_value(factory)}"
            )
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {shown_value(clock)}")
        self._cache: EndpointCache[Endpoint] = EndpointCache(
            _checked(cast(Callable[[str], Endpoint], factory)), invalidate_on_error)
        self._view = self._cache.view  # what readers see; replaced, never changed
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self._pending: list[Pending] = []
        self._closer = _Closer()
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        # (whether an event without error arrived, the latest event's error): one tuple,
        # replaced under the lock and read without it
        self._discovery: tuple[bool, BaseException | None] = (False, None)
        self._instancer = instancer
        instancer.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        with self._lock:
            if self._closed:
                return
            to_close = self._cache.update(event, self._clock())
            self._view = self._cache.view
            self._discovery = (self._discovery[0] or event.error is None, event.error)
        closable = [endpoint for endpoint in to_close if _closable(endpoint)]
        if closable:
            # The publisher may hold its registry's locks: close on the closer thread.
            self._track(self._closer.call(lambda: self._close_all(closable)))

    def endpoints(self) -> list[E]:
        """The endpoints, in sorted instance order (a new list each call).

        Raises the first stored discovery error when ``invalidate_on_error`` has
        run out; raises ``RuntimeError`` after :meth:`close`.
        """
        view = self._view
        if view.error is None:
            return cast(list[E], list(view.set.endpoints))
        return cast(list[E], list(self._read(view).endpoints))

    def snapshot(self) -> EndpointSet:
        """The endpoints and their instances as one immutable :class:`~sd.EndpointSet`;
        the same object until the set or its metadata (``info_of``) changes, so reading
        it is O(1) and lock-free.

        Raises like :meth:`endpoints`.
        """
        view = self._view
        if view.error is None:
            return view.set
        return self._read(view)

    def _read(self, view: View) -> EndpointSet:
        """The slow read: closed, or in an error state that may have run out."""
        if view is _CLOSED:
            raise RuntimeError("endpointer is closed")
        if view.deadline == -math.inf and view.error is not None:  # already invalidated
            raise view.error.with_traceback(None)
        now = self._clock()
        if now < view.deadline:
            return view.set
        with self._lock:
            if self._closed:
                raise RuntimeError("endpointer is closed")
            read = self._cache.read(now)
            self._view = self._cache.view
        if read.to_close:
            self._close_all(read.to_close)
        if read.error is not None:
            raise read.error.with_traceback(None)
        return read.set

    @property
    def instances(self) -> tuple[str, ...]:
        """The instances that currently have an endpoint, sorted."""
        return self._view.set.instances

    @property
    def answered(self) -> bool:
        """Whether the registry ever answered: an event without ``error`` arrived.

        With no endpoints, it tells the two cases apart: ``False`` means discovery
        has not succeeded yet (the registry is unreachable: see :attr:`error`, or
        an asyncio instancer's first answer is still on its way), ``True`` that the
        registry answered and the service has no (usable) instances.  Lock-free."""
        return self._discovery[0]

    @property
    def error(self) -> BaseException | None:
        """The error of the latest event (why discovery is failing now), ``None`` when
        the latest event had none or none arrived yet.  The endpoints keep serving
        meanwhile unless ``invalidate_on_error`` ran out.  Lock-free."""
        return self._discovery[1]

    def close(self) -> None:
        """Unsubscribe and close every endpoint; idempotent.

        Waits for the closer thread's async closes unless called on a running event
        loop (they may need that loop): there, use :meth:`aclose`.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._view = _CLOSED
            to_close = self._cache.close()
        self._instancer.unsubscribe(self._on_event)
        self._close_all(to_close)
        self._closer.stop()
        if not _in_running_loop():
            self._closer.join()

    async def aclose(self) -> None:
        """:meth:`close`, then wait for async endpoint closes to finish."""
        self.close()
        while True:  # a close run on the closer thread may leave more to wait for
            with self._lock:
                pending, self._pending = self._pending, []
            if not pending:
                return
            for item in pending:
                if isinstance(item, concurrent.futures.Future):
                    await asyncio.wrap_future(item)
                else:
                    await item

    def _close_all(self, endpoints: list[Endpoint]) -> None:
        for endpoint in endpoints:
            pending = close_endpoint(endpoint, self._loop, run=self._closer.submit)
            if pending is not None:
                self._track(pending)

    def _track(self, pending: Pending) -> None:
        """Remember a close under way, for :meth:`aclose` to wait for."""
        with self._lock:
            self._pending = [p for p in self._pending if not p.done()]
            self._pending.append(pending)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()


def _checked(factory: Callable[[str], Endpoint]) -> Callable[[str], Endpoint]:
    """``factory``, failing (like a factory that raised) when it returns a non-callable;
    a :func:`~sd.factory_with_info` factory stays one."""
    if isinstance(factory, InfoFactory):
        with_info = cast(InfoFactory[Endpoint], factory)

        def build_with_info(instance: str, info: InstanceInfo) -> Endpoint:
            return _callable(with_info.build(instance, info), instance)

        return InfoFactory(build_with_info)

    def build(instance: str) -> Endpoint:
        return _callable(factory(instance), instance)

    return build


def _callable(endpoint: object, instance: str) -> Endpoint:
    if not callable(endpoint):
        raise MisuseError(
            f"the endpoint factory returned {shown_value(endpoint)} for {instance}, "
            "which is not an endpoint (a callable)"
        )
    return cast(Endpoint, endpoint)


def _closable(endpoint: object) -> bool:
    """Whether :func:`~kitsd.core.endpoint.close_endpoint` has anything to do with it."""
    return callable(getattr(endpoint, "close", None)) or callable(
        getattr(endpoint, "aclose", None))


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Closer:
    """Runs closes off the publishing thread, one after the other on a thread of its
    own, so the thread that published a change never waits for one.

    The thread starts when a close is submitted and ends once none has come for
    :data:`LINGER` seconds (at once after :meth:`stop`): starting a thread costs the
    publisher ~0.5 ms on a busy machine, which a rolling restart's removals would
    otherwise pay one by one on the way to the Endpointer's other subscribers."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._queue: deque[tuple[Callable[[], object], concurrent.futures.Future[None]]]
        self._queue = deque()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def submit(self, coroutine: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        """Queue ``coroutine`` (which must not raise); the future is done once it ran."""
        return self.call(lambda: asyncio.run(coroutine))

    def call(self, work: Callable[[], object]) -> concurrent.futures.Future[None]:
        """Queue ``work()`` (which must not raise); the future is done once it ran."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:
            self._queue.append((work, done))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="kitsd-endpoint-closer", daemon=True
                )
                self._thread.start()
            else:
                self._lock.notify()
        return done

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._queue and not self._stopping:
                    self._lock.wait(LINGER)
                if not self._queue:
                    self._thread = None
                    return
                work, done = self._queue.popleft()
            try:
                work()
            finally:
                done.set_result(None)
                # while it lingers, the thread must not keep what it closed alive
                del work, done

    def stop(self) -> None:
        """Let the thread end as soon as nothing is left to close (no lingering)."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()

    def join(self) -> None:
        """:meth:`stop`, then wait until every submitted close has run."""
        self.stop()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
