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

A value that is not an instance (bad UTF-8, no port, ...) is logged once, when
its put is applied, and counts as "no instance at this key": it replaces
whatever valid value the key held, and it never stops the watch.  Messages
quote at most :data:`MAX_QUOTED` bytes of a value (a registry may hold
megabytes of junk).

Cost
----
The view keeps, next to the key map, how many keys hold each instance and the
distinct instances in sorted order, updated per event (``bisect``), so a watch
response costs O(changed keys) plus a list insertion, not a sort of the whole
prefix; :meth:`PrefixView.instances` hands out one cached tuple per state.
"""

from __future__ import annotations

import bisect
import enum
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from sd.errors import InvalidInstanceError
from sd.instance import normalize_instance

__all__ = ["MAX_QUOTED", "KeyValue", "Phase", "PrefixView", "WatchEvent", "decode_instance",
           "quote_bytes"]

logger = logging.getLogger(f"kitsd.{__name__}")

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


def decode_instance(key: bytes, value: bytes, *, source: str = "etcd") -> str | None:
    """The normalised instance stored in ``value``, or ``None`` (with a warning) if it is not one.

    Never raises: a bad registry entry must not stop the watch.
    """
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        logger.warning("skipping %s key %s: value %s is not UTF-8", source, quote_bytes(key),
                       quote_bytes(value))
        return None
    try:
        return normalize_instance(text)
    except InvalidInstanceError as error:
        logger.warning("skipping %s key %s: invalid instance %s: %s", source, quote_bytes(key),
                       quote_bytes(text), quote_bytes(error.reason, 2 * MAX_QUOTED)[1:-1])
        return None


class PrefixView:
    """Key → instance map of one etcd prefix plus revision bookkeeping.

    Not thread-safe: owned by one watcher thread.  ``source`` names the prefix
    in warnings about bad values.
    """

    def __init__(self, *, source: str = "etcd") -> None:
        self._source = source
        self._by_key: dict[bytes, str | None] = {}
        self._holders: dict[str, int] = {}  # instance -> how many keys hold it
        self._sorted: list[str] = []  # the distinct instances, sorted
        self._snapshot: tuple[str, ...] | None = ()
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

    def apply_read(self, kvs: Iterable[KeyValue], revision: int) -> bool:
        """Replace the view with a full read taken at ``revision``; ``True`` if instances changed.

        The read is authoritative: every key not in ``kvs`` is gone.
        """
        self._by_key = {
            kv.key: decode_instance(kv.key, kv.value, source=self._source) for kv in kvs
        }
        holders = Counter(value for value in self._by_key.values() if value is not None)
        self._holders = dict(holders)
        ordered = sorted(holders)
        changed = ordered != self._sorted
        if changed:
            self._sorted = ordered
            self._snapshot = None
        self._revision = revision
        self._phase = Phase.WATCHING
        return changed

    def _hold(self, instance: str) -> None:
        count = self._holders.get(instance, 0)
        self._holders[instance] = count + 1
        if count == 0:
            bisect.insort(self._sorted, instance)
            self._snapshot = None

    def _release(self, instance: str) -> None:
        count = self._holders[instance] - 1
        if count:
            self._holders[instance] = count
            return
        del self._holders[instance]
        del self._sorted[bisect.bisect_left(self._sorted, instance)]
        self._snapshot = None

    def apply_events(self, events: Iterable[WatchEvent]) -> bool:
        """Apply one watch response's events in order; ``True`` if instances changed.

        Events at or below :attr:`revision` were already applied and are
        dropped.  Events in :attr:`Phase.NEED_READ` are dropped too: the
        coming read supersedes them.
        """
        if self._phase is Phase.NEED_READ:
            return False
        applied_up_to = self._revision
        highest = applied_up_to
        was_present: dict[str, bool] = {}  # instances touched -> present before the batch
        for event in events:
            if event.mod_revision <= applied_up_to:
                continue
            highest = max(highest, event.mod_revision)
            old = self._by_key.get(event.key)
            if event.kind == "delete":
                self._by_key.pop(event.key, None)
                new = None
            else:
                new = decode_instance(event.key, event.value, source=self._source)
                self._by_key[event.key] = new
            if old == new:
                continue
            for instance in (old, new):
                if instance is not None and instance not in was_present:
                    was_present[instance] = instance in self._holders
            if old is not None:
                self._release(old)
            if new is not None:
                self._hold(new)
        self._revision = highest
        return any((instance in self._holders) != before
                   for instance, before in was_present.items())

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
