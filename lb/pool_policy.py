"""Passive ejection state: a pure table, owned by one balancer.

Theory of operation
-------------------
The balancer reports each attempt's outcome for the instance it picked:

* A connection failure adds one to the instance's run of consecutive connection
  failures; an error the policy counts (``OutlierDetection.errors``, when
  ``consecutive_errors`` is set; connection failures are among them) adds one to
  its run of consecutive errors.  When either run reaches its threshold
  (``consecutive_failures``, ``consecutive_errors``) the instance is *ejected*
  until ``now + ejection_time(n)`` (``n`` = its ejections so far, so the time
  doubles up to the maximum) and both runs start again.
* The cap is applied when ejecting: if ``max_ejected(pool size)`` instances are
  already out, the instance stays in rotation (its run is kept, so its next
  failure tries again).  Picks therefore need no sorting or counting: an
  instance is skipped iff it has a record whose ``until`` lies ahead.
* A success forgets the instance.  So does its leaving the endpoint set
  (:meth:`Ejections.retain`), so an instance that comes back starts clean and
  no state outlives the instance it is about.  Each record carries a ``tag``
  naming the endpoint that failed (the balancer's choice: a weak reference)
  so that an instance that left and returned between two looks at the set is
  recognised by its new endpoint.
* An ejection remembers its cause (``connection`` or ``errors``) and start, so an
  active health check can end it early when it covers the cause
  (:meth:`Ejections.uneject`; the rule is in :mod:`lb.health_checkers_policy`).
* A record that is not ejected is forgotten ``max_ejection_time`` after its
  last event, so a rare failure long ago does not double a later ejection.

Records are keyed by instance string and hold numbers and the tag, never an
endpoint, so they keep no closed endpoint alive.  Expiries are kept in a heap,
so counting who is out costs O(log n) per ejection, not a scan.  Nothing here
locks or reads a clock: every method takes ``now``; the balancer holds its own
lock around them.

    no record --counted failure--> run < threshold --...--> ejected until T
        ^  ^                                                  |       |
        |  +------------------ success / leaves --------------+       |
        +---- forgotten max_ejection_time after T (if no new failure) -+
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from kitsd.lb.health_check import CONNECTION, ERRORS
from kitsd.lb.outlier_detection import OutlierDetection

__all__ = ["Ejections"]


@dataclass(slots=True)
class _Record:
    run: int = 0  # connection failures in a row since the last ejection
    error_run: int = 0  # counted errors in a row since the last ejection
    ejections: int = 0  # times ejected so far; the next one lasts ejection_time(ejections + 1)
    until: float = float("-inf")  # out of rotation before this time
    serial: int = 0  # names the ejection `until` belongs to, for the heap
    last: float = 0.0  # time of the last failure or ejection end
    tag: object = None  # names the endpoint that failed, to tell a returned instance
    by_connection: bool = False  # the last ejection's cause: CONNECTION (else ERRORS)
    since: float = float("-inf")  # when the last ejection began


class Ejections:
    """Which instances are out of rotation, and until when (see the module docstring)."""

    def __init__(self, policy: OutlierDetection) -> None:
        self.policy = policy
        #: Records by instance; read-only outside this class (balancers test it for
        #: emptiness on the hot path, which a dict does in C).
        self.records: dict[str, _Record] = {}
        self._heap: list[tuple[float, int, str]] = []  # (until, serial, key) of ejections
        self._out: set[int] = set()  # serials of ejections that have not ended
        self._serial = 0
        self._next_prune = float("-inf")

    def __bool__(self) -> bool:
        """Whether any instance has a record (the pick's fast-path check)."""
        return bool(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def is_ejected(self, key: str, now: float) -> bool:
        """Whether ``key`` is out of rotation at ``now``."""
        record = self.records.get(key)
        return record is not None and record.until > now

    def ejected(self, now: float) -> int:
        """How many instances are out of rotation at ``now``."""
        self._expire(now)
        return len(self._out)

    def panicking(self, now: float, pool: int) -> bool:
        """Whether so few of ``pool`` instances are in rotation that picks should
        ignore ejection (the policy's ``panic_threshold``)."""
        return self.policy.panicking(pool, self.ejected(now))

    def out(self, now: float) -> dict[str, float]:
        """The instances out of rotation at ``now``, with the end of their ejection."""
        return {key: record.until for key, record in self.records.items() if record.until > now}

    def failed(
        self, key: str, error: BaseException, now: float, pool: int, tag: object = None
    ) -> float | None:
        """Book a failure of ``key`` among ``pool`` instances; returns the ejection's
        seconds if this failure ejected it, else ``None``.  ``tag`` (whatever names the
        endpoint that failed without holding it) is handed back to :meth:`retain`."""
        policy = self.policy
        connection = policy.is_connection_failure(error)
        counted = policy.consecutive_errors is not None and bool(policy.errors(error))
        if not (connection or counted):
            return None
        self._expire(now)
        self._prune(now)
        record = self.records.get(key)
        if record is None or self._stale(record, now):
            record = self.records[key] = _Record()
        record.last = now
        record.tag = tag
        if record.until > now:
            return None  # already out: a failure from an attempt that started before
        record.run += connection
        record.error_run += counted
        if record.run < policy.consecutive_failures and (
                not counted or record.error_run < cast(int, policy.consecutive_errors)):
            return None
        if len(self._out) >= policy.max_ejected(pool):
            return None
        record.by_connection = record.run >= policy.consecutive_failures
        record.since = now
        record.run = record.error_run = 0
        record.ejections += 1
        duration = self.policy.ejection_time(record.ejections)
        self._serial += 1
        record.serial = self._serial
        record.until = now + duration
        record.last = record.until
        self._out.add(record.serial)
        heapq.heappush(self._heap, (record.until, record.serial, key))
        return duration

    def succeeded(self, key: str) -> bool:
        """``key`` answered: forget it; returns whether there was a record."""
        record = self.records.pop(key, None)
        if record is None:
            return False
        self._out.discard(record.serial)
        return True

    def ejection(self, key: str, now: float) -> tuple[str, float] | None:
        """``(cause, since)`` of ``key``'s ejection if it is out at ``now``: why
        (:data:`lb.health_check.CONNECTION` or :data:`~lb.health_check.ERRORS`) and
        since when."""
        record = self.records.get(key)
        if record is None or record.until <= now:
            return None
        return (CONNECTION if record.by_connection else ERRORS), record.since

    def uneject(self, key: str, now: float) -> bool:
        """End ``key``'s ejection at ``now`` (an active health check vouched for it); its
        history stays, so a relapse is ejected for longer.  Returns whether it was out."""
        record = self.records.get(key)
        if record is None or record.until <= now:
            return False
        record.until = now
        record.last = now
        self._out.discard(record.serial)
        return True

    def retain(self, present: Callable[[str, object], bool]) -> int:
        """Forget every instance for which ``present(key, tag)`` is false (it left the
        endpoint set, or came back with a new endpoint); returns how many were forgotten."""
        gone = [key for key, record in self.records.items() if not present(key, record.tag)]
        for key in gone:
            self._out.discard(self.records.pop(key).serial)
        return len(gone)

    def _expire(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, serial, _ = heapq.heappop(heap)
            self._out.discard(serial)
        if not self._out:
            heap.clear()  # only stale entries of forgotten records can be left

    def _prune(self, now: float) -> None:
        # Amortised: at most one pass per max_ejection_time.
        if now < self._next_prune:
            return
        self._next_prune = now + self.policy.max_ejection_time
        stale = [key for key, record in self.records.items() if self._stale(record, now)]
        for key in stale:
            del self.records[key]

    def _stale(self, record: _Record, now: float) -> bool:
        return record.until <= now and record.last + self.policy.max_ejection_time <= now
