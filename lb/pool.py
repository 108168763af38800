"""What the built-in balancers share: reading the endpoint set, avoiding instances
that failed, and owning the ejection state.

One retried call, end to end: :func:`lb.retry` asks ``balancer.pick(exclude)``
(``exclude``: the instances that failed earlier in this call, a local variable
of the call), calls the endpoint, and reports the outcome with
``balancer.report(pick, error)``.  The balancer reads its source's snapshot, and
keeps the :class:`lb.pool_policy.Ejections` of its :class:`lb.OutlierDetection`.
That is all: three modules, no process-wide state, no context variables.

Picks cost O(1) whatever the number of instances:

* :class:`sd.Endpointer` hands out the same immutable :class:`sd.EndpointSet`
  until the set changes, so a pick reads two tuples; the ejection records are
  narrowed to the instances present only when that identity changes.
* With nothing excluded and nobody ejected (the usual case) a pick is the
  balancer's plain choice.  Otherwise the balancer probes: its own next choice up
  to :data:`PROBES` times, then uniformly random positions up to :data:`PROBES`
  times.  The cap on ejections keeps at least half the instances (by default)
  in rotation, so a probe succeeds with probability about 1/2 or better and a
  scan of the whole set (the fallback, which also handles "everyone left is
  excluded or ejected") is needed about once in 2**8 steered picks.

Sources without ``snapshot()`` (anything with ``endpoints()``) still work: their
endpoints are keyed by identity (:func:`identity_key`), which pins nothing, and
records of endpoints that left the list are dropped on the next pick.
"""

from __future__ import annotations

import bisect
import logging
import random
import threading
import time
import weakref
from array import array
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Generic, Unpack, cast, overload

from kitsd.core.endpoint import Endpoint
from kitsd.core.errors import Leaving
from kitsd.core.observe import HUB, InstanceEjected, InstanceRestored, current_service, emit
from kitsd.lb.balancer import E, EndpointSource, Pick
from kitsd.lb.errors import NoEndpointsError
from kitsd.lb.outlier_detection import OutlierDetection
from kitsd.lb.pool_policy import Ejections
from kitsd.lb.shaping import BalancingOptions, Shape, Shaping, check_options
from kitsd.sd.instance_info import NO_INFO, InstanceInfo

__all__ = ["DEFAULT_OUTLIER_DETECTION", "PROBES", "Pool", "identity_key"]

logger = logging.getLogger(__name__)

#: Probes of each kind before a steered pick falls back to a scan.
PROBES = 8

#: The outlier detection balancers use unless told otherwise.
DEFAULT_OUTLIER_DETECTION = OutlierDetection()


def identity_key(endpoint: object) -> str:
    """The stand-in instance name of an endpoint whose source does not name instances."""
    return f"<endpoint at {id(endpoint):#x}>"


class _IdentityKeys(Sequence[str]):
    """:func:`identity_key` of each endpoint of a list, computed when read."""

    __slots__ = ("_endpoints",)

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self._endpoints = endpoints

    def __len__(self) -> int:
        return len(self._endpoints)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [identity_key(endpoint) for endpoint in self._endpoints[index]]
        return identity_key(self._endpoints[index])


def _weak(endpoint: object) -> object:
    """A weak reference to ``endpoint``, or its ``id`` if it cannot have one."""
    try:
        return weakref.ref(endpoint)
    except TypeError:
        return id(endpoint)


def _same(tag: object, endpoint: object) -> bool:
    """Whether ``tag`` (from :func:`_weak`) names ``endpoint``."""
    if isinstance(tag, weakref.ref):
        return tag() is endpoint
    return tag == id(endpoint)


def _in_sorted(instances: tuple[str, ...], key: str) -> bool:
    position = bisect.bisect_left(instances, key)
    return position < len(instances) and instances[position] == key


class Pool(Generic[E]):
    """Base of the built-in balancers (a :class:`lb.Picker`).  Subclasses choose an
    index with :meth:`_next_index` (called under the lock).

    Every built-in balancer also takes the :class:`lb.shaping.BalancingOptions`
    (``slow_start=``, ``zones=``, ``health_check=`` with ``health_checkers=``,
    ``subset=``; see :mod:`lb.shaping`), which need an :class:`sd.Endpointer` (a
    source with ``snapshot()``: they read the instances' names and metadata).
    """

    #: Whether the balancer weighs instances by ``InstanceInfo.weight`` (zones count
    #: capacity by weight then, envoy#41992).
    _uses_weights = False

    def __init__(
        self,
        endpointer: EndpointSource[E],
        *,
        outlier_detection: OutlierDetection | None,
        seed: int | None = None,
        **options: Unpack[BalancingOptions],
    ) -> None:
        snapshot = getattr(endpointer, "snapshot", None)
        endpoints = getattr(endpointer, "endpoints", None)
        if not callable(snapshot) and not callable(endpoints):
            raise TypeError(
                f"endpointer must be an sd.Endpointer (or have endpoints()), got {endpointer!r}"
            )
        if outlier_detection is not None and not isinstance(outlier_detection, OutlierDetection):
            raise TypeError(
                f"outlier_detection must be an lb.OutlierDetection or None, "
                f"got {outlier_detection!r}"
            )
        self._source = endpointer
        self._snapshot = snapshot if callable(snapshot) else None
        self._endpoints = cast(Callable[[], Sequence[Endpoint]], endpoints)
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._ejections = None if outlier_detection is None else Ejections(outlier_detection)
        # the records themselves: an empty dict is the hot path's "nobody to avoid"
        self._records = {} if self._ejections is None else self._ejections.records
        self._instances: tuple[str, ...] = ()  # strings only: the last set pins no endpoint
        # the last set's metadata (no endpoints either): a new one is a change too
        self._info: Mapping[str, InstanceInfo] = NO_INFO
        # Ejection ends by index in the set named by the tuple (None: nobody is out).
        self._until: tuple[tuple[str, ...], array[float] | None] = ((), None)
        self._size = 0
        checked = check_options(options, f"lb.{type(self).__name__}")
        if checked and self._snapshot is None:
            raise TypeError(f"{', '.join(sorted(checked))} need an sd.Endpointer (a source "
                            f"with snapshot()), got {endpointer!r}")
        #: The state of the issue-21 options; None (the usual case) costs the picks nothing.
        self._shaping = Shaping(checked, self) if checked else None
        #: Whether picks go through the shape: with shaping, unless slow start is its
        #: only option and no ramp runs (set when one starts, under the lock; cleared
        #: by the first pick that finds every ramp over): a plain flag, so slow start
        #: costs an idle balancer's picks nothing (it may then be on by default).
        self._shaping_on = self._shaping is not None and not self._shaping.ramp_only
        if self._shaping is not None and self._snapshot is not None:
            # Health checks start now, before the first call.
            try:
                self._shaping.prime(self._snapshot().instances)
            except Exception:
                logger.debug("no endpoint set to watch yet", exc_info=True)

    @property
    def outlier_detection(self) -> OutlierDetection | None:
        """The ejection policy (``None``: ejection disabled)."""
        return None if self._ejections is None else self._ejections.policy

    def ejected(self) -> list[str]:
        """The instances out of rotation now (for tests and diagnostics)."""
        ejections = self._ejections
        if ejections is None:
            return []
        now = time.monotonic()
        with self._lock:
            return sorted(ejections.out(now))

    def unhealthy(self) -> list[str]:
        """The instances failing their active health check now (``health_check=``)."""
        shaping = self._shaping
        if shaping is None:
            return []
        with self._lock:
            return sorted(shaping.unhealthy)

    def warmth(self) -> float:
        """The mean slow-start factor of the current set: 1.0 when every instance is
        warm (or without ``slow_start=``), lower while instances ramp.  An adaptive
        concurrency limit scales by it, so a fleet whose every instance is new is not
        sent the full load."""
        shaping = self._shaping
        if shaping is None or shaping.warming is None:
            return 1.0
        self._read()  # the current set (its newcomers start ramping when first seen)
        now = time.monotonic()
        with self._lock:
            return shaping.warmth(self._size, now)

    def close(self) -> None:
        """Stop watching instances' health (the probers of other stacks go on).
        Nothing else needs closing; idempotent.  A balancer that is garbage collected
        stops watching too."""
        if self._shaping is not None:
            self._shaping.close()

    def endpoint(self) -> E:
        """One endpoint, as :meth:`pick` with nothing excluded."""
        _, endpoints, index = self._choose(())
        return cast(E, endpoints[index])

    def pick(self, exclude: Collection[str] = ()) -> Pick:
        """Pick an instance, avoiding those in ``exclude`` and ejected ones while
        others remain.  Raises :class:`lb.NoEndpointsError` on an empty set; the
        source's own error passes through unchanged.  Thread-safe."""
        keys, endpoints, index = self._choose(exclude)
        return tuple.__new__(Pick, (keys[index], endpoints[index]))  # Pick(...), minus a call

    def _choose(
        self, exclude: Collection[str]
    ) -> tuple[Sequence[str], Sequence[Endpoint], int]:
        """The set to pick from and the index picked in it (the hot path: an O(1)
        snapshot read, one lock, no allocation beyond the answer)."""
        snapshot = self._snapshot
        if snapshot is not None:
            current = snapshot()
            keys: Sequence[str] = current.instances
            endpoints: Sequence[Endpoint] = current.endpoints
            if keys is not self._instances or current.info is not self._info:
                self._changed(current.instances, current.endpoints, current.info)
        else:
            keys, endpoints = self._read_list()
        size = len(endpoints)
        if not size:
            raise NoEndpointsError
        if self._shaping_on and self._shaped_now():
            return keys, endpoints, self._shaped(keys, size, exclude)
        if exclude or self._records:
            return keys, endpoints, self._steered(keys, size, exclude)
        with self._lock:
            return keys, endpoints, self._next_index(size)

    def report(self, pick: Pick, error: BaseException | None) -> None:
        """Book how an attempt on ``pick`` went (``error`` ``None``: it succeeded)."""
        ejections = self._ejections
        if ejections is None:
            return
        if error is None:
            if self._records:  # unlocked peek: nothing to forget is the common case
                with self._lock:
                    record = ejections.records.get(pick.instance)  # kitsd.observe
                    restored = record is not None and record.ejections > 0
                    if ejections.succeeded(pick.instance):
                        self._mark(pick.instance, 0.0)
                        if self._shaping is not None and restored:
                            self._shaping.dirty()
                if restored and HUB.observers:  # kitsd.observe
                    emit(InstanceRestored(current_service(), pick.instance))
            return
        if isinstance(error, Leaving) or not ejections.policy.counts(error):
            return  # a leaving instance (it said so) is not failing
        now = time.monotonic()
        with self._lock:
            if self._snapshot is not None and not _in_sorted(self._instances, pick.instance):
                return  # it has left: keep no record about it
            duration = ejections.failed(pick.instance, error, now, self._size,
                                        self._tag(pick.endpoint))
            if duration is not None:
                self._mark(pick.instance, now + duration)
                if self._shaping is not None:
                    self._shaping.dirty()
        if duration is not None:
            logger.debug("ejected %s for %gs after %s", pick.instance, duration,
                         type(error).__name__)
            if HUB.observers:  # kitsd.observe
                emit(InstanceEjected(current_service(), pick.instance, duration, now))

    # --- for subclasses ------------------------------------------------------------

    def _next_index(self, size: int) -> int:
        """The balancer's own choice among ``size`` endpoints; called under the lock."""
        raise NotImplementedError

    def _tag(self, endpoint: Endpoint) -> object:
        """Names the endpoint behind what :meth:`pick` handed out, without holding it."""
        return _weak(endpoint)

    def _on_change(self, instances: tuple[str, ...]) -> None:
        """The set changed to ``instances`` (called under the lock; its metadata is
        ``self._info``)."""

    def _random_index(self, size: int) -> int:
        """A random index among ``size`` for a steered pick's second round of probes."""
        return self._rng.randrange(size)

    def _choose_in(self, shape: Shape, group: int, count: int) -> int:
        """The balancer's own choice among the ``count`` members of a shaped pick's
        ``group`` (a position in it); called under the lock."""
        return self._next_index(count)

    def _candidates(self, size: int) -> list[int]:
        """The indices a scan may fall back on (all; a weighted balancer leaves out
        weight 0).  Called under the lock, rarely."""
        return list(range(size))

    # --- machinery -----------------------------------------------------------------

    def _read(self) -> tuple[Sequence[str], Sequence[Endpoint]]:
        """The instance names and endpoints to pick from (O(1) with a snapshot)."""
        if self._snapshot is not None:
            current = self._snapshot()
            instances = current.instances
            if instances is not self._instances or current.info is not self._info:
                self._changed(instances, current.endpoints, current.info)
            return instances, current.endpoints
        return self._read_list()

    def _read_list(self) -> tuple[Sequence[str], Sequence[Endpoint]]:
        """:meth:`_read` for a source without snapshots: O(n), as its list is."""
        endpoints = self._endpoints()
        keys = _IdentityKeys(endpoints)
        self._size = len(endpoints)
        ejections = self._ejections
        if ejections is not None and self._records:
            present = {identity_key(endpoint) for endpoint in endpoints}
            with self._lock:
                ejections.retain(lambda key, tag: key in present)
        return keys, endpoints

    def _changed(self, instances: tuple[str, ...], endpoints: tuple[Endpoint, ...],
                 info: Mapping[str, InstanceInfo] = NO_INFO) -> None:
        def present(key: str, tag: object) -> bool:
            # still there, with the endpoint that failed (not a new one: it came back)
            position = bisect.bisect_left(instances, key)
            return (position < len(instances) and instances[position] == key
                    and _same(tag, endpoints[position]))

        with self._lock:
            previous = self._instances
            self._instances = instances
            self._info = info
            self._size = len(instances)
            self._until = (instances, None)
            self._on_change(instances)
            if self._ejections:
                self._ejections.retain(present)
                for key, until in self._ejections.out(time.monotonic()).items():
                    self._mark(key, until)
            if self._shaping is not None and self._shaping.changed(
                    previous, instances, time.monotonic()):
                self._shaping_on = True

    def _mark(self, key: str, until: float) -> None:
        """Copy ``key``'s ejection end into the per-index view of the current set
        (under the lock): probes then read an array, not a dict of strings, which
        keeps a steered pick's memory reads few at 10,000 instances."""
        instances, view = self._until
        position = bisect.bisect_left(instances, key)
        if position == len(instances) or instances[position] != key:
            return
        if view is None:
            if not until:
                return
            view = array("d", bytes(8 * len(instances)))
            self._until = (instances, view)
        view[position] = until

    def _second_usable(self, keys: Sequence[str], first: int, second: int,
                       exclude: Collection[str], now: float) -> bool:
        """Whether a two-choice balancer may take ``second`` over ``first``: it is
        another instance, not excluded and not ejected (``_find`` relaxes those
        when it must, which is right for the first choice only).  Under the lock."""
        if second == first or keys[second] in exclude:
            return False
        ejections = self._ejections
        return not (ejections and ejections.is_ejected(keys[second], now)
                    and not ejections.panicking(now, len(keys)))

    def _now(self) -> float:
        """The clock ejection runs on."""
        return time.monotonic()

    def _panic_threshold(self) -> float:
        """Below this percentage of instances in rotation, picks ignore who is out."""
        ejections = self._ejections
        return 50.0 if ejections is None else ejections.policy.panic_threshold

    def _shaped_now(self) -> bool:
        """Whether this pick goes through the shape (the caller checked
        ``_shaping_on``): not once slow start is the only option and every ramp is
        over, which turns ``_shaping_on`` off until a ramp starts again."""
        shaping = self._shaping
        if shaping is None or not shaping.ramp_only:
            return shaping is not None
        with self._lock:  # a set change may start a ramp meanwhile: decide under the lock
            if shaping.idle(time.monotonic()):
                self._shaping_on = False
                return False
        return True

    def _shaped(self, keys: Sequence[str], size: int, exclude: Collection[str],
                avoid: int = -1) -> int:
        """A pick shaped by the issue-21 options (:mod:`lb.shaping`), falling back to
        the plain steering when the shape has nothing usable."""
        shaping = self._shaping
        assert shaping is not None  # noqa: S101 - the caller checked
        now = time.monotonic()
        with self._lock:
            shape = shaping.current(self, keys, now)
            index = shaping.choose(self, shape, exclude, now, avoid)
            if index < 0:
                index = self._find(keys, size, exclude, now, avoid)
            return index

    def _shaped_pair(self, keys: Sequence[str], size: int, exclude: Collection[str],
                     better: Callable[[int, int], int]) -> int:
        """A two-choice pick shaped by the options: two shaped choices (each drawn in
        proportion to its ramp and overlap), and ``better(first, second)`` (called
        under the lock) decides between them on the balancer's own measure.  The
        measure is not divided by the ramp again: a newcomer drawn less often but
        then judged by its few calls in flight ends up near its ramp's share."""
        shaping = self._shaping
        assert shaping is not None  # noqa: S101 - the caller checked
        now = time.monotonic()
        with self._lock:
            shape = shaping.current(self, keys, now)
            first = shaping.choose(self, shape, exclude, now)
            if first < 0:
                return self._find(keys, size, exclude, now)
            second = shaping.choose(self, shape, exclude, now, avoid=first)
            if second < 0 or second == first:
                return first
            return better(first, second)

    def _steered(self, keys: Sequence[str], size: int, exclude: Collection[str]) -> int:
        now = time.monotonic() if self._records else 0.0
        with self._lock:
            return self._find(keys, size, exclude, now)

    def _find(
        self, keys: Sequence[str], size: int, exclude: Collection[str], now: float,
        avoid: int = -1,
    ) -> int:
        """An index that is not ``avoid``, not excluded and not ejected, by probing;
        failing that, by a scan that relaxes ejection, then exclusion, then ``avoid``.
        Called under the lock."""
        ejections = self._ejections
        owner: Sequence[str]
        owner, view = self._until
        if ejections and ejections.panicking(now, size):
            ejections = None  # panic mode: too few left in rotation, ignore ejection
            owner, view = keys, None
        if owner is keys:  # the usual case: the view of this set; None: nobody ejected

            def usable(index: int) -> bool:
                return (index != avoid and (view is None or view[index] <= now)
                        and keys[index] not in exclude)
        else:  # a set older than the view (a race with a change) or a foreign source

            def usable(index: int) -> bool:
                if index == avoid:
                    return False
                key = keys[index]
                return key not in exclude and not (ejections and ejections.is_ejected(key, now))

        for _ in range(PROBES):
            index = self._next_index(size)
            if usable(index):
                return index
        for _ in range(PROBES):
            index = self._random_index(size)
            if usable(index):
                return index
        # Rare: most of the set is excluded or ejected.
        others = [index for index in self._candidates(size) if index != avoid]
        for tier in (
            [index for index in others if usable(index)],
            [index for index in others if keys[index] not in exclude],
            others,
        ):
            if tier:
                return tier[self._next_index(len(tier))]
        return avoid  # the only endpoint there is
