"""Shaping a balancer's picks: slow start, zones with priority failover, active health
checks and deterministic subsetting — the same for every built-in balancer.

Theory of operation
-------------------
A balancer given any of ``slow_start=``, ``zones=``, ``health_check=`` or
``subset=`` keeps a :class:`Shaping`: the state those options need, owned by
that balancer alone (the ramps of :class:`lb.slow_start.Warming`, the instances
its health checks found unhealthy, its subset).  From it and the endpoint set
it builds a :class:`Shape` — under the balancer's lock, when something it
depends on changed, never per pick:

* the **candidates**: the instances of the subset (:func:`lb.aperture.subset`;
  all of them without one), each with its *overlap* weight;
* the **groups**: candidates by priority tier and zone, each group's share of
  calls from :func:`lb.zones.plan` (one group holding every candidate, share 1,
  without ``zones=``), counting as healthy the instances neither ejected nor
  failing their health check, by weight for :class:`lb.Weighted`;
* which instances are **out** (ejected or unhealthy), and when that view expires
  (the first ejection end, the last ramp's end; a peer rank is read again every
  second, and a new subset built only if it moved).

A pick then draws a group by share (a binary search over a handful of numbers),
lets the balancer choose within the group by its own rule (round robin's
counter, two random choices, the smooth weighted schedule, the hash ring), and
keeps the choice with probability ``factor / max factor`` of the group, where
``factor`` is the overlap times the slow-start ramp *read at the time of the
pick* — the ramp is continuous, so no share ever jumps.  A choice that is
excluded (it failed earlier in the call), out, or not kept is drawn again —
the balancer's own choice ``PROBES / 2`` times, then random members of the group
``PROBES / 2`` times (a run of ramping neighbours in round robin's order costs
no scan) —; then any usable candidate of the group, then of any group; then
the balancer's plain fallback, which lets ejection and health give way when
nothing else is left.  A *retry* (the call's earlier attempts failed)
goes to a group none of them went to, when one has capacity in rotation
(Envoy's ``previous_priorities`` retry predicate, for zones too): a zone that
has just died, before any ejection says so, cannot take every attempt of a
call.

The options cost nothing when not given: a balancer without them never builds a
shape and keeps its plain O(1) pick; nor does slow start alone while no instance
ramps (:meth:`Shaping.idle`).  With them a pick stays O(1) in the number of
instances (a few probes); a rebuild is O(instances) and happens on a change.
"""

from __future__ import annotations

import bisect
import logging
import math
import weakref
from array import array
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from kitsd.core import validate
from kitsd.core.observe import HUB, InstanceRestored, current_service, emit
from kitsd.lb.aperture import Aperture, subset
from kitsd.lb.health_check import HealthCheck
from kitsd.lb.health_checkers import (
    AsyncHealthCheckers,
    HealthCheckers,
    Subscription,
    check_health_check,
)
from kitsd.lb.health_checkers_policy import Change
from kitsd.lb.slow_start import SlowStart, Warming
from kitsd.lb.weighted_policy import smooth_schedule
from kitsd.lb.zones import Group, Zones, plan
from kitsd.sd.instance_info import DEFAULT_INFO, NO_INFO, InstanceInfo

if TYPE_CHECKING:
    from kitsd.lb.pool import Pool

__all__ = ["BalancingOptions", "Shape", "Shaping", "check_options"]

logger = logging.getLogger(__name__)

#: Probes of the shaped kind before a pick falls back to scanning.
PROBES = 16
#: How often a shape is rebuilt while ramps run or a peer rank may move (seconds).
REFRESH = 1.0
#: A golden-ratio multiplier: spreads a key's hash over [0, 1) for slow start's
#: per-key admission in a consistent-hash ring.
_GOLDEN = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1


class BalancingOptions(TypedDict, total=False):
    """The options every built-in balancer takes beyond its own (issue 21).

    * ``slow_start``: an :class:`lb.SlowStart` — new instances ramp up.
    * ``zones``: an :class:`lb.Zones` — prefer the caller's zone, fail over between
      priority tiers.
    * ``health_check``: an :class:`lb.HttpCheck` or :class:`lb.GrpcCheck`, run by
    * ``health_checkers``: the :class:`lb.HealthCheckers` (probes on threads) or
      :class:`lb.AsyncHealthCheckers` (probes on an event loop) that owns the
      probers (required with ``health_check``; close it when done).
    * ``subset``: an :class:`lb.Aperture` — talk to a deterministic subset.
    """

    slow_start: SlowStart | None
    zones: Zones | None
    health_check: HealthCheck | None
    health_checkers: HealthCheckers | AsyncHealthCheckers | None
    subset: Aperture | None


def check_options(options: Mapping[str, object], owner: str) -> BalancingOptions:
    """The options checked: ``TypeError`` for an unknown name (naming ``owner``, the
    balancer) or a value of the wrong kind, naming the argument."""
    validate.keywords(owner, options, BalancingOptions)
    checked: BalancingOptions = {}
    kinds: dict[str, tuple[type | tuple[type, ...], str]] = {
        "slow_start": (SlowStart, "an lb.SlowStart"),
        "zones": (Zones, "an lb.Zones"),
        "health_checkers": ((HealthCheckers, AsyncHealthCheckers),
                            "an lb.HealthCheckers or lb.AsyncHealthCheckers"),
        "subset": (Aperture, "an lb.Aperture"),
    }
    for name, (kind, what) in kinds.items():
        value = options.get(name)
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"{name} must be {what} or None, not {type(value).__name__}")
        if value is not None:
            checked[name] = value  # type: ignore[literal-required]
    check = check_health_check(options.get("health_check"))
    if check is not None:
        if checked.get("health_checkers") is None:
            raise TypeError("health_checkers must be given with health_check: the "
                            "lb.HealthCheckers (or lb.AsyncHealthCheckers) that runs (and "
                            "on close stops) the probes")
        checked["health_check"] = check
    elif checked.get("health_checkers") is not None:
        raise TypeError("health_checkers is given without a health_check to run")
    return checked


class Shape:
    """One build of a balancer's shaping state for one endpoint set (see the module
    docstring).  Read under the balancer's lock."""

    __slots__ = ("blocked", "capacity", "cumulative", "drawn", "expires", "first_start",
                 "group_of", "groups", "keys", "overlap", "panic", "peak", "rank_check",
                 "schedules", "starts", "weights")

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = keys
        self.groups: list[array[int]] = []  # every group with members
        self.capacity: list[float] = []  # each group's weight in rotation
        self.drawn: list[int] = []  # the groups with a share of calls...
        self.cumulative: list[float] = []  # ... and their cumulative shares
        self.panic = False
        self.blocked: bytearray | None = None  # 1: out of rotation (ejected, unhealthy)
        self.expires = math.inf
        self.overlap: array[float] | None = None  # subset weight by index; None: all 1
        self.starts: array[float] | None = None  # ramp starts by index (nan: warm)
        # per group: its largest overlap, and the earliest ramp start of its members
        # (nan: a member is warm), which make the largest factor at any time
        self.peak: list[float] = []
        self.first_start: list[float] = []
        self.rank_check = math.inf  # when to read a peer rank again
        self.group_of: array[int] | None = None  # index -> group (-1: not a candidate)
        self.weights: array[int] | None = None  # Weighted: the instances' weights
        self.schedules: dict[int, array[int] | None] = {}

    def factor(self, index: int, now: float, slow_start: SlowStart | None) -> float:
        """The overlap times the ramp of ``index`` at ``now``."""
        factor = 1.0 if self.overlap is None else self.overlap[index]
        starts = self.starts
        if starts is not None and slow_start is not None:
            start = starts[index]
            if start == start:  # not nan: it ramps
                factor *= slow_start.factor(now - start)
        return factor

    def group(self, draw: float) -> int:
        """The group a uniform ``draw`` in [0, 1) falls in (by share)."""
        cumulative = self.cumulative
        position = bisect.bisect_right(cumulative, draw)
        return self.drawn[min(position, len(cumulative) - 1)]

    def schedule(self, group: int) -> array[int] | None:
        """The smooth weighted schedule over ``group``'s members (positions in it);
        ``None`` when their weights are all equal (then it is round robin)."""
        if group in self.schedules:
            return self.schedules[group]
        weights = self.weights
        members = self.groups[group]
        found = None
        if weights is not None and len({weights[index] for index in members}) > 1:
            found = smooth_schedule([weights[index] for index in members])
        self.schedules[group] = found
        return found

    def top(self, group: int, now: float, slow_start: SlowStart | None) -> float:
        """The largest factor in ``group`` at ``now`` (what a kept choice is scaled by)."""
        top = self.peak[group]
        first = self.first_start[group]
        if first == first and slow_start is not None:  # every member ramps
            top *= slow_start.factor(now - first)
        return top or 1.0

    def usable(self, index: int, exclude: Collection[str]) -> bool:
        blocked = self.blocked
        return (self.keys[index] not in exclude
                and (self.panic or blocked is None or not blocked[index]))


class Shaping:
    """The shaping state one balancer owns (see the module docstring).  Called under
    the balancer's lock, except the health listener, which takes it."""

    def __init__(self, options: BalancingOptions, owner: Pool[Any]) -> None:
        self.slow_start = options.get("slow_start")
        self.zones = options.get("zones")
        self.aperture = options.get("subset")
        self.check = options.get("health_check")
        self.warming = None if self.slow_start is None else Warming(self.slow_start)
        #: slow start alone: once no ramp runs, a shaped pick is the plain one
        self.ramp_only = (self.warming is not None and self.zones is None
                          and self.aperture is None and self.check is None)
        self.unhealthy: set[str] = set()
        self._owner = weakref.ref(owner)
        self._shape: Shape | None = None
        self._dirty = True
        self._subset: tuple[Sequence[str], tuple[int, int], list[tuple[int, float]]] | None = None
        self._subscription: Subscription | None = None
        checkers = options.get("health_checkers")
        if self.check is not None and checkers is not None:
            self._subscription = checkers.subscribe(self.check, _listener(weakref.ref(self)))
        self._bad_priorities: set[str] = set()

    # --- changes --------------------------------------------------------------------------

    def changed(self, previous: Sequence[str], instances: tuple[str, ...], now: float) -> bool:
        """The set changed (under the balancer's lock); whether a ramp started."""
        started = False
        if self.warming is not None:
            started = bool(self.warming.update(previous, instances, now))
        if self.unhealthy:
            self.unhealthy.intersection_update(instances)
        if self._subscription is not None:
            self._subscription.watch(instances)
        self._dirty = True
        return started

    def prime(self, instances: Sequence[str]) -> None:
        """Start watching ``instances``' health before the first pick (construction)."""
        if self._subscription is not None:
            self._subscription.watch(instances)

    def idle(self, now: float) -> bool:
        """Whether picks at ``now`` may skip the shape: slow start is the only option
        and no ramp runs (the shape would give the balancer's plain choice).
        Under the balancer's lock."""
        warming = self.warming
        return self.ramp_only and warming is not None and now >= warming.ends

    def dirty(self) -> None:
        """Something the shape depends on changed (an ejection began or ended)."""
        self._dirty = True

    def warmth(self, size: int, now: float) -> float:
        """The mean slow-start factor of a set of ``size`` (1.0 without slow start)."""
        warming = self.warming
        if warming is None or not warming.warming(now):
            return 1.0
        return warming.capacity(size, now)

    def heard(self, instance: str, passed: bool, started: float, change: Change) -> None:
        """A health check's result (a prober's thread): take the instance out or bring
        it back, restart its ramp, and un-eject it when the check covers the cause."""
        owner = self._owner()
        subscription = self._subscription
        if owner is None or subscription is None:
            return
        restored = False
        with owner._lock:
            if change is Change.UNHEALTHY:
                self.unhealthy.add(instance)
                self._dirty = True
            elif change in (Change.HEALTHY, Change.RECOVERED) and instance in self.unhealthy:
                self.unhealthy.discard(instance)
                self._dirty = True
                if change is Change.RECOVERED and self.warming is not None:
                    self.warming.restart(instance, started)
                    owner._shaping_on = True
            ejections = owner._ejections
            if passed and ejections:
                now = owner._now()
                ejection = ejections.ejection(instance, now)
                if ejection is not None and subscription.unejects(instance, *ejection):
                    ejections.uneject(instance, now)
                    owner._mark(instance, 0.0)
                    self._dirty = True
                    restored = True
        if restored:
            logger.debug("health check brought back %s", instance)
            if HUB.observers:  # kitsd.observe
                emit(InstanceRestored(current_service(), instance))

    # --- the shape ------------------------------------------------------------------------

    def current(self, owner: Pool[Any], keys: Sequence[str], now: float) -> Shape:
        """The shape for ``keys`` at ``now``, rebuilt if stale (under the lock)."""
        shape = self._shape
        if shape is None or self._dirty or shape.keys is not keys or now >= shape.expires:
            shape = self._shape = self._build(owner, keys, now)
            self._dirty = False
        elif now >= shape.rank_check:
            aperture = self.aperture
            cached = self._subset
            if aperture is not None and cached is not None and (
                    aperture.coordinates() != cached[1]):
                shape = self._shape = self._build(owner, keys, now)  # a peer came or went
            else:
                shape.rank_check = now + REFRESH
        return shape

    def _candidates(self, keys: Sequence[str]) -> tuple[list[int], array[float] | None]:
        """The subset (all indices without one) and each index's overlap."""
        aperture = self.aperture
        size = len(keys)
        if aperture is None:
            return list(range(size)), None
        coordinates = aperture.coordinates()
        cached = self._subset
        if cached is None or cached[0] is not keys or cached[1] != coordinates:
            cached = (keys, coordinates, list(subset(*coordinates, size, aperture.size)))
            self._subset = cached
        overlap = array("d", bytes(8 * size))
        members = []
        for index, weight in cached[2]:
            overlap[index] = weight
            members.append(index)
        return members, overlap

    def _build(self, owner: Pool[Any], keys: Sequence[str], now: float) -> Shape:
        shape = Shape(keys)
        size = len(keys)
        info: Mapping[str, InstanceInfo] = owner._info if owner._snapshot is not None else NO_INFO
        members, shape.overlap = self._candidates(keys)
        uses_weights = owner._uses_weights
        if uses_weights:
            weights = array("q", (info.get(key, DEFAULT_INFO).weight for key in keys)) \
                if info else array("q", [1]) * size
            shape.weights = weights
            members = [index for index in members if weights[index] > 0]
        # out of rotation: ejected (the balancer's per-index view) or unhealthy
        blocked: bytearray | None = None
        view_owner, view = owner._until
        if view is not None and view_owner is keys:
            soonest = math.inf
            for index in members:
                until = view[index]
                if until > now:
                    if blocked is None:
                        blocked = bytearray(size)
                    blocked[index] = 1
                    soonest = min(soonest, until)
            shape.expires = soonest
        elif owner._records:
            ejections = owner._ejections
            if ejections is not None:
                for index in members:
                    if ejections.is_ejected(keys[index], now):
                        if blocked is None:
                            blocked = bytearray(size)
                        blocked[index] = 1
                shape.expires = now + REFRESH
        if self.unhealthy:
            for index in members:
                if keys[index] in self.unhealthy:
                    if blocked is None:
                        blocked = bytearray(size)
                    blocked[index] = 1
        shape.blocked = blocked
        # groups, and their shares
        zones = self.zones
        if zones is None:
            grouped: dict[tuple[int, str], list[int]] = {(0, ""): members}
        else:
            grouped = {}
            for index in members:
                meta = info.get(keys[index], DEFAULT_INFO).meta if info else {}
                priority = zones.priority_of(meta)
                if priority is None:
                    if keys[index] not in self._bad_priorities:
                        self._bad_priorities.add(keys[index])
                        logger.warning("instance %s: unusable %r in its metadata; priority 0",
                                       keys[index], zones.priority_key)
                    priority = 0
                grouped.setdefault((priority, zones.zone_of(meta)), []).append(index)
        order = sorted(grouped)
        plan_groups = []
        overlap = shape.overlap
        weights_of = shape.weights
        for key in order:
            total = healthy = 0.0
            for index in grouped[key]:
                weight = (1.0 if overlap is None else overlap[index]) * (
                    1.0 if weights_of is None else float(weights_of[index]))
                total += weight
                if blocked is None or not blocked[index]:
                    healthy += weight
            plan_groups.append(Group(key[0], key[1], total, healthy))
        if zones is not None:
            decided = plan(plan_groups, zones)
            shares, panic = list(decided.shares), bool(decided.panic and decided.panic[0])
        else:
            shares = [1.0] * len(order)
            total_weight = plan_groups[0].total if plan_groups else 0.0
            healthy_weight = plan_groups[0].healthy if plan_groups else 0.0
            threshold = owner._panic_threshold()
            panic = bool(total_weight) and healthy_weight * 100.0 < threshold * total_weight - 1e-9
        cumulative: list[float] = []
        running = 0.0
        for key, share, counted in zip(order, shares, plan_groups, strict=True):
            if not grouped[key]:
                continue
            if share > 0.0:
                running += share
                shape.drawn.append(len(shape.groups))
                cumulative.append(running)
            shape.groups.append(array("q", grouped[key]))
            shape.capacity.append(counted.total if panic else counted.healthy)
        if running > 0.0:
            shape.cumulative = [part / running for part in cumulative]
        shape.panic = panic
        # ramps
        warming = self.warming
        if warming is not None and warming.warming(now):
            starts = warming.starts
            ramps = array("d", [math.nan]) * size
            latest = -math.inf
            for index in members:
                start = starts.get(keys[index])
                if start is not None:
                    ramps[index] = start
                    latest = max(latest, start)
            shape.starts = ramps
            if latest > -math.inf and self.slow_start is not None:
                # past the last ramp's end the plain path serves again
                shape.expires = min(shape.expires, latest + self.slow_start.window)
        if self.aperture is not None and self.aperture.rank is not None:
            shape.rank_check = now + REFRESH
        for group in shape.groups:
            overlap = shape.overlap
            shape.peak.append(1.0 if overlap is None else max(overlap[index] for index in group))
            ramps_of = shape.starts
            if ramps_of is None:
                shape.first_start.append(math.nan)
            else:
                starts_here = [ramps_of[index] for index in group]
                warm = any(start != start for start in starts_here)
                shape.first_start.append(math.nan if warm else min(starts_here))
        shape.group_of = None
        return shape

    def group_of(self, shape: Shape) -> array[int]:
        """``index -> group`` for ``shape`` (-1: not a candidate), built on first use."""
        if shape.group_of is None:
            found = array("q", [-1]) * len(shape.keys)
            for number, group in enumerate(shape.groups):
                for index in group:
                    found[index] = number
            shape.group_of = found
        return shape.group_of

    # --- picks ----------------------------------------------------------------------------

    def choose(self, owner: Pool[Any], shape: Shape, exclude: Collection[str], now: float,
               avoid: int = -1) -> int:
        """A shaped choice (see the module docstring), or -1: the caller falls back to
        its plain steering.  Under the lock."""
        groups = shape.groups
        if not shape.drawn:
            return -1
        rng = owner._rng
        number = self._retry_group(shape, exclude, rng.random()) if exclude else -1
        if number < 0:
            number = shape.group(rng.random()) if len(shape.drawn) > 1 else shape.drawn[0]
        members = groups[number]
        slow_start = self.slow_start
        top = shape.top(number, now, slow_start)
        plain = shape.overlap is None and shape.starts is None
        count = len(members)
        for probe in range(PROBES):
            # the balancer's own choice first; then random positions, so that a run of
            # ramping or ejected neighbours (round robin walks in order) costs no scan
            position = (owner._choose_in(shape, number, count) if probe < PROBES // 2
                        else rng.randrange(count))
            index = members[position]
            if index == avoid or not shape.usable(index, exclude):
                continue
            if plain:
                return index
            factor = shape.factor(index, now, slow_start)
            if factor >= top or rng.random() * top < factor:
                return index
        for candidates in (members, *(group for group in groups if group is not members)):
            usable = [index for index in candidates
                      if index != avoid and shape.usable(index, exclude)]
            if usable:
                return usable[rng.randrange(len(usable))]
        return -1

    def hashed(self, owner: Pool[Any], shape: Shape, walk: Callable[[], Iterable[int]],
               position: int, exclude: Collection[str], now: float) -> int:
        """A consistent-hash choice: the first instance on the ring walk from the key's
        ``position`` that is in the drawn group, usable, and admitted by its ramp (a
        key-derived draw, so a key's instance is stable); -1 when none is."""
        if not shape.drawn:
            return -1
        draw_group = owner._rng.random()
        number = self._retry_group(shape, exclude, draw_group) if exclude else -1
        if number < 0:
            number = shape.group(draw_group) if len(shape.drawn) > 1 else shape.drawn[0]
        group_of = self.group_of(shape)
        draw = ((position * _GOLDEN) & _MASK) / float(1 << 64)
        slow_start = self.slow_start
        top = shape.top(number, now, slow_start)
        for index in walk():
            if group_of[index] != number or not shape.usable(index, exclude):
                continue
            factor = shape.factor(index, now, slow_start)
            if factor >= top or draw * top < factor:
                return index
        return -1

    def _retry_group(self, shape: Shape, exclude: Collection[str], draw: float) -> int:
        """For a retry: a group none of the failed attempts went to, with capacity in
        rotation — by share if some such group has one, else by capacity (Envoy's
        retry predicates, for zones and tiers: a sick zone cannot take every attempt
        of a call); -1 when there is none."""
        keys = shape.keys
        group_of = self.group_of(shape)
        tried = set()
        for key in exclude:
            position = bisect.bisect_left(keys, key)
            if position < len(keys) and keys[position] == key and group_of[position] >= 0:
                tried.add(group_of[position])
        if not tried:
            return -1
        shares: list[tuple[int, float]] = []
        previous = 0.0
        for number, cumulative in zip(shape.drawn, shape.cumulative, strict=True):
            if number not in tried:
                shares.append((number, cumulative - previous))
            previous = cumulative
        if not shares:
            shares = [(number, capacity) for number, capacity in enumerate(shape.capacity)
                      if number not in tried and capacity > 0.0]
        total = sum(weight for _, weight in shares)
        if total <= 0.0:
            return -1
        point = draw * total
        for number, weight in shares:
            point -= weight
            if point < 0.0:
                return number
        return shares[-1][0]

    def close(self) -> None:
        """Stop watching health (the balancer is done with it)."""
        if self._subscription is not None:
            self._subscription.close()


def _listener(shaping: weakref.ref[Shaping]) -> Callable[[str, bool, float, Change], None]:
    """A health listener that holds its shaping weakly, so the prober does not keep a
    collected balancer's state alive."""

    def heard(instance: str, passed: bool, started: float, change: Change) -> None:
        target = shaping()
        if target is not None:
            target.heard(instance, passed, started, change)

    return heard
