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
whatever valid value the key held, and it never stops the watch.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sd.errors import InvalidInstanceError
from sd.instance import normalize_instance

__all__ = ["KeyValue", "Phase", "PrefixView", "WatchEvent", "decode_instance"]

logger = logging.getLogger(f"kitsd.{__name__}")


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
        logger.warning("skipping %s key %r: value %r is not UTF-8", source, key, value[:64])
        return None
    try:
        return normalize_instance(text)
    except InvalidInstanceError as error:
        logger.warning("skipping %s key %r: %s", source, key, error)
        return None


class PrefixView:
    """Key → instance map of one etcd prefix plus revision bookkeeping.

    Not thread-safe: owned by one watcher thread.  ``source`` names the prefix
    in warnings about bad values.
    """

    def __init__(self, *, source: str = "etcd") -> None:
        self._source = source
        self._by_key: dict[bytes, str | None] = {}
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
        """The valid instances under the prefix, sorted and de-duplicated."""
        return tuple(sorted({value for value in self._by_key.values() if value is not None}))

    def apply_read(self, kvs: Iterable[KeyValue], revision: int) -> bool:
        """Replace the view with a full read taken at ``revision``; ``True`` if instances changed.

        The read is authoritative: every key not in ``kvs`` is gone.
        """
        before = self.instances()
        self._by_key = {
            kv.key: decode_instance(kv.key, kv.value, source=self._source) for kv in kvs
        }
        self._revision = revision
        self._phase = Phase.WATCHING
        return self.instances() != before

    def apply_events(self, events: Iterable[WatchEvent]) -> bool:
        """Apply one watch response's events in order; ``True`` if instances changed.

        Events at or below :attr:`revision` were already applied and are
        dropped.  Events in :attr:`Phase.NEED_READ` are dropped too: the
        coming read supersedes them.
        """
        if self._phase is Phase.NEED_READ:
            return False
        before = self.instances()
        applied_up_to = self._revision
        highest = applied_up_to
        for event in events:
            if event.mod_revision <= applied_up_to:
                continue
            highest = max(highest, event.mod_revision)
            if event.kind == "delete":
                self._by_key.pop(event.key, None)
            else:
                self._by_key[event.key] = decode_instance(
                    event.key, event.value, source=self._source
                )
        self._revision = highest
        return self.instances() != before

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
