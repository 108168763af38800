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
and busy instances both look expensive; with no latency known yet it is
"least loaded".  A failed attempt never makes an instance look faster: its
sample is at least the current cost.

An instance first seen starts with a neutral cost — ``initial`` if configured,
else the median of the costs known — never zero, which would flood a newcomer
(or a slow instance that just came back) with every request.

Nothing here locks or reads a clock: every method takes ``now``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection

__all__ = ["FLOOR", "LatencyTable"]

#: The smallest cost a score uses (seconds), so that in-flight counts still rank
#: instances whose latency is unknown or zero.
FLOOR = 1e-6


class _State:
    __slots__ = ("cost", "in_flight", "stamp")

    def __init__(self, cost: float, stamp: float) -> None:
        self.cost = cost
        self.stamp = stamp
        self.in_flight = 0


class LatencyTable:
    """Per-instance peak-EWMA costs and requests in flight (see the module docstring)."""

    __slots__ = ("_decay", "_initial", "_states")

    def __init__(self, decay: float, initial: float | None = None) -> None:
        self._decay = decay
        self._initial = initial
        self._states: dict[str, _State] = {}

    def __len__(self) -> int:
        return len(self._states)

    def neutral(self) -> float:
        """The cost a newcomer starts with: ``initial``, else the median cost known."""
        if self._initial is not None:
            return self._initial
        if not self._states:
            return 0.0
        return statistics.median(state.cost for state in self._states.values())

    def retain(self, instances: Collection[str], now: float) -> None:
        """Keep exactly ``instances``: forget those gone, start newcomers neutral."""
        states = self._states
        for key in [key for key in states if key not in instances]:
            del states[key]
        newcomers = [key for key in instances if key not in states]
        if newcomers:
            cost = self.neutral()
            for key in newcomers:
                states[key] = _State(cost, now)

    def _state(self, key: str, now: float) -> _State:
        state = self._states.get(key)
        if state is None:  # picked from a set newer than the last retain
            state = self._states[key] = _State(self.neutral(), now)
        return state

    def cost(self, key: str, now: float) -> float:
        """``key``'s cost at ``now`` (decayed since its last sample)."""
        state = self._states.get(key)
        if state is None:
            return self.neutral()
        elapsed = now - state.stamp
        if elapsed <= 0:
            return state.cost
        return state.cost * math.exp(-elapsed / self._decay)

    def in_flight(self, key: str) -> int:
        state = self._states.get(key)
        return 0 if state is None else state.in_flight

    def score(self, key: str, now: float) -> float:
        """What a pick compares: ``max(cost, FLOOR) * (in_flight + 1)``."""
        state = self._states.get(key)
        if state is None:
            return max(self.neutral(), FLOOR)
        elapsed = now - state.stamp
        cost = state.cost if elapsed <= 0 else state.cost * math.exp(-elapsed / self._decay)
        return (cost if cost > FLOOR else FLOOR) * (state.in_flight + 1)

    def started(self, key: str, now: float) -> None:
        """A request to ``key`` started."""
        self._state(key, now).in_flight += 1

    def finished(self, key: str, now: float, rtt: float, failed: bool = False) -> None:
        """A request to ``key`` that took ``rtt`` seconds ended (``failed``: with an error)."""
        state = self._states.get(key)
        if state is None:
            return  # it left the set while the request ran
        state.in_flight = max(0, state.in_flight - 1)
        cost = state.cost
        if failed:
            rtt = max(rtt, cost)  # a quick failure must not make it look fast
        if rtt > cost:
            state.cost = rtt
        else:
            weight = math.exp(-max(now - state.stamp, 0.0) / self._decay)
            state.cost = state.cost * weight + rtt * (1.0 - weight)
        state.stamp = now
