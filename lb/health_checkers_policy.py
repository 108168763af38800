"""Active health verdicts, free of I/O: the :class:`HealthTable` of one check's results
per instance, and the rule by which a passing check may un-eject an instance.

Theory of operation
-------------------
A prober checks each instance every ``interval`` (give or take the jitter) and
hands each result to :meth:`HealthTable.result` with the time the check
*started*.  Per instance the table keeps a verdict::

    UNKNOWN --pass--> HEALTHY --unhealthy_threshold fails in a row--> UNHEALTHY
       |                 ^                                               |
       +--unhealthy_threshold fails--> UNHEALTHY --healthy_threshold passes in a row--+

An instance nobody has checked yet is ``UNKNOWN`` and stays in rotation (the
registry said it is there; a check has yet to say otherwise).  ``UNHEALTHY``
takes it out of rotation for every stack that watches it, with no cap on how
many (a failed check is a verdict about the instance; outlier detection's
``max_ejected_percent`` caps guesses from traffic) — but a balancer's panic
threshold still applies.  Results are applied in the order the checks started;
one that started before the last applied result is stale and ignored.

**Un-ejecting.**  Outlier detection ejects an instance *for a cause*
(``"connection"`` or ``"errors"``, :mod:`lb.health_check`).  A passing check
brings it back before its ejection ends (:meth:`HealthTable.unejects`) only if

1. the check covers the cause (by default ``"connection"`` only: a 200 from
   ``/health`` says nothing about the 5xx ``/orders`` returns), and
2. the instance has ``healthy_threshold`` passes in a row, every one of them
   from a check that *started after the ejection*.

The three peer bug reports this replays:

* envoy#24217 — an instance ejected for connection failures stayed out for its
  whole ejection time though checks passed again: here the first qualifying pass
  brings it back.
* envoy#28303 — un-ejection happened whatever the check said, shifting traffic
  back onto a dead instance: here only passes count, and a pass from a check that
  was already in flight when the instance failed (it answered just before the
  instance died) does not qualify (rule 2).
* envoy#32442 — a *failing* check un-ejected an instance that had not yet
  failed enough checks to be marked unhealthy: here a failure resets the run of
  passes and never un-ejects.

Nothing here locks or reads a clock: every method takes the times it needs.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from kitsd.lb.health_check import CAUSES, HealthCheck

__all__ = ["Change", "HealthTable", "Verdict"]


class Verdict(enum.Enum):
    """An instance's standing with its active check."""

    UNKNOWN = "unknown"  # not checked yet: in rotation
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # out of rotation


class Change(enum.Enum):
    """What a result changed (:meth:`HealthTable.result`)."""

    NONE = "none"
    HEALTHY = "healthy"  # UNKNOWN or UNHEALTHY -> HEALTHY
    UNHEALTHY = "unhealthy"  # UNKNOWN or HEALTHY -> UNHEALTHY
    RECOVERED = "recovered"  # UNHEALTHY -> HEALTHY (a ramp may start over)


@dataclass(slots=True)
class _Record:
    verdict: Verdict = Verdict.UNKNOWN
    passes: int = 0  # passes in a row
    fails: int = 0  # failures in a row
    # starts of the last healthy_threshold checks of the current run of passes
    recent: list[float] = field(default_factory=list)
    last_started: float = float("-inf")  # start of the last result applied


class HealthTable:
    """The verdicts of one :class:`lb.health_check.HealthCheck` per instance (see the
    module docstring).  Not thread-safe by itself: its owner (a prober) calls it
    under a lock."""

    __slots__ = ("_records", "check")

    def __init__(self, check: HealthCheck) -> None:
        self.check = check
        self._records: dict[str, _Record] = {}

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def verdict(self, key: str) -> Verdict:
        """``key``'s verdict (``UNKNOWN`` for an instance never checked)."""
        record = self._records.get(key)
        return Verdict.UNKNOWN if record is None else record.verdict

    def healthy(self, key: str) -> bool:
        """Whether ``key`` is in rotation as far as its checks go (not ``UNHEALTHY``)."""
        record = self._records.get(key)
        return record is None or record.verdict is not Verdict.UNHEALTHY

    def unhealthy(self) -> list[str]:
        """The instances out of rotation, sorted."""
        return sorted(key for key, record in self._records.items()
                      if record.verdict is Verdict.UNHEALTHY)

    def result(self, key: str, passed: bool, started: float) -> Change:
        """Book the result of a check of ``key`` that started at ``started``; returns
        the change of verdict it caused.  A result older than the last one applied
        changes nothing."""
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = _Record()
        if started < record.last_started:
            return Change.NONE  # stale: a later check already spoke
        record.last_started = started
        check = self.check
        before = record.verdict
        if passed:
            recent = record.recent
            recent.append(started)
            if len(recent) > check.healthy_threshold:
                del recent[0]
            record.passes += 1
            record.fails = 0
            if before is Verdict.UNKNOWN or (
                    before is Verdict.UNHEALTHY and record.passes >= check.healthy_threshold):
                record.verdict = Verdict.HEALTHY
                return Change.RECOVERED if before is Verdict.UNHEALTHY else Change.HEALTHY
            return Change.NONE
        record.fails += 1
        record.passes = 0
        record.recent.clear()
        if before is not Verdict.UNHEALTHY and record.fails >= check.unhealthy_threshold:
            record.verdict = Verdict.UNHEALTHY
            return Change.UNHEALTHY
        return Change.NONE

    def unejects(self, key: str, cause: str, ejected_at: float,
                 covers: Collection[str] | None = None) -> bool:
        """Whether the checks so far bring back ``key``, ejected at ``ejected_at`` for
        ``cause``: the cause is covered (``covers``, by default the check's own) and
        ``healthy_threshold`` passes in a row came from checks started after the
        ejection.  ``ValueError`` for an unknown cause."""
        if cause not in CAUSES:
            raise ValueError(f"unknown ejection cause {cause!r}")
        if cause not in (self.check.covers if covers is None else covers):
            return False
        record = self._records.get(key)
        threshold = self.check.healthy_threshold
        return (record is not None and record.verdict is not Verdict.UNHEALTHY
                and len(record.recent) >= threshold and record.recent[-threshold] >= ejected_at)

    def forget(self, key: str) -> None:
        """Drop ``key`` (nobody watches it any more)."""
        self._records.pop(key, None)

    def retain(self, present: Callable[[str], bool]) -> list[str]:
        """Drop every instance for which ``present(key)`` is false; returns them."""
        gone = [key for key in self._records if not present(key)]
        for key in gone:
            del self._records[key]
        return gone
