"""The :class:`Event` a discovery source sends to its subscribers, and its :class:`Delta`.

Theory of operation
-------------------
An event is a whole snapshot: every subscriber can act on it alone.  At 10,000
instances, though, comparing two whole snapshots on every change costs more than
the change itself, so an event may carry a :class:`Delta`: *how* its instances
differ from an earlier snapshot's, named by identity (``delta.base``).  A
subscriber that still holds exactly that ``base`` tuple applies the delta in
O(changed); any other subscriber (one that missed a snapshot, or a new one)
ignores it and compares whole snapshots.  The delta is a hint: it never takes
part in equality, and an event without one means the same.

Metadata travels the same way.  ``Event.info`` maps instances to their
:class:`~sd.instance_info.InstanceInfo`; instances without an entry have the
defaults, so code that reads only ``instances`` never notices it.  ``info`` is part
of equality (a weight change is news), and ``delta.info`` names the entries that
changed since ``base``, so a metadata change costs O(changed) too.

:func:`diff` and :func:`splice` are the two halves, written once: the first
finds what changed between a set of members and a new full list, the second
builds the new sorted tuple from the old one in O(changed) plus one copy.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from kitsd.sd.instance_info import NO_INFO, InstanceInfo

__all__ = ["Delta", "Event", "diff", "splice"]

# Past this share of changed instances, sorting the new set beats splicing the old tuple.
_SPLICE_SHARE = 8


@dataclass(frozen=True, slots=True)
class Delta:
    """How an event's instances differ from the snapshot ``base``.

    A promise made by whoever builds the event: ``instances`` is sorted and
    de-duplicated, ``added`` (sorted) are in it and not in ``base``, ``removed``
    (sorted) are in ``base`` and not in it, ``info`` maps each instance of the event
    whose metadata differs from what it had in ``base`` (an added instance with
    metadata included) to its new :class:`~sd.instance_info.InstanceInfo`
    (``DEFAULT_INFO`` when it went back to the defaults), and nothing else changed.
    The metadata of removed instances goes with them.  A consumer uses it only when
    ``delta.base is`` the tuple it holds (identity, O(1)).
    """

    base: tuple[str, ...]
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    info: Mapping[str, InstanceInfo] = field(default_factory=lambda: NO_INFO)

    def __repr__(self) -> str:  # the base may hold 10,000 instances: not worth printing
        shown = f", info={dict(self.info)!r}" if self.info else ""
        return f"Delta(added={self.added!r}, removed={self.removed!r}{shown})"


@dataclass(frozen=True, slots=True)
class Event:
    """A whole snapshot of a service's instances.

    ``instances`` are ``host:port`` strings.  ``error`` set means the source
    could not refresh its view and ``instances`` may be stale: discovery
    failures travel as data, not exceptions (as go-kit's ``sd.Event``).

    ``info`` (keyword-only, default empty) maps instances to their metadata
    (:class:`~sd.instance_info.InstanceInfo`); an instance without an entry has the
    defaults.  It is part of equality (not of hashing).  Events a
    :class:`~sd.instancer.Broadcaster` delivers hold entries only for their own
    instances and only with non-default metadata, and reuse one mapping object
    while the metadata does not change.

    ``delta`` (keyword-only, optional) is a hint of what changed since an earlier
    snapshot (see :class:`Delta`); it is not part of equality, ``repr`` or hashing.
    """

    instances: tuple[str, ...] = ()
    error: BaseException | None = None
    info: Mapping[str, InstanceInfo] = field(
        default_factory=lambda: NO_INFO, kw_only=True, hash=False, repr=False)
    delta: Delta | None = field(default=None, compare=False, repr=False, kw_only=True)

    def __repr__(self) -> str:
        shown = f", info={dict(self.info)!r}" if self.info else ""
        return f"Event(instances={self.instances!r}, error={self.error!r}{shown})"

    def same_state(self, other: Event) -> bool:
        """Whether ``other`` describes the same state, so need not be re-sent.

        Two errors are the same when they have the same type and arguments:
        a registry that keeps failing the same way is not news.  Metadata counts:
        an instance whose weight changed is a new state.
        """
        if self.instances is not other.instances and self.instances != other.instances:
            return False
        if self.info is not other.info and not same_info(self.info, other.info):
            return False
        return same_error(self.error, other.error)


def same_info(first: Mapping[str, InstanceInfo], second: Mapping[str, InstanceInfo]) -> bool:
    """Whether two instance -> info mappings say the same thing (a missing entry and a
    ``DEFAULT_INFO`` entry mean the same)."""
    if first is second or first == second:
        return True
    return _without_defaults(first) == _without_defaults(second)


def _without_defaults(info: Mapping[str, InstanceInfo]) -> dict[str, InstanceInfo]:
    return {instance: value for instance, value in info.items() if not value.is_default}


def same_error(first: BaseException | None, second: BaseException | None) -> bool:
    """Whether two errors (or ``None``) say the same thing: same type and arguments."""
    if first is None or second is None:
        return first is second
    return type(first) is type(second) and first.args == second.args


def diff(members: set[str], instances: Iterable[str]) -> tuple[set[str], list[str], list[str]]:
    """Compare a full list with the current ``members``: ``(new_members, added, removed)``,
    ``added`` and ``removed`` sorted.  O(N) in C (set operations); ``members`` is untouched."""
    new = set(instances)
    added = new.difference(members)
    # Every new member is either added or kept, so the count of removed ones is known
    # without a second pass; it is usually zero when something was added.
    if len(members) == len(new) - len(added):
        return (members, [], []) if not added else (new, sorted(added), [])
    return new, sorted(added), sorted(members.difference(new))


def splice(
    base: tuple[str, ...], added: Sequence[str], removed: Sequence[str]
) -> tuple[str, ...]:
    """The sorted tuple ``base`` without ``removed`` and with ``added``.

    ``base`` must be sorted and de-duplicated; ``removed`` names members of ``base``,
    ``added`` strings not in it.  O(changed · log N) plus one copy of the tuple, so
    an already-sorted snapshot is never sorted again; a large change is sorted anew.
    """
    if not added and not removed:
        return base
    if (len(added) + len(removed)) * _SPLICE_SHARE > len(base):
        members = set(base)
        members.difference_update(removed)
        members.update(added)
        return tuple(sorted(members))
    items = list(base)
    for instance in removed:
        index = bisect_left(items, instance)
        if index < len(items) and items[index] == instance:
            del items[index]
    for instance in added:
        index = bisect_left(items, instance)
        if index == len(items) or items[index] != instance:
            items.insert(index, instance)
    return tuple(items)
