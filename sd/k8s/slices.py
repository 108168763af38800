"""The EndpointSlice view: which instances of a Service to call, from its slices.

Pure: no I/O, no threads, no clock.  The watch in :mod:`sd.k8s.watch` feeds it the
slices the API server lists and the changes it streams, and asks it what changed.

Theory of operation
-------------------
A Service's endpoints are spread over EndpointSlices (label
``kubernetes.io/service-name``; 100 endpoints a slice by default).  Each slice
has an ``addressType``, a list of ``ports`` shared by its endpoints, and
``endpoints``, each with ``addresses`` (fungible: the first is used, as
kube-proxy does), ``conditions`` and topology (``zone``, ``nodeName``,
``hints.forZones``).

**One endpoint of one slice** becomes one instance ``address:port`` for the
chosen port (:class:`PortChoice`: a name, a number, or the slice's only port)
with a :class:`State` read from its conditions as kube-proxy reads them
(a missing ``ready`` or ``serving`` means true, a missing ``terminating`` false)::

    conditions                         State        served
    ready, not terminating             READY        yes: new calls go here
    terminating, serving               DRAINING     only while no instance is READY
    terminating, not serving           NOT_SERVING  no
    not ready, not terminating         NOT_SERVING  no

A terminating endpoint stops receiving new calls at once, even when its
``ready`` is still true (a Service with ``publishNotReadyAddresses``): calls
already in flight are the caller's, and finish.  When *no* instance is READY,
the DRAINING ones are served rather than none (kube-proxy's fallback to
serving-terminating endpoints).

**The same instance in several slices** (an endpoint moving between slices
while the controller splits or merges them, or a pod IP reused) is one
instance: its state is the best of its copies (READY > DRAINING >
NOT_SERVING), its metadata that copy's (the first slice by name on a tie).
So a move shows no change at all whichever of the two slice updates arrives
first, as long as the endpoint is in one of them at every moment (the
EndpointSlice controller creates and updates before it deletes).

**Other things handled, not crashed on**: slices of an address type not asked
for (FQDN by default) are skipped; an endpoint without addresses or with an
address that is not one is skipped with a warning; a slice without the chosen
port contributes nothing; a slice whose ports make the choice ambiguous (no
port named and several offered) contributes nothing and makes
:attr:`SliceView.problem` say so, as does a port name that no slice offers.

Cost
----
A slice change costs O(endpoints of that slice), never O(all endpoints): the
view keeps every instance's copies, its best state and how many instances are
in each state, and :meth:`SliceView.changes` reports only the instances that
joined, left or whose metadata changed since the last call -- except when the
view switches between serving READY and serving DRAINING instances, which
changes everything.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from kitsd.core.errors import clip
from kitsd.sd.instance import join_host_port
from kitsd.sd.instance_info import DEFAULT_INFO, NO_INFO, InstanceInfo

__all__ = [
    "ADDRESS_TYPES",
    "DEFAULT_ADDRESS_TYPES",
    "META_FOR_ZONES",
    "META_NODE",
    "META_POD",
    "META_ZONE",
    "Change",
    "PortChoice",
    "SliceView",
    "State",
    "endpoint_state",
]

logger = logging.getLogger(__name__)

#: ``InstanceInfo.meta`` keys the view fills (absent when the slice does not say).
META_ZONE: Final = "zone"
"""The endpoint's zone (``zone``), or else its ``hints.forZones`` joined by commas."""
META_NODE: Final = "node"
"""The name of the node the endpoint runs on (``nodeName``)."""
META_POD: Final = "pod"
"""The pod behind the endpoint (``targetRef.name`` of a ``Pod`` target)."""
META_FOR_ZONES: Final = "for-zones"
"""Topology-aware routing hints: the zones that should use this endpoint, comma-joined."""

ADDRESS_TYPES: Final = frozenset({"IPv4", "IPv6", "FQDN"})
"""The EndpointSlice ``addressType`` values."""
DEFAULT_ADDRESS_TYPES: Final = ("IPv4", "IPv6")
"""Address types used unless told otherwise (kube-proxy ignores FQDN slices too)."""


class State(enum.IntEnum):
    """How an instance may be used (see the module docstring); higher is better."""

    NOT_SERVING = 0
    DRAINING = 1
    READY = 2


def endpoint_state(conditions: object) -> State:
    """The :class:`State` of an endpoint with these ``conditions`` (a mapping, or
    anything else for none): missing ``ready``/``serving`` mean true, missing
    ``terminating`` false, as kube-proxy reads them."""
    if not isinstance(conditions, dict):
        if not isinstance(conditions, Mapping):
            return State.READY
        conditions = dict(conditions)
    return _STATES[conditions.get("ready") is not False, conditions.get("serving") is not False,
                   conditions.get("terminating") is True]


# (ready, serving, terminating) -> State: the table of the module docstring
_STATES: Final = {
    (ready, serving, terminating): (
        (State.DRAINING if serving else State.NOT_SERVING) if terminating
        else (State.READY if ready else State.NOT_SERVING))
    for ready in (True, False) for serving in (True, False) for terminating in (True, False)
}


@dataclass(frozen=True, slots=True)
class PortChoice:
    """Which of a slice's ports the instances use: by ``name`` (a str), by ``number``
    (the endpoints' port, i.e. the pods' target port), or the only one (neither)."""

    name: str | None = None
    number: int | None = None

    @classmethod
    def of(cls, port: str | int | None) -> PortChoice:
        """The choice for a user's ``port`` argument (checked by the caller)."""
        if port is None:
            return cls()
        if isinstance(port, int):
            return cls(number=port)
        return cls(name=port)

    def pick(self, ports: object) -> int | str:
        """The port number to use from a slice's ``ports`` list, or a string saying why
        none can be used (``""``: the slice has endpoints for other ports only)."""
        offered: list[tuple[str, int]] = []
        if isinstance(ports, list):
            for port in ports:
                if not isinstance(port, Mapping):
                    continue
                number = port.get("port")
                if isinstance(number, int) and not isinstance(number, bool) \
                        and 1 <= number <= 65535:
                    name = port.get("name")
                    offered.append((name if isinstance(name, str) else "", number))
        if self.name is not None:
            found = [number for name, number in offered if name == self.name]
        elif self.number is not None:
            found = [number for _, number in offered if number == self.number]
        elif len(offered) == 1:
            return offered[0][1]
        elif not offered:
            return "it lists no port"
        else:
            shown = ", ".join(name or str(number) for name, number in offered)
            return f"it has {len(offered)} ports ({clip(shown, 80)}): name one"
        return found[0] if found else ""

    def __str__(self) -> str:
        if self.name is not None:
            return f"port {self.name!r}"
        if self.number is not None:
            return f"port {self.number}"
        return "its only port"


@dataclass(frozen=True, slots=True)
class Change:
    """What :meth:`SliceView.changes` found since the last call: instances ``added``
    and ``removed`` (sorted), and ``info``: the metadata of the instances added or
    kept whose metadata changed (``DEFAULT_INFO`` clears it)."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    info: Mapping[str, InstanceInfo] = field(default_factory=lambda: NO_INFO)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.info)


# One endpoint copy: its state and metadata.
_Copy = tuple[State, InstanceInfo]


class SliceView:
    """The endpoints of one Service's EndpointSlices and what to publish of them.

    ``port``: which port (:class:`PortChoice`); ``address_types``: which slices to
    read (default IPv4 and IPv6); ``source`` names the Service in warnings.  Feed it
    :meth:`upsert` / :meth:`delete` / :meth:`replace`, then take :meth:`changes`.
    Not thread-safe: owned by one watch.
    """

    def __init__(
        self,
        port: PortChoice | None = None,
        *,
        address_types: Iterable[str] = DEFAULT_ADDRESS_TYPES,
        source: str = "service",
    ) -> None:
        self._port = port if port is not None else PortChoice()
        self._types = frozenset(address_types)
        self._source = source
        self._slices: dict[str, dict[str, _Copy]] = {}  # slice name -> its instances
        self._copies: dict[str, dict[str, _Copy]] = {}  # instance -> slice name -> copy
        self._best: dict[str, _Copy] = {}  # instance -> the copy that counts
        self._counts = [0, 0, 0]  # instances per State
        self._problems: dict[str, str] = {}  # slice name -> why it contributes nothing
        self._missing: set[str] = set()  # slices with endpoints but not our port
        self._touched: set[str] = set()  # instances whose best copy may have changed
        self._published: set[str] = set()
        self._published_info: dict[str, InstanceInfo] = {}
        self._serving = State.READY  # the state served at the last changes()
        self._infos: dict[tuple[str, str, str, str], InstanceInfo] = {}  # memo
        self._warned: set[tuple[str, str]] = set()

    # -- feeding --------------------------------------------------------------

    @property
    def slices(self) -> int:
        """How many slices the view holds (for tests and debugging)."""
        return len(self._slices)

    def upsert(self, slice_object: object) -> None:
        """A slice was added or modified (the whole object, as the API sends it)."""
        name, endpoints = self._read(slice_object)
        if name is None:
            return
        self._set(name, endpoints)

    def delete(self, slice_object: object) -> None:
        """A slice was deleted (its last state, as the API sends it)."""
        name = _name(slice_object)
        if name is not None:
            self._set(name, None)

    def replace(self, slice_objects: Iterable[object]) -> None:
        """A full list: every slice not in it is gone."""
        fresh: dict[str, object] = {}
        for item in slice_objects:
            name = _name(item)
            if name is not None:
                fresh[name] = item
        for name in [name for name in self._slices if name not in fresh]:
            self._set(name, None)
        for item in fresh.values():
            self.upsert(item)

    def _set(self, name: str, endpoints: dict[str, _Copy] | None) -> None:
        old = self._slices.pop(name, {})
        if endpoints is not None:
            self._slices[name] = endpoints
        else:
            self._problems.pop(name, None)
            self._missing.discard(name)
            endpoints = {}
        copies, touched = self._copies, self._touched
        for instance in old.keys() - endpoints.keys():
            held = copies[instance]
            del held[name]
            if not held:
                del copies[instance]
            touched.add(instance)
        for instance, copy in endpoints.items():
            if old.get(instance) != copy:
                copies.setdefault(instance, {})[name] = copy
                touched.add(instance)

    def _read(self, slice_object: object) -> tuple[str | None, dict[str, _Copy]]:
        """Name and ``instance -> copy`` of one slice for our port; records problems."""
        name = _name(slice_object)
        if name is None or not isinstance(slice_object, Mapping):
            self._warn("?", "a slice without a name")
            return None, {}
        self._problems.pop(name, None)
        self._missing.discard(name)
        address_type = slice_object.get("addressType")
        if address_type not in self._types:
            if address_type not in ADDRESS_TYPES:
                self._warn(name, f"address type {clip(str(address_type), 40)!r} unknown")
            return name, {}
        raw = slice_object.get("endpoints")
        endpoints = raw if isinstance(raw, list) else []
        picked = self._port.pick(slice_object.get("ports"))
        if isinstance(picked, str):
            if endpoints:
                if picked:
                    self._problems[name] = f"slice {clip(name, 80)!r}: {picked}"
                else:
                    self._missing.add(name)
            return name, {}
        found: dict[str, _Copy] = {}
        for endpoint in endpoints:
            entry = self._endpoint(name, endpoint, picked)
            if entry is None:
                continue
            instance, copy = entry
            previous = found.get(instance)
            if previous is None or copy[0] > previous[0]:
                found[instance] = copy
        return name, found

    def _endpoint(self, name: str, endpoint: object, port: int) -> tuple[str, _Copy] | None:
        # the hot path of a slice change: API answers are JSON, so dicts and lists
        if not isinstance(endpoint, dict):
            return None
        addresses = endpoint.get("addresses")
        if not isinstance(addresses, list) or not addresses \
                or not isinstance(addresses[0], str):
            self._warn(name, "an endpoint without addresses")
            return None
        try:
            instance = join_host_port(addresses[0], port)
        except ValueError:
            self._warn(name, f"address {clip(addresses[0], 60)!r} is not a host")
            return None
        return instance, (endpoint_state(endpoint.get("conditions")), self._info(endpoint))

    def _info(self, endpoint: dict[str, object]) -> InstanceInfo:
        zone = endpoint.get("zone")
        node = endpoint.get("nodeName")
        target = endpoint.get("targetRef")
        pod = target.get("name") if isinstance(target, dict) and target.get("kind") == "Pod" \
            else None
        hints = endpoint.get("hints")
        for_zones = _zones(hints) if hints is not None else ""
        key = (_name_value(zone), _name_value(node), _name_value(pod), for_zones)
        info = self._infos.get(key)
        if info is None:
            zone_text, node_text, pod_text, _ = key
            meta = {META_ZONE: zone_text or for_zones, META_NODE: node_text, META_POD: pod_text,
                    META_FOR_ZONES: for_zones}
            info = InstanceInfo(meta={k: v for k, v in meta.items() if v})
            if info.is_default:
                info = DEFAULT_INFO
            if len(self._infos) > 100_000:  # bounded: a cluster cannot grow it forever
                self._infos.clear()
            self._infos[key] = info
        return info

    def _warn(self, name: str, what: str) -> None:
        if (name, what) in self._warned:
            return
        if len(self._warned) > 1000:
            self._warned.clear()
        self._warned.add((name, what))
        logger.warning("%s: EndpointSlice %s: %s; skipped", self._source, clip(name, 80), what)

    # -- reading --------------------------------------------------------------

    @property
    def problem(self) -> str | None:
        """Why some slices contribute nothing although they have endpoints (an ambiguous
        or unknown port), or ``None``."""
        if self._problems:
            first = min(self._problems)
            more = len(self._problems) - 1
            return f"{self._source}: {self._problems[first]}" + \
                (f" (and {more} more slices)" if more else "")
        if self._missing and not any(self._slices.values()):
            return (f"{self._source}: no EndpointSlice has {self._port} "
                    f"({len(self._missing)} slices with endpoints for other ports)")
        return None

    def instances(self) -> tuple[str, ...]:
        """The instances published so far (by :meth:`changes`), sorted."""
        return tuple(sorted(self._published))

    def info(self) -> Mapping[str, InstanceInfo]:
        """The non-default metadata of :meth:`instances`, read-only."""
        return MappingProxyType(dict(self._published_info)) if self._published_info \
            else NO_INFO

    def state_of(self, instance: str) -> State | None:
        """The best state of ``instance`` over its slices, or ``None`` if none holds it."""
        best = self._best.get(instance)
        return None if best is None else best[0]

    def changes(self) -> Change:
        """What to publish since the last call: O(instances touched), or O(all) when the
        view switches between serving READY and DRAINING instances."""
        touched, self._touched = self._touched, set()
        counts = self._counts
        for instance in touched:
            old = self._best.get(instance)
            held = self._copies.get(instance)
            new = None if not held else max(
                sorted(held.items()), key=lambda item: item[1][0])[1]
            if old is not None:
                counts[old[0]] -= 1
            if new is None:
                self._best.pop(instance, None)
            else:
                counts[new[0]] += 1
                self._best[instance] = new
        serving = State.READY if counts[State.READY] or not counts[State.DRAINING] \
            else State.DRAINING
        if serving is not self._serving:
            self._serving = serving
            touched = set(self._best) | self._published
        added: list[str] = []
        removed: list[str] = []
        info: dict[str, InstanceInfo] = {}
        published, shown = self._published, self._published_info
        for instance in touched:
            best = self._best.get(instance)
            if best is None or best[0] is not serving:
                if instance in published:
                    published.discard(instance)
                    shown.pop(instance, None)
                    removed.append(instance)
                continue
            if instance not in published:
                published.add(instance)
                added.append(instance)
            new_info = best[1]
            if shown.get(instance, DEFAULT_INFO) != new_info:
                info[instance] = new_info
                if new_info.is_default:
                    shown.pop(instance, None)
                else:
                    shown[instance] = new_info
        return Change(tuple(sorted(added)), tuple(sorted(removed)),
                      MappingProxyType(info) if info else NO_INFO)

    def __repr__(self) -> str:
        return (f"SliceView({self._source!r}, {self._port}, slices={len(self._slices)}, "
                f"published={len(self._published)})")


def _name(slice_object: object) -> str | None:
    if not isinstance(slice_object, Mapping):
        return None
    metadata = slice_object.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    name = metadata.get("name")
    return name if isinstance(name, str) and name else None


#: The longest name the API accepts (a DNS subdomain: node and pod names; zones are
#: label values, 63).  A longer "name" is not one the API server would store: ignored.
MAX_NAME = 253
#: At most this many ``hints.forZones`` entries are read.
MAX_HINTS = 64


def _name_value(value: object) -> str:
    """A zone, node or pod name as metadata: a string of at most :data:`MAX_NAME`
    characters, else nothing (a 1 MiB "node name" never reaches an ``InstanceInfo``)."""
    return value if isinstance(value, str) and len(value) <= MAX_NAME else ""


def _zones(hints: object) -> str:
    """``hints.forZones`` names, comma-joined."""
    if not isinstance(hints, dict) or not isinstance(hints.get("forZones"), list):
        return ""
    names = (hint.get("name") for hint in hints["forZones"][:MAX_HINTS]
             if isinstance(hint, dict))
    return ",".join(name for name in names
                    if isinstance(name, str) and name and len(name) <= MAX_NAME)
