"""Passive ejection bookkeeping: a pure table.

Theory of operation
-------------------
When an attempt fails with a connection-level error (:class:`sd.ConnectionFailure`)
its endpoint is *ejected*: balancers skip it for ``base`` seconds, doubling for
each further consecutive ejection up to ``maximum``; a success clears its strikes.

Ejection is advice, never a verdict: :meth:`EjectionTable.usable` skips at most
``max_fraction`` of the pool (rounded down, and never every candidate), honouring
the ejections that have longest to run, so a burst of failures cannot take every
instance out of rotation.

Endpoints are tracked by identity; a record holds its endpoint so the identity
stays unique while the record lives.  Records are forgotten ``maximum`` seconds
after their ejection ends.  Nothing here locks or reads a clock.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["EjectionTable"]

E = TypeVar("E")


@dataclass(slots=True)
class _Record:
    endpoint: object
    until: float
    strikes: int


class EjectionTable:
    """Which endpoints are out of rotation, and until when."""

    def __init__(self, *, base: float = 1.0, maximum: float = 30.0, max_fraction: float = 0.5):
        if base <= 0 or maximum < base:
            raise ValueError("need 0 < base <= maximum")
        if not 0.0 <= max_fraction < 1.0:
            raise ValueError("max_fraction must be in [0, 1)")
        self.base = base
        self.maximum = maximum
        self.max_fraction = max_fraction
        self._records: dict[int, _Record] = {}

    @property
    def empty(self) -> bool:
        """Whether no endpoint has a record (the hot path's check)."""
        return not self._records

    def __bool__(self) -> bool:
        return bool(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def eject(self, endpoint: object, now: float) -> float:
        """Take ``endpoint`` out of rotation; returns for how many seconds."""
        self._prune(now)
        record = self._records.get(id(endpoint))
        strikes = 1 if record is None else record.strikes + 1
        duration = min(self.maximum, self.base * 2.0 ** min(strikes - 1, 32))
        self._records[id(endpoint)] = _Record(endpoint, now + duration, strikes)
        return duration

    def succeeded(self, endpoint: object) -> None:
        """``endpoint`` answered: forget its strikes."""
        self._records.pop(id(endpoint), None)

    def is_ejected(self, endpoint: object, now: float) -> bool:
        """Whether ``endpoint`` is ejected at ``now`` (ignoring the cap)."""
        record = self._records.get(id(endpoint))
        return record is not None and record.until > now

    def usable(
        self, endpoints: Sequence[E], now: float, exclude: Collection[int] = ()
    ) -> Sequence[E]:
        """The endpoints a balancer should pick from.

        Drops those whose ``id`` is in ``exclude`` (they failed earlier in this
        call) unless that would leave none, then drops ejected ones within the cap.
        Returns ``endpoints`` itself when nothing is dropped.
        """
        candidates: Sequence[E] = endpoints
        if exclude:
            kept = [e for e in endpoints if id(e) not in exclude]
            if kept:
                candidates = kept
        if not self._records:
            return candidates
        ejected = [
            (record.until, index)
            for index, endpoint in enumerate(candidates)
            if (record := self._records.get(id(endpoint))) is not None and record.until > now
        ]
        if not ejected:
            return candidates
        # the epsilon keeps 100 * 0.29 from rounding down to 28
        allowed = min(int(len(endpoints) * self.max_fraction + 1e-9), len(candidates) - 1)
        if allowed <= 0:
            return candidates
        ejected.sort(reverse=True)
        skip = {index for _, index in ejected[:allowed]}
        return [endpoint for index, endpoint in enumerate(candidates) if index not in skip]

    def _prune(self, now: float) -> None:
        stale = [key for key, r in self._records.items() if r.until + self.maximum <= now]
        for key in stale:
            del self._records[key]
