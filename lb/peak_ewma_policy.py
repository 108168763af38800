"""Peak-sensitive moving averages of latency, free of I/O: :class:`LatencyTable`.

Theory of operation
-------------------
Finagle's ``PeakEwma`` (and Linkerd's): each instance has a *cost*, an
exponentially weighted moving average of its observed latencies that jumps up
at once to any latency above it (the peak) and decays towards lower ones with
time constant ``decay`` seconds.  The decay is over wall time, not samples::

    w = exp(-(now - stamp) / decay)
    cost = rtt                       if rtt > cost        (peak: react at once)
    cost = cost * w + rtt * (1 - w)  otherwise            (calm down slowly)

Reading a cost decays it towards zero over the time since its last sample, so
an instance that has been avoided for long looks cheaper again and gets probed.
The *score* a balancer compares is ``max(cost, FLOOR) * (in_flight + 1)``: slow
and busy instances both look expensive.  An instance whose latency is unknown
(cost 0) and that has a request in flight scores ``PENALTY``: it gets no second
request before its first answer tells how fast it is (Finagle does the same).
A failed attempt never makes an instance look faster, and a fast failure makes it
look slower than the slowest answer known (a trap: an instance answering 503 in
1 ms would otherwise look like the fastest and draw most of the traffic --
linkerd2-proxy#4537).  A failure's sample is twice the largest of its own
latency, the instance's current cost and the *peak*: the latest answer's
latency or, decayed like a cost, a slower one before it.  So one failure puts an
instance behind the healthy ones, each further failure doubles its cost (up to
:data:`MAX_FAILURE_COST` seconds, never below what it already costs), and the
decay still brings it back to be probed.  An attempt abandoned before it
answered (a hedge's cancelled loser, a call past its deadline) says only that
the instance is at least that slow: its time is a lower bound, not a failure.

An instance first seen starts with a neutral cost — ``initial`` if configured,
else the median of the costs known — never zero, which would flood a newcomer
(or a slow instance that just came back) with every request.

Nothing here locks or reads a clock: every method takes ``now``.
"""

from __future__ import annotations

import math
import statistics
from array import array
from collections.abc import Sequence

__all__ = ["FLOOR", "MAX_FAILURE_COST", "PENALTY", "LatencyTable"]

#: The smallest cost a score uses (seconds), so that in-flight counts still rank
#: instances whose latency is unknown or zero.
FLOOR = 1e-6
#: The score of an instance whose latency is unknown (cost 0) while it has requests
#: in flight (Finagle's ``Penalty``): one slow answer must come back before it
#: gets another request, else a newcomer or a cold start floods it.
PENALTY = 1e6
#: The most a failure makes an instance cost (seconds), unless its own latency says
#: more: it decays from there in ``decay * ln(MAX_FAILURE_COST / healthy cost)``.
MAX_FAILURE_COST = 10.0


class LatencyTable:
    """Per-instance peak-EWMA costs and requests in flight (see the module docstring).

    The state of the current set lives in three arrays indexed like the set's
    instances (what a pick has in hand), so that a pick at 10,000 instances reads
    a few contiguous numbers rather than chasing dictionary entries;
    :meth:`retain` carries it over by name when the set changes.
    """

    __slots__ = ("_costs", "_decay", "_in_flight", "_index", "_initial", "_peak",
                 "_peak_stamp", "_stamps",
                 "instances")

    def __init__(self, decay: float, initial: float | None = None) -> None:
        self._decay = decay
        self._initial = initial
        self._peak = 0.0  # the slowest recent answer of any instance (decays)
        self._peak_stamp = 0.0
        #: The instances the arrays are indexed by.
        self.instances: Sequence[str] = ()
        self._index: dict[str, int] = {}
        self._costs = array("d")
        self._stamps = array("d")
        self._in_flight = array("q")

    def __len__(self) -> int:
        return len(self.instances)

    def neutral(self) -> float:
        """The cost a newcomer starts with: ``initial``, else the median cost known."""
        if self._initial is not None:
            return self._initial
        if not self._costs:
            return 0.0
        return statistics.median(self._costs)

    def retain(self, instances: Sequence[str], now: float) -> None:
        """Index by ``instances`` from now on: keep what is known of those that stay,
        start newcomers neutral, forget the others."""
        old_index, costs, stamps, in_flight = (self._index, self._costs, self._stamps,
                                               self._in_flight)
        neutral = self.neutral()
        size = len(instances)
        new_costs = array("d", bytes(8 * size))
        new_stamps = array("d", bytes(8 * size))
        new_in_flight = array("q", bytes(8 * size))
        index: dict[str, int] = {}
        for position, key in enumerate(instances):
            index[key] = position
            old = old_index.get(key)
            if old is None:
                new_costs[position] = neutral
                new_stamps[position] = now
            else:
                new_costs[position] = costs[old]
                new_stamps[position] = stamps[old]
                new_in_flight[position] = in_flight[old]
        self.instances = instances
        self._index = index
        self._costs, self._stamps, self._in_flight = new_costs, new_stamps, new_in_flight

    def index_of(self, key: str) -> int:
        """``key``'s index in :attr:`instances`, or -1."""
        return self._index.get(key, -1)

    def cost(self, index: int, now: float) -> float:
        """The cost at ``index`` at ``now`` (decayed since its last sample)."""
        elapsed = now - self._stamps[index]
        cost = self._costs[index]
        return cost if elapsed <= 0 else cost * math.exp(-elapsed / self._decay)

    def in_flight(self, index: int) -> int:
        return self._in_flight[index]

    def score(self, index: int, now: float) -> float:
        """What a pick compares: ``max(cost, FLOOR) * (in_flight + 1)``."""
        cost = self._costs[index]
        in_flight = self._in_flight[index]
        if cost == 0.0 and in_flight:
            return PENALTY + in_flight
        elapsed = now - self._stamps[index]
        if elapsed > 0:
            cost *= math.exp(-elapsed / self._decay)
        return (cost if cost > FLOOR else FLOOR) * (in_flight + 1)

    def started(self, index: int) -> None:
        """A request to the instance at ``index`` started."""
        self._in_flight[index] += 1

    def finished(self, index: int, now: float, rtt: float, failed: bool | None = False) -> None:
        """A request to the instance at ``index`` that took ``rtt`` seconds ended:
        ``failed`` ``False``: it answered; ``True``: it failed; ``None``: it was
        abandoned before it answered (``rtt`` is a lower bound)."""
        if self._in_flight[index] > 0:
            self._in_flight[index] -= 1
        cost = self._costs[index]
        if failed is None:
            rtt = max(rtt, cost)
        elif failed:
            known = max(rtt, self.cost(index, now), self.peak(now), FLOOR)
            rtt = max(rtt, cost, min(2.0 * known, MAX_FAILURE_COST))
        else:
            peak = self.peak(now)
            self._peak = rtt if rtt > peak else peak
            self._peak_stamp = now
        if rtt > cost:
            self._costs[index] = rtt
        else:
            weight = math.exp(-max(now - self._stamps[index], 0.0) / self._decay)
            self._costs[index] = cost * weight + rtt * (1.0 - weight)
        self._stamps[index] = now

    def peak(self, now: float) -> float:
        """The slowest recent answer of any instance, decayed to ``now``."""
        elapsed = now - self._peak_stamp
        peak = self._peak
        return peak if elapsed <= 0 else peak * math.exp(-elapsed / self._decay)
