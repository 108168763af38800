"""Zone-aware routing with priority failover, free of I/O: the :class:`Zones` settings
and :func:`plan`, which splits calls between groups of instances.

Theory of operation
-------------------
Each instance belongs to a *group*: a priority tier (``InstanceInfo.meta``'s
``priority``, an int, 0 first, 0 when absent) and a zone (``meta``'s ``zone``;
``sd.k8s`` publishes it from EndpointSlices, Consul from ``Service.Meta``, etcd
and ZooKeeper from their JSON values).  A balancer counts, per group, the weight
of its instances (``total``) and of those in rotation (``healthy``: not ejected,
not failing an active health check), and :func:`plan` returns each group's share
of calls.  The balancer then picks a group by share and an instance in it by its
own rule (round robin, two random choices, smooth weights...), so zone awareness
works the same with every balancer — weights included (envoy#41992: Envoy's zone
aware routing does not work with its weighted round robin).

The rules are Envoy's, in three steps:

1. **Priority tiers** (Envoy's priority levels).  A tier's *health* is
   ``min(1, overprovisioning * healthy / total)``: with the default 1.4, a tier
   with 72 % of its capacity in rotation still takes every call.  Tiers are
   filled in order, each taking ``min(health, what is left)``; when the healths
   add up to less than 1, each tier takes ``health / sum`` (the load goes where
   the capacity is).  A whole datacenter going dark moves its calls to the next
   tier; it coming back moves them back.
2. **Panic** (Envoy's ``healthy_panic_threshold``).  When the healths add up to
   less than ``panic_threshold`` percent, the health information is more likely
   wrong than the instances are down, and acting on it would pile every call
   onto the few left: each tier then spreads its share over all of its instances,
   in rotation or not (:attr:`Plan.panic`).
3. **Zones within a tier** (Envoy's zone-aware routing).  With ``u`` the share
   of a tier's healthy capacity in each zone and ``c`` the share of *callers*
   in each zone (``callers=``, or by default the share of the tier's instances:
   a service deployed like its callers), the local zone keeps every call while
   ``u[local] >= c[local]``.  Below that it keeps ``u[local] / c[local]`` of them
   and the rest *spills* to the other zones in proportion to their spare
   capacity ``u[z] - c[z]``.  So a zone that loses instances sends the excess
   over (its last instance is not left carrying the whole zone's calls), a zone
   that dies sends all, and every instance ends up with its fair share across
   all callers.  Without a local zone (``local=None``) a tier splits by the
   zones' effective capacity, ``min(total, overprovisioning * healthy)``
   (Envoy's locality-weighted balancing).

Shares sum to 1 (or every group is empty).  :func:`plan` is O(number of groups)
and allocation-light; balancers call it only when their set or its health
changes, never per pick.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

from kitsd.core import validate
from kitsd.core.errors import MisuseError, WrongTypeError, shown_value

__all__ = ["DEFAULT_PRIORITY", "Group", "Plan", "Zones", "plan"]

#: The priority of an instance whose metadata names none (or an unusable one).
DEFAULT_PRIORITY = 0

_NO_CALLERS: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Zones:
    """Prefer the caller's zone, spill to others when it lacks capacity, fail over
    between priority tiers (see the module docstring for the rules).

    * ``local``: the caller's zone (``None``: no preference, priority tiers only).
    * ``key`` (default ``"zone"``): the ``InstanceInfo.meta`` key holding an
      instance's zone (``sd.k8s`` publishes ``zone``).
    * ``priority_key`` (default ``"priority"``): the ``meta`` key holding an
      instance's priority tier, a decimal int >= 0, lower first; missing or
      unusable means 0.
    * ``overprovisioning`` (>= 1, default 1.4, Envoy's): how much spare capacity a
      tier is assumed to have; it keeps all its calls while ``1/overprovisioning``
      of its capacity is in rotation.
    * ``panic_threshold`` (percent, default 50): below this much health overall,
      health is ignored (every instance of a tier takes calls).
    * ``callers``: the share of callers per zone (any non-negative numbers, e.g.
      instance counts), when they are not deployed like the service itself.

    Give it to a balancer (``zones=``).  Frozen, shareable, thread-safe.  Raises
    :class:`~kitsd.core.errors.WrongTypeError` / :class:`~kitsd.core.errors.MisuseError`
    naming a bad setting.
    """

    local: str | None
    key: str = "zone"
    priority_key: str = "priority"
    overprovisioning: float = 1.4
    panic_threshold: float = 50.0
    callers: Mapping[str, float] = field(default_factory=lambda: _NO_CALLERS)

    def __post_init__(self) -> None:
        if self.local is not None and (not isinstance(self.local, str) or not self.local):
            raise _wrong("local", "a non-empty zone name or None", self.local)
        for name in ("key", "priority_key"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise _wrong(name, "a non-empty metadata key", value)
        validate.number("overprovisioning", self.overprovisioning, minimum=1.0)
        validate.number("panic_threshold", self.panic_threshold, minimum=0.0, maximum=100.0)
        if not isinstance(self.callers, Mapping):
            raise _wrong("callers", "a mapping of zone -> share", self.callers)
        checked: dict[str, float] = {}
        for zone, share in self.callers.items():
            if not isinstance(zone, str) or not zone:
                raise _wrong("callers", "a mapping with non-empty zone names as keys", zone)
            checked[zone] = validate.number(f"callers[{zone!r}]", share, minimum=0.0)
        if checked:
            if self.local is None or self.local not in checked or not checked[self.local]:
                raise MisuseError(f"callers must give the local zone {self.local!r} a share > 0")
            object.__setattr__(self, "callers", MappingProxyType(checked))

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}={getattr(self, name)!r}"
            for name in ("key", "priority_key", "overprovisioning", "panic_threshold")
            if getattr(self, name) != Zones.__dataclass_fields__[name].default)
        callers = f", callers={dict(self.callers)!r}" if self.callers else ""
        return f"Zones({self.local!r}{extra}{callers})"

    def zone_of(self, meta: Mapping[str, str]) -> str:
        """An instance's zone from its metadata (``""``: unknown)."""
        return meta.get(self.key, "")

    def priority_of(self, meta: Mapping[str, str]) -> int | None:
        """An instance's priority from its metadata: :data:`DEFAULT_PRIORITY` when it
        names none, ``None`` when the value is unusable (the caller decides how to
        say so, then uses the default)."""
        text = meta.get(self.priority_key)
        if text is None:
            return DEFAULT_PRIORITY
        text = text.strip()
        if not text.isdigit() or not text.isascii() or len(text) > 6:
            return None
        return int(text)


class Group(NamedTuple):
    """The instances of one priority tier and zone, as :func:`plan` sees them:
    their weight in all (``total`` > 0) and in rotation (``healthy``)."""

    priority: int
    zone: str
    total: float
    healthy: float


class Plan(NamedTuple):
    """What :func:`plan` decided: each group's share of calls (same order as the
    groups given, summing to 1 unless there is no group), and per group whether its
    picks ignore health (panic)."""

    shares: tuple[float, ...]
    panic: tuple[bool, ...]


def plan(groups: Sequence[Group], zones: Zones) -> Plan:
    """Split calls between ``groups`` under ``zones``' rules (the module docstring)."""
    if not groups:
        return Plan((), ())
    tiers: dict[int, list[int]] = {}
    for index, group in enumerate(groups):
        tiers.setdefault(group.priority, []).append(index)
    order = sorted(tiers)
    over = zones.overprovisioning
    health: list[float] = []
    for priority in order:
        members = tiers[priority]
        total = sum(groups[index].total for index in members)
        healthy = sum(groups[index].healthy for index in members)
        health.append(min(1.0, over * healthy / total) if total > 0 else 0.0)
    overall = sum(health)
    panic = overall * 100.0 < zones.panic_threshold - 1e-9
    loads = _tier_loads(health, overall)
    shares = [0.0] * len(groups)
    for priority, load in zip(order, loads, strict=True):
        if load <= 0.0:
            continue
        members = tiers[priority]
        split = _zone_split([groups[index] for index in members], zones, panic)
        for index, part in zip(members, split, strict=True):
            shares[index] = load * part
    return Plan(tuple(shares), (panic,) * len(groups))


def _tier_loads(health: list[float], overall: float) -> list[float]:
    """Each tier's share: filled in order up to its health, normalised when the
    healths add up to less than 1, all on the first tier when none has any."""
    if overall <= 0.0:
        return [1.0] + [0.0] * (len(health) - 1)
    if overall < 1.0:
        return [tier / overall for tier in health]
    loads = []
    left = 1.0
    for tier in health:
        take = min(tier, left)
        loads.append(take)
        left -= take
    return loads


def _zone_split(groups: Sequence[Group], zones: Zones, panic: bool) -> list[float]:
    """The shares, summing to 1, of a tier's zone groups."""
    total = sum(group.total for group in groups)
    if panic:
        capacity = [group.total for group in groups]
    else:
        capacity = [min(group.total, zones.overprovisioning * group.healthy) for group in groups]
    available = sum(capacity)
    if available <= 0.0:  # nothing in rotation (the first tier when all are down)
        capacity, available = [group.total for group in groups], total
    local = zones.local
    here = [index for index, group in enumerate(groups) if group.zone == local] if local else []
    if not here:
        return [part / available for part in capacity]
    # u: the tier's capacity in rotation by zone; c: its callers by zone
    healthy = [group.total if panic else group.healthy for group in groups]
    healthy_sum = sum(healthy)
    if healthy_sum <= 0.0:
        healthy, healthy_sum = [group.total for group in groups], total
    callers = zones.callers
    if callers:
        wanted = [callers.get(group.zone, 0.0) for group in groups]
    else:
        wanted = [group.total for group in groups]
    wanted_sum = sum(wanted)
    u_local = sum(healthy[index] for index in here) / healthy_sum
    c_local = sum(wanted[index] for index in here) / wanted_sum
    shares = [0.0] * len(groups)
    local_share = 1.0 if u_local >= c_local else u_local / c_local
    if local_share > 0.0:
        local_capacity = sum(healthy[index] for index in here)
        for index in here:  # the local zone's groups (one, unless zones repeat)
            shares[index] = local_share * healthy[index] / local_capacity
    if local_share >= 1.0:
        return shares
    spare = [0.0 if index in here
             else max(0.0, healthy[index] / healthy_sum - wanted[index] / wanted_sum)
             for index in range(len(groups))]
    spare_sum = sum(spare)
    if spare_sum <= 0.0:  # rounding: spread the rest by capacity in rotation
        spare = [0.0 if index in here else healthy[index] for index in range(len(groups))]
        spare_sum = sum(spare)
        if spare_sum <= 0.0:
            return [part / available for part in capacity]
    rest = 1.0 - local_share
    for index, part in enumerate(spare):
        if part:
            shares[index] = rest * part / spare_sum
    return shares


def _wrong(name: str, what: str, value: object) -> WrongTypeError:
    return WrongTypeError(f"{name} must be {what}, not {shown_value(value)}")
