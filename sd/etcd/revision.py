"""The etcd prefix view: which instances are under a prefix, as of which revision.

Pure: no I/O, no threads, no clock.  The watcher in :mod:`sd.etcd.instancer`
feeds it what etcd said and asks it what to do next.

Theory of operation
-------------------
etcd gives every change one cluster-wide, ever-increasing *revision*.  A
range read answers with the keys *and* the revision it was taken at (the
response header); a watch created with ``start_revision=r`` delivers every
change with revision ``>= r``, in revision order, all changes of one revision
in one response.  So a read at revision ``R`` followed by a watch from ``R + 1``
sees every change exactly once, and so does a watch resumed from ``last + 1``
after it broke, where ``last`` is the highest revision applied so far.

:class:`PrefixView` is that bookkeeping, as a small state machine::

                 apply_read(kvs, R)
      NEED_READ ─────────────────────▶ WATCHING (revision = R, watch from R+1)
          ▲                               │  apply_events(events)
          │ compacted(c)                  │    events with mod_revision <= revision
          └───────────────────────────────┘    are dropped (already applied);
                                                 revision = max mod_revision

* ``NEED_READ``: the view must be (re)loaded with :meth:`PrefixView.apply_read`.
  The start state, and the state after :meth:`PrefixView.compacted`: etcd
  discarded history past our revision (``ErrCompacted``), so the changes we
  missed can no longer be replayed and only a fresh read is correct.
* ``WATCHING``: :attr:`PrefixView.watch_from` is where the next watch must
  start.  Events at or below the applied revision are duplicates of what a
  read or an earlier watch already delivered and are ignored, so a resumed
  watch that starts a little early never applies a change twice.

A value is an instance either as plain ``host:port`` or in the JSON form with
metadata (``{"address": "host:port", "weight": 3, "tags": [...], "meta": {...}}``,
:mod:`sd.instance_value`); the view keeps each instance's
:class:`~sd.instance_info.InstanceInfo` next to it (:meth:`PrefixView.info`) and a
metadata change is a change like any other.

A value that is not an instance (bad UTF-8, no port, bad JSON, a bad weight, ...)
is logged once, when its put is applied, and counts as "no instance at this key": it replaces
whatever valid value the key held, and it never stops the watch.  Messages
quote at most :data:`MAX_QUOTED` bytes of a value (a registry may hold
megabytes of junk).

Cost
----
The view keeps, next to the key map, how many keys hold each instance and the
distinct instances in sorted order, updated per event (``bisect``), so a watch
response costs O(changed keys) plus a list insertion, not a sort of the whole
prefix; :meth:`PrefixView.instances` hands out one cached tuple per state and
:meth:`PrefixView.info` one cached mapping (copied once per metadata change).
"""

from __future__ import annotations

import bisect
import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from kitsd.sd.instance_info import DEFAULT_INFO, NO_INFO, InstanceInfo
from kitsd.sd.instance_value import BadValue, decode_value, shown

__all__ = ["MAX_QUOTED", "KeyValue", "Phase", "PrefixView", "WatchEvent", "decode_entry",
           "decode_instance", "quote_bytes"]

logger = logging.getLogger(__name__)

#: How many bytes of a key or value a log message quotes at most.
MAX_QUOTED: Final = 64


def quote_bytes(data: bytes | str, limit: int = MAX_QUOTED) -> str:
    """``repr`` of ``data`` cut to ``limit`` bytes, saying how long it really was."""
    if len(data) <= limit:
        return repr(data)
    return f"{data[:limit]!r}... ({len(data)} {'bytes' if isinstance(data, bytes) else 'chars'})"


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key of a range read: raw ``key`` and ``value`` bytes and the key's ``mod_revision``."""

    key: bytes
    value: bytes
    mod_revision: int = 0


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change from a watch: a ``put`` (with the new ``value``) or a ``delete``."""

    kind: Literal["put", "delete"]
    key: bytes
    mod_revision: int
    value: bytes = b""


class Phase(enum.Enum):
    """What the view needs next (see the module docstring)."""

    NEED_READ = "need-read"
    WATCHING = "watching"


def decode_entry(
    key: bytes, value: bytes, *, source: str = "etcd"
) -> tuple[str, InstanceInfo] | None:
    """The normalised instance and metadata stored in ``value`` -- plain ``host:port`` or
    the JSON form of :mod:`sd.instance_value` -- or ``None`` (with a warning quoting at
    most :data:`MAX_QUOTED` bytes) if it is neither.

    Never raises: a bad registry entry must not stop the watch.
    """
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        logger.warning("skipping %s key %s: value %s is not UTF-8", source, quote_bytes(key),
                       quote_bytes(value))
        return None
    try:
        return decode_value(text)
    except BadValue as error:
        logger.warning("skipping %s key %s: value %s: %s", source, quote_bytes(key),
                       quote_bytes(shown(text)),
                       quote_bytes(error.reason, 2 * MAX_QUOTED)[1:-1])
        return None


def decode_instance(key: bytes, value: bytes, *, source: str = "etcd") -> str | None:
    """The normalised instance stored in ``value`` (either form), or ``None`` (with a
    warning) if it is not one.  Never raises."""
    entry = decode_entry(key, value, source=source)
    return None if entry is None else entry[0]


def _effective(held: dict[bytes, tuple[int, InstanceInfo]]) -> InstanceInfo:
    """The metadata an instance held by several keys shows: the latest written key's."""
    if len(held) == 1:
        return next(iter(held.values()))[1]
    return max(held.items(), key=lambda item: (item[1][0], item[0]))[1][1]


class PrefixView:
    """Key → instance map of one etcd prefix plus revision bookkeeping.

    Values are plain ``host:port`` or the JSON form with metadata
    (:mod:`sd.instance_value`); :meth:`info` gives the metadata.  An instance
    held by several keys shows the metadata of the one written last.

    Not thread-safe: owned by one watcher thread.  ``source`` names the prefix
    in warnings about bad values.
    """

    def __init__(self, *, source: str = "etcd") -> None:
        self._source = source
        self._by_key: dict[bytes, tuple[str, InstanceInfo] | None] = {}
        # instance -> the keys holding it, with their mod_revision and metadata
        self._holders: dict[str, dict[bytes, tuple[int, InstanceInfo]]] = {}
        self._sorted: list[str] = []  # the distinct instances, sorted
        self._snapshot: tuple[str, ...] | None = ()
        self._info: dict[str, InstanceInfo] = {}  # non-default metadata shown
        self._info_snapshot: Mapping[str, InstanceInfo] | None = NO_INFO
        self._revision = 0
        self._phase = Phase.NEED_READ
        self._compactions = 0

    @property
    def phase(self) -> Phase:
        """:attr:`Phase.NEED_READ` until a read is applied, and again after a compaction."""
        return self._phase

    @property
    def needs_read(self) -> bool:
        """Whether the next step must be a full read of the prefix."""
        return self._phase is Phase.NEED_READ

    @property
    def revision(self) -> int:
        """The highest revision whose changes are reflected in the view (0 before any read)."""
        return self._revision

    @property
    def watch_from(self) -> int:
        """The ``start_revision`` for the next watch: one past :attr:`revision`.

        Raises ``RuntimeError`` in :attr:`Phase.NEED_READ`, when no watch can be
        resumed without losing changes.
        """
        if self._phase is Phase.NEED_READ:
            raise RuntimeError("the prefix must be read before watching")
        return self._revision + 1

    @property
    def compactions(self) -> int:
        """How many times a compaction forced a re-read (for tests and metrics)."""
        return self._compactions

    def instances(self) -> tuple[str, ...]:
        """The valid instances under the prefix, sorted and de-duplicated.

        The same tuple is returned until the instances change.
        """
        if self._snapshot is None:
            self._snapshot = tuple(self._sorted)
        return self._snapshot

    def info(self) -> Mapping[str, InstanceInfo]:
        """The non-default metadata of :meth:`instances`, read-only.

        The same mapping is returned until the metadata changes.
        """
        if self._info_snapshot is None:
            self._info_snapshot = MappingProxyType(self._info.copy()) if self._info else NO_INFO
        return self._info_snapshot

    def apply_read(self, kvs: Iterable[KeyValue], revision: int) -> bool:
        """Replace the view with a full read taken at ``revision``; ``True`` if the
        instances or their metadata changed.

        The read is authoritative: every key not in ``kvs`` is gone.
        """
        by_key: dict[bytes, tuple[str, InstanceInfo] | None] = {}
        holders: dict[str, dict[bytes, tuple[int, InstanceInfo]]] = {}
        for kv in kvs:
            entry = decode_entry(kv.key, kv.value, source=self._source)
            by_key[kv.key] = entry
            if entry is not None:
                holders.setdefault(entry[0], {})[kv.key] = (kv.mod_revision, entry[1])
        self._by_key, self._holders = by_key, holders
        infos = {}
        for instance, held in holders.items():
            shown = _effective(held)
            if not shown.is_default:
                infos[instance] = shown
        ordered = sorted(holders)
        changed = ordered != self._sorted
        if changed:
            self._sorted = ordered
            self._snapshot = None
        if infos != self._info:
            self._info = infos
            self._info_snapshot = None
            changed = True
        self._revision = revision
        self._phase = Phase.WATCHING
        return changed

    def _hold(self, instance: str, key: bytes, revision: int, info: InstanceInfo) -> None:
        held = self._holders.get(instance)
        if held is None:
            held = self._holders[instance] = {}
            bisect.insort(self._sorted, instance)
            self._snapshot = None
        held[key] = (revision, info)

    def _release(self, instance: str, key: bytes) -> None:
        held = self._holders[instance]
        del held[key]
        if held:
            return
        del self._holders[instance]
        del self._sorted[bisect.bisect_left(self._sorted, instance)]
        self._snapshot = None

    def _show(self, instance: str) -> InstanceInfo:
        """Update the metadata shown for ``instance``; returns it."""
        held = self._holders.get(instance)
        shown = DEFAULT_INFO if held is None else _effective(held)
        current = self._info.get(instance)
        if shown.is_default:
            if current is not None:
                del self._info[instance]
                self._info_snapshot = None
        elif current != shown:
            self._info[instance] = shown
            self._info_snapshot = None
        return shown

    def apply_events(self, events: Iterable[WatchEvent]) -> bool:
        """Apply one watch response's events in order; ``True`` if the instances or
        their metadata changed.

        Events at or below :attr:`revision` were already applied and are
        dropped.  Events in :attr:`Phase.NEED_READ` are dropped too: the
        coming read supersedes them.
        """
        if self._phase is Phase.NEED_READ:
            return False
        applied_up_to = self._revision
        highest = applied_up_to
        # instances touched -> (present before the batch, metadata shown before)
        before: dict[str, tuple[bool, InstanceInfo]] = {}
        for event in events:
            if event.mod_revision <= applied_up_to:
                continue
            highest = max(highest, event.mod_revision)
            old = self._by_key.get(event.key)
            new: tuple[str, InstanceInfo] | None
            if event.kind == "delete":
                self._by_key.pop(event.key, None)
                new = None
            else:
                new = decode_entry(event.key, event.value, source=self._source)
                self._by_key[event.key] = new
            if old == new:
                continue
            for entry in (old, new):
                if entry is not None and entry[0] not in before:
                    instance = entry[0]
                    before[instance] = (instance in self._holders,
                                        self._info.get(instance, DEFAULT_INFO))
            if old is not None:
                self._release(old[0], event.key)
            if new is not None:
                self._hold(new[0], event.key, event.mod_revision, new[1])
        self._revision = highest
        changed = False
        for instance, (was_present, was_shown) in before.items():
            shown = self._show(instance)
            present = instance in self._holders
            if present != was_present or (present and shown != was_shown):
                changed = True
        return changed

    def compacted(self, compact_revision: int) -> None:
        """etcd compacted history up to ``compact_revision`` past our watch: re-read next."""
        logger.info(
            "%s: history compacted at revision %d (we were at %d); re-reading",
            self._source,
            compact_revision,
            self._revision,
        )
        self._phase = Phase.NEED_READ
        self._compactions += 1

    def __repr__(self) -> str:
        return (
            f"PrefixView({self._source!r}, phase={self._phase.value},"
            f" revision={self._revision}, keys={len(self._by_key)})"
        )
