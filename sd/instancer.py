"""Instancers: sources of :class:`~sd.event.Event` snapshots, and the one place
where subscriber bookkeeping is written.

Theory of operation
-------------------
A *watch* (a Consul blocking query loop, an etcd watch, an in-process registry)
only translates registry answers into whole snapshots and hands them to a
:class:`Broadcaster`.  The broadcaster sorts and de-duplicates the instances,
drops a snapshot that says nothing new, replays the current snapshot to each
new subscriber, and delivers to subscribers in order, one snapshot at a time.

A registry watch's broadcaster starts *pending* (``pending=True``): it has read
nothing yet, so it has no state to give.  A subscriber that arrives then is
sent nothing until the watch publishes its first answer (or error), which
every pending subscriber receives as its first event; nothing is ever made
up.  :class:`InstancerHandle` turns that into go-kit's promise that an
instancer has read once before it is returned: its constructor waits (up to
``first_answer_timeout`` seconds) until the first answer has been delivered,
and when none came in time it publishes a
:class:`~kitsd.core.errors.RegistryUnavailableError` saying so (the watch keeps
trying; its first real answer replaces the error).

Users never hold a broadcaster: they hold an :class:`InstancerHandle`, which
remembers the callbacks *it* subscribed.  ``stop()`` on a handle removes those
callbacks and releases the handle's share of the watch; :class:`SharedWatches`
stops a watch when its last handle is stopped, so every subscriber to one
(registry, service) pair shares one watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from types import MappingProxyType, TracebackType
from typing import Final, Protocol, Self, TypeVar, cast, runtime_checkable

from kitsd.core import validate
from kitsd.core.errors import MisuseError, RegistryUnavailableError
from kitsd.core.observe import (
    HUB,
    DiscoveryFailed,
    DiscoveryStopped,
    DiscoveryUpdated,
    current_watch_label,
    emit,
)
from kitsd.sd.event import Delta, Event, diff, same_error, splice
from kitsd.sd.instance import normalize_instance
from kitsd.sd.instance_info import (
    DEFAULT_INFO,
    NO_INFO,
    InstanceInfo,
    canonical_info,
    check_info_map,
    copy_info,
)

__all__ = [
    "DEFAULT_FIRST_ANSWER_TIMEOUT",
    "Broadcaster",
    "Callback",
    "FixedInstancer",
    "Instancer",
    "InstancerHandle",
    "SharedWatches",
    "Stoppable",
    "check_first_answer_timeout",
]

logger = logging.getLogger(__name__)

# Numbers telling watches apart in observations (Broadcaster.watch).
_WATCH_NUMBERS = itertools.count(1)

Callback = Callable[[Event], object]
W = TypeVar("W", bound="Stoppable")

#: Seconds a registry instancer's constructor waits for the watch's first answer.
DEFAULT_FIRST_ANSWER_TIMEOUT: Final = 5.0


def check_first_answer_timeout(value: object) -> float | None:
    """A driver's ``first_answer_timeout`` checked (:mod:`kitsd.core.validate`): seconds
    in ``[0, 600]``, returned as what :class:`InstancerHandle` takes (``None`` for 0: do
    not wait).  Raises ``TypeError`` for a non-number and
    :class:`~kitsd.core.errors.MisuseError` (a ``ValueError``) naming it for NaN,
    infinity or a value out of range."""
    return validate.seconds("first_answer_timeout", value, zero=True, maximum=600) or None


@runtime_checkable
class Instancer(Protocol):
    """A source of instance snapshots (go-kit's ``sd.Instancer``).

    ``subscribe(callback)`` calls ``callback(event)`` at once with the current
    state, then on every change; instances arrive sorted and de-duplicated and an
    unchanged state is not re-sent.  A state is always one that was read: a
    registry instancer reads once (or reports an error) before its constructor
    returns, and an asyncio one, whose watch runs on the caller's loop, sends its
    first answer when it arrives.  ``stop()`` is idempotent and prompt.
    Usable as a context manager that stops on exit.
    """

    def subscribe(self, callback: Callback) -> None: ...

    def unsubscribe(self, callback: Callback) -> None: ...

    def stop(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Stoppable(Protocol):
    """Anything with an idempotent ``stop()``: a running watch."""

    def stop(self) -> None: ...


class Broadcaster:
    """Current snapshot plus subscribers; safe to use from any thread.

    Deliveries happen under one re-entrant lock so every subscriber sees the
    snapshots in the order they were published; a callback may subscribe,
    unsubscribe or publish from inside a delivery (a snapshot it publishes is
    delivered once every subscriber has the current one).  A callback that
    raises is logged and kept.

    Each change costs O(changed) plus one copy of the instance tuple: the
    broadcaster keeps its members as a set, compares a published full list with
    them (set operations, in C), splices the sorted tuple instead of sorting it,
    and hands subscribers events carrying a :class:`~sd.event.Delta` relative to
    the previous snapshot.  A publisher that already knows what changed passes
    ``Event(instances, delta=Delta(broadcaster.state.instances, added, removed))``
    and skips the comparison too (see :meth:`publish`).

    ``pending=True`` (for a watch that has not read its registry yet; not with
    ``initial``): until the first :meth:`publish` or :meth:`publish_error`,
    :attr:`answered` is ``False``, :attr:`state` is the empty ``Event()`` and
    subscribers are sent nothing; the first snapshot published is delivered to
    every one of them, even an empty one.

    Observations (:mod:`kitsd.core.observe`) name ``kind`` and ``service``, or, for
    a broadcaster made inside ``kitsd.core.observe.labelling_watches(label)``, the
    label's name at the time (a name that came from a request must not become a
    metric label before it is vouched for); :meth:`stopped` tells observers the
    watch is gone.
    """

    def __init__(
        self, initial: Event | None = None, *, kind: str = "custom", service: str = "",
        pending: bool = False,
    ) -> None:
        if pending and initial is not None:
            raise MisuseError("a Broadcaster with an initial state is not pending")
        #: kitsd.observe: the registry kind and service named in discovery observations.
        self.kind = kind
        self.service = service
        #: kitsd.observe: tells this watch from the others in observations.
        self.watch = next(_WATCH_NUMBERS)
        self._label = current_watch_label()
        if self._label is not None:
            self._label.attach(self._relabelled)
        self._lock = threading.RLock()
        start = initial if initial is not None else Event()
        self._members: set[str] = set(start.instances)
        ordered = tuple(sorted(self._members))
        instances = start.instances if ordered == start.instances else ordered
        self._state = Event(instances, start.error, info=canonical_info(start.info, self._members))
        # The last metadata mapping a publisher gave and what it became, so a watch that
        # hands out the same mapping again costs O(1) (an identity check) for metadata.
        self._info_source: tuple[Mapping[str, InstanceInfo], Mapping[str, InstanceInfo]] = (
            NO_INFO, NO_INFO)
        self._subscribers: list[Callback] = []
        # Snapshots published by a callback during a delivery wait in the queue, so
        # later subscribers do not get the newer one before the one being delivered.
        self._queue: deque[Event] = deque()
        self._delivering = False
        self._delivered = self._state  # the snapshot being (or last) delivered
        self._answered = threading.Event()
        if not pending:
            self._answered.set()

    @property
    def state(self) -> Event:
        """The latest snapshot (the empty ``Event()`` while :attr:`answered` is ``False``)."""
        return self._state

    @property
    def answered(self) -> bool:
        """Whether a snapshot was published (always ``True`` unless made ``pending``)."""
        return self._answered.is_set()

    def wait_answered(self, timeout: float | None) -> bool:
        """Wait until the first snapshot was published *and delivered* to every
        subscriber that was waiting for it, at most ``timeout`` seconds (``None``: no
        bound); returns whether it was.  Do not call it from a subscriber callback."""
        if not self._answered.wait(timeout):
            return False
        with self._lock:  # the first delivery runs under the lock: once we hold it, it is done
            return True

    def give_up_waiting(self, error: BaseException) -> bool:
        """Publish ``error`` as the first snapshot if nothing was published yet (a
        first answer that is late); returns whether it did.  Thread-safe."""
        with self._lock:
            if self._answered.is_set():
                return False
            return self.publish_error(error)

    def publish(self, event: Event) -> bool:
        """Make ``event`` the current snapshot and deliver it; ``False`` if nothing changed.

        ``event.instances`` may come in any order and with duplicates;
        ``event.info`` may hold default entries and entries of other instances
        (they are dropped).  If ``event.delta`` is given and its ``base`` is the
        current ``state.instances`` (the same object), it is trusted after an
        O(changed) plausibility check: ``instances`` must then be sorted and
        de-duplicated, and ``info`` hold only the non-default metadata of
        ``instances`` (as the events this broadcaster delivers do).
        """
        with self._lock:
            next_event = self._next(event)
            if next_event is None:
                if self._answered.is_set():
                    return False
                # The first answer says what the empty starting state said: it is news
                # all the same (pending subscribers have been sent nothing yet).
                next_event = Event(self._state.instances, event.error, info=self._state.info)
            self._answered.set()
            self._state = next_event
            if HUB.observers:  # kitsd.observe
                self._observe(next_event)
            self._queue.append(next_event)
            if self._delivering:  # published from inside a callback: the loop below sends it
                return True
            self._delivering = True
            try:
                while self._queue:
                    self._delivered = self._queue.popleft()
                    for callback in tuple(self._subscribers):
                        _deliver(callback, self._delivered)
            finally:
                self._delivering = False
            return True

    def _next(self, event: Event) -> Event | None:
        """The canonical event to deliver after ``event``, or ``None`` if nothing changed.
        Caller holds the lock."""
        state = self._state
        base = state.instances
        delta = event.delta
        trusted = delta is not None and delta.base is base
        added: tuple[str, ...]
        removed: tuple[str, ...]
        if event.instances is base:
            instances, added, removed = base, (), ()
            trusted = trusted and delta is not None and not delta.added and not delta.removed
        elif trusted and delta is not None and self._plausible(event, delta):
            instances, added, removed = event.instances, delta.added, delta.removed
            self._members.difference_update(removed)
            self._members.update(added)
        else:
            trusted = False
            self._members, more, fewer = diff(self._members, event.instances)
            added, removed = tuple(more), tuple(fewer)
            instances = splice(base, added, removed)
        info, changed = self._info_after(event, delta if trusted else None, added, removed)
        if added or removed or changed:
            return Event(instances, event.error, info=info,
                         delta=Delta(base, added, removed, changed))
        # Nothing about the instances changed: news only if the error did.
        if same_error(event.error, state.error):
            return None
        return Event(base, event.error, info=state.info)

    def _plausible(self, event: Event, delta: Delta) -> bool:
        members = self._members
        return (
            len(event.instances) == len(delta.base) + len(delta.added) - len(delta.removed)
            and all(instance not in members for instance in delta.added)
            and all(instance in members for instance in delta.removed)
        )

    def _info_after(
        self, event: Event, delta: Delta | None, added: tuple[str, ...], removed: tuple[str, ...]
    ) -> tuple[Mapping[str, InstanceInfo], Mapping[str, InstanceInfo]]:
        """The canonical metadata after ``event`` and what changed (instances kept or
        added whose metadata differs), given the members already updated.  O(changed)
        with a plausible ``delta``; else O(instances with metadata), and O(1) when
        neither side has any.  Caller holds the lock."""
        old = self._state.info
        given = event.info
        if delta is not None and self._plausible_info(given, delta, removed):
            return given, delta.info
        if not given and not old:
            return NO_INFO, NO_INFO
        source, derived = self._info_source
        if given is old or (given is source and old is derived
                            and not any(instance in given for instance in added)):
            # The current metadata again (a watch hands out one mapping while its
            # metadata does not change): only departures can change it.
            return _without(old, removed), NO_INFO
        members = self._members
        new = canonical_info(given, members)
        self._info_source = (given, new)
        if new == old:
            self._info_source = (given, old)
            return old, NO_INFO
        # identity first: equal infos are usually the same object (drivers memoise them),
        # and ``!=`` would call InstanceInfo.__eq__ for each
        before = old.get
        changed = {instance: info for instance, info in new.items()
                   if (previous := before(instance)) is not info and previous != info}
        for instance in old:
            if instance not in new and instance in members:
                changed[instance] = DEFAULT_INFO
        return new, MappingProxyType(changed)

    def _plausible_info(
        self, given: Mapping[str, InstanceInfo], delta: Delta, removed: tuple[str, ...]
    ) -> bool:
        """Whether a trusted delta's metadata fits the state: O(changed)."""
        old, members = self._state.info, self._members
        size = len(old) - sum(1 for instance in removed if instance in old)
        for instance, info in delta.info.items():
            if instance not in members or given.get(instance, DEFAULT_INFO) != info:
                return False
            size += (not info.is_default) - (instance in old)
        return size == len(given) and all(instance not in given for instance in removed)

    def apply(
        self,
        added: Iterable[str] = (),
        removed: Iterable[str] = (),
        *,
        info: Mapping[str, InstanceInfo] | None = None,
    ) -> bool:
        """Publish a change given as the instances that joined and left, in O(changed)
        plus one copy of the tuple: for a watch that sees changes one by one (an etcd
        put or delete).  ``False`` if nothing changed.

        Instances must be canonical (:func:`sd.instance.normalize_instance`).  Removals
        apply first: an instance both removed and added stays; adding a member or
        removing a non-member changes nothing.  ``info`` gives the new metadata of
        instances added or kept (``DEFAULT_INFO`` clears it); the metadata of removed
        instances goes with them.  The event has no error.
        """
        with self._lock:
            members = self._members
            gone = {instance for instance in removed if instance in members}
            new = {instance for instance in added if instance not in members or instance in gone}
            kept = gone & new
            gone -= kept
            new -= kept
            state = self._state
            old = state.info
            changes = {
                instance: value for instance, value in (info or {}).items()
                if (instance in members or instance in new) and instance not in gone
                and old.get(instance, DEFAULT_INFO) != value
                and not (instance in new and value.is_default)
            }
            if not gone and not new and not changes and state.error is None \
                    and self._answered.is_set():
                return False
            merged = _without(old, gone)
            if changes:
                table = copy_info(merged)
                for instance, value in changes.items():
                    if value.is_default:
                        table.pop(instance, None)
                    else:
                        table[instance] = value
                merged = MappingProxyType(table) if table else NO_INFO
            base = state.instances
            plus, minus = tuple(sorted(new)), tuple(sorted(gone))
            return self.publish(Event(splice(base, plus, minus), info=merged,
                                      delta=Delta(base, plus, minus, MappingProxyType(changes))))

    def publish_error(self, error: BaseException) -> bool:
        """Publish ``error`` while keeping the last known instances."""
        with self._lock:
            published = self.publish(Event(self._state.instances, error, info=self._state.info))
            if not published and HUB.observers:  # kitsd.observe: count every failure
                self._observe(Event(self._state.instances, error))
            return published

    @property
    def label(self) -> str:
        """The service name observations give now (see the class docstring)."""
        return self.service if self._label is None else self._label.name

    def _observe(self, event: Event) -> None:
        """kitsd.observe: report a published state (caller holds the lock)."""
        if event.error is None:
            emit(DiscoveryUpdated(self.kind, self.label, len(event.instances), self.watch))
        else:
            emit(DiscoveryFailed(self.kind, self.label, len(event.instances), event.error,
                                 self.watch))

    def _relabelled(self) -> None:
        """The label was renamed: observers hear the current state under the new name."""
        with self._lock:
            if HUB.observers and self._answered.is_set():
                self._observe(self._state)

    def stopped(self) -> None:
        """The watch feeding this broadcaster stopped for good: observers forget it
        (:class:`kitsd.core.observe.DiscoveryStopped`).  Called by whoever stops the
        watch (:class:`SharedWatches`, the registries' own instancers)."""
        with self._lock:
            if HUB.observers and self._answered.is_set():
                emit(DiscoveryStopped(self.kind, self.label, self.watch))

    def subscribe(self, callback: Callback) -> None:
        """Add ``callback`` and deliver the current snapshot to it at once; while
        nothing was published yet (``pending``), it gets the first snapshot when that
        is published instead."""
        with self._lock:
            self._subscribers.append(callback)
            if self._answered.is_set():
                _deliver(callback, self._delivered)

    def unsubscribe(self, callback: Callback) -> None:
        """Remove one registration of ``callback``; unknown callbacks are ignored."""
        with self._lock, contextlib.suppress(ValueError):
            self._subscribers.remove(callback)


def _without(
    info: Mapping[str, InstanceInfo], instances: Iterable[str]
) -> Mapping[str, InstanceInfo]:
    """``info`` without the entries of ``instances``: the same object if it has none of
    them, else a read-only copy (one copy in C, then O(changed))."""
    leaving = [instance for instance in instances if instance in info]
    if not leaving:
        return info
    table = copy_info(info)
    for instance in leaving:
        del table[instance]
    return MappingProxyType(table) if table else NO_INFO


def _deliver(callback: Callback, event: Event) -> None:
    try:
        callback(event)
    except Exception:
        logger.exception("instancer subscriber %r raised; it stays subscribed", callback)


class InstancerHandle:
    """A user's view of a shared :class:`Broadcaster`: implements :class:`Instancer`.

    ``stop()`` unsubscribes the callbacks subscribed through this handle and then
    calls ``release`` once (which stops the watch if this was its last user).

    On a pending broadcaster (a watch that has not answered yet), the constructor
    waits up to ``first_answer_timeout`` seconds for the first answer, as go-kit's
    instancers read once before returning: from then on :attr:`state` is a state
    that was read, and ``subscribe()`` delivers it at once.  When the time runs
    out it publishes a :class:`~kitsd.core.errors.RegistryUnavailableError` naming
    ``source`` as the first state (the watch keeps trying; its first answer
    replaces the error).  ``None`` (the asyncio instancers: their watch runs on
    the caller's loop) never waits: subscribers get the first answer when it
    arrives, never a made-up empty set.
    """

    def __init__(
        self, broadcaster: Broadcaster, release: Callable[[], None] | None = None, *,
        first_answer_timeout: float | None = None, source: str = "",
    ) -> None:
        self._broadcaster = broadcaster
        self._release = release
        self._source = source or f"{broadcaster.kind} {broadcaster.service!r}".strip()
        self._lock = threading.Lock()
        self._callbacks: list[Callback] = []
        self._stopped = False
        if first_answer_timeout is not None and not broadcaster.answered:
            try:
                self.wait_first_answer(first_answer_timeout)
            except BaseException:  # interrupted: give the share of the watch back
                self.stop()
                raise

    @property
    def state(self) -> Event:
        """The latest snapshot (handy for polling and debugging); the empty
        ``Event()`` while :attr:`answered` is ``False``."""
        return self._broadcaster.state

    @property
    def answered(self) -> bool:
        """Whether the watch has published its first answer (or error) yet."""
        return self._broadcaster.answered

    def subscribe(self, callback: Callback) -> None:
        """Subscribe ``callback``: it receives the current snapshot at once, then every change.

        Before the watch's first answer (an asyncio instancer's), it receives that
        answer when it arrives instead: never a state nobody read.  Raises
        ``RuntimeError`` after ``stop()``.
        """
        with self._lock:
            if self._stopped:
                raise RuntimeError("instancer is stopped")
        broadcaster = self._broadcaster
        broadcaster.subscribe(callback)
        with self._lock:
            # A stop() that ran while we subscribed did not know this registration:
            # take it back ourselves, so nothing stays subscribed after stop().
            raced_stop = self._stopped
            if not raced_stop:
                self._callbacks.append(callback)
        if raced_stop:
            broadcaster.unsubscribe(callback)

    def wait_first_answer(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until the first answer has been delivered;
        when it has not, publish the error that says so (see the class docstring)
        and return ``False``."""
        broadcaster = self._broadcaster
        if broadcaster.wait_answered(timeout):
            return True
        gave_up = self.first_answer_late(timeout)
        broadcaster.wait_answered(None)  # delivered to every waiting subscriber
        return not gave_up

    async def wait_first_answer_async(
        self, timeout: float | None,  # noqa: ASYNC109 - the late error names the timeout
    ) -> bool:
        """The asyncio twin of :meth:`wait_first_answer`: wait on the running loop,
        which keeps running, up to ``timeout`` seconds (``None``: no bound) for the
        first answer; when it has not come, publish the error that says so and return
        ``False``.  Cancelling it cancels only the wait."""
        broadcaster = self._broadcaster
        if broadcaster.answered:
            return True
        loop = asyncio.get_running_loop()
        heard: asyncio.Future[None] = loop.create_future()

        def answered() -> None:
            if not heard.done():
                heard.set_result(None)

        def on_event(event: Event) -> None:  # on the watch's thread (or this loop's)
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                loop.call_soon_threadsafe(answered)

        broadcaster.subscribe(on_event)
        try:
            if not broadcaster.answered:
                try:
                    async with asyncio.timeout(timeout):
                        await heard
                except TimeoutError:
                    return not self.first_answer_late(timeout or 0.0)
        finally:
            broadcaster.unsubscribe(on_event)
        return True

    def first_answer_late(self, timeout: float) -> bool:
        """If the watch has not answered yet, publish the error saying it did not
        within ``timeout`` seconds and return ``True``; never blocks (an asyncio
        instancer calls it from a timer on its loop)."""
        return self._broadcaster.give_up_waiting(RegistryUnavailableError(
            f"no answer from {self._source} within {timeout:g}s (still trying)"))

    def unsubscribe(self, callback: Callback) -> None:
        """Stop delivering to ``callback``; unknown callbacks are ignored."""
        with self._lock:
            try:
                self._callbacks.remove(callback)
            except ValueError:
                return
        self._broadcaster.unsubscribe(callback)

    def stop(self) -> None:
        """Unsubscribe everything subscribed here and release the watch; idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._broadcaster.unsubscribe(callback)
        if self._release is not None:
            self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class FixedInstancer(InstancerHandle):
    """An instancer that never changes (go-kit's ``sd.FixedInstancer``).

    ``info`` (optional) maps instances to their :class:`~sd.InstanceInfo`; the
    others have the defaults.

    Raises ``ValueError`` (:class:`kitsd.core.errors.InvalidInstanceError`) naming the
    first invalid instance string, ``TypeError`` for an ``info`` that is not a
    mapping of instance -> ``InstanceInfo``, and :class:`~kitsd.core.errors.MisuseError`
    for an ``info`` key that is not one of ``instances``.
    """

    def __init__(
        self, instances: Iterable[str], *, info: Mapping[str, InstanceInfo] | None = None
    ) -> None:
        if isinstance(instances, str):
            raise TypeError("FixedInstancer takes an iterable of instances, not one string")
        normalized = tuple(normalize_instance(value) for value in instances)
        table = check_info_map(info) if info is not None else {}
        strangers = sorted(set(table).difference(normalized))
        if strangers:
            raise MisuseError(f"info names instances that are not in instances: "
                              f"{', '.join(strangers[:5])}{' ...' if len(strangers) > 5 else ''}")
        super().__init__(Broadcaster(Event(normalized, info=table), kind="static"))

    def __repr__(self) -> str:
        shown = f", info={dict(self.state.info)!r}" if self.state.info else ""
        return f"FixedInstancer({list(self.state.instances)!r}{shown})"


class _Owner:
    """An object as part of a key: equal only to itself (never by ``==``: two equal
    clients are still two connections), and held, so that no other object can take
    its identity while the entry lives (an ``id()`` in a key can be reused once its
    object is freed)."""

    __slots__ = ("_hash", "held")

    def __init__(self, held: object) -> None:
        self.held = held
        self._hash = id(held)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Owner) and other.held is self.held


class SharedWatches:
    """One running watch per key, shared by every handle for that key.

    ``handle(key, start)`` returns a new :class:`InstancerHandle`; the first one for
    ``key`` calls ``start(broadcaster)`` to launch the watch, and the watch is
    stopped when the last handle for ``key`` is stopped.  A watch that uses a
    registry client is shared only by handles on that very client (``owner=``).
    Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[
            tuple[_Owner | None, Hashable], tuple[Broadcaster, Stoppable, list[int]]] = {}

    def acquire(
        self, key: Hashable, start: Callable[[Broadcaster], W], *, kind: str = "custom",
        service: str = "", pending: bool = False, owner: object = None,
    ) -> tuple[Broadcaster, W, Callable[[], None]]:
        """Take a share of the watch for ``key``, starting it with ``start(broadcaster)``
        if none runs; returns the shared broadcaster, the watch, and an idempotent
        ``release`` that gives the share back (the last release stops the watch).
        Driver instancers pass the broadcaster and ``release`` to
        :class:`InstancerHandle`.  ``kind`` and ``service`` label the broadcaster's
        observations (:mod:`kitsd.core.observe`); ``pending``: the broadcaster has no
        state until the watch publishes one (see :class:`Broadcaster`).  ``owner``
        (a registry client): the watch is shared only with handles of this same
        object (compared by identity, and held while the watch runs: a key with an
        ``id()`` in it could be reused by another client once the first is freed)."""
        full = (None if owner is None else _Owner(owner), key)
        with self._lock:
            entry = self._entries.get(full)
            if entry is None:
                broadcaster = Broadcaster(kind=kind, service=service, pending=pending)
                entry = (broadcaster, start(broadcaster), [0])
                self._entries[full] = entry
            entry[2][0] += 1
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            self._release(full)

        return entry[0], cast(W, entry[1]), release

    def handle(
        self, key: Hashable, start: Callable[[Broadcaster], Stoppable]
    ) -> InstancerHandle:
        """A new handle on the watch for ``key``, starting the watch if needed."""
        broadcaster, _, release = self.acquire(key, start)
        return InstancerHandle(broadcaster, release)

    def _release(self, full: tuple[_Owner | None, Hashable]) -> None:
        with self._lock:
            entry = self._entries.get(full)
            if entry is None:
                return
            entry[2][0] -= 1
            if entry[2][0] > 0:
                return
            del self._entries[full]
        try:
            entry[1].stop()
        finally:
            entry[0].stopped()

    def keys(self) -> list[Hashable]:
        """Keys with a running watch (for tests and debugging; a key shared by two
        owners appears twice)."""
        with self._lock:
            return [key for _, key in self._entries]
