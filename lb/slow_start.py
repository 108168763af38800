"""Slow start, free of I/O: the :class:`SlowStart` settings, Envoy's ramp curve and
the :class:`Warming` table of instances still ramping.

Theory of operation
-------------------
A new instance (cold caches, a JIT that has not compiled the hot path, empty
connection pools) answers slowly until it has served some traffic.  Sending it a
full share at once makes its first seconds the slowest calls of the service.
Slow start gives it a share that grows over a window instead.

The curve is Envoy's: an instance ``age`` seconds into its ramp has the weight
factor ::

    factor(age) = max(min_weight_percent / 100, (age / window) ** (1 / aggression))
    factor(age) = 1                                   for age >= window

``aggression`` 1 ramps linearly; above 1 it rises faster early on, below 1 it
holds back longer.  The minimum keeps a newcomer from getting nothing at all
(nothing learnt, nothing warmed).  Balancers multiply an instance's share by its
factor, so a factor of 0.25 gets a quarter of the calls a warm instance gets.

Two peers' gaps, closed here:

* **No surge at the end of the window** (envoy#26290).  The curve is continuous
  at ``window`` (both branches give 1) and a balancer reads it at the time of each
  pick, never from weights computed when the set last changed: there is no step
  when a ramp ends, and a set change (another instance joining or leaving)
  neither restarts nor jumps anyone's ramp, since start times are kept by
  instance name across sets.
* **When every instance is new** (envoy#24689: "all endpoints end up getting the
  same amount of requests").  Shares are relative: if every instance ramps, no
  weighting can keep calls off them, there is nobody else to send them to.  What
  can still ramp is how many calls the stack has in flight.  :meth:`Warming.capacity`
  is, when every instance ramps, the mean factor of the set (about ``min_weight``
  when all just arrived), and 1.0 as long as one is warm; an adaptive
  concurrency limit scales its limit by it, so a cold fleet gets calls in
  proportion to its warmth and the excess is refused fast rather than queued on
  cold instances.  The first set with instances a balancer sees is warm by
  default (``warm_start``): the *client* is new then, not the instances, and a
  restarted client must not throttle a fleet that has been up for hours (nor
  one whose registry answered "none" at first).

An instance that leaves and comes back ramps again (it is most likely a new
process).  :meth:`Warming.restart` starts a ramp over for one that is known to
have been out (a failed health check that passes again, as Envoy does with
active health checking).

Nothing here locks or reads a clock: every method takes ``now``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from kitsd.core import validate

__all__ = ["SlowStart", "Warming"]


@dataclass(frozen=True, slots=True)
class SlowStart:
    """Ramp a new instance's share of calls over ``window`` seconds (Envoy's slow start).

    * ``window`` (seconds, > 0, default 30): how long the ramp lasts; a newcomer has
      its full share from then on.
    * ``aggression`` (> 0, default 0.3): the curve's exponent is ``1 / aggression``;
      1 is linear, above 1 the share rises faster at first, below 1 it holds back
      while the instance is coldest (0.3: it grows as the time to the power 3.3).
    * ``min_weight_percent`` (0..100, default 0.5): the smallest share factor, so a
      newcomer still gets some calls to warm up on.
    * ``warm_start`` (default ``True``): the instances of the first set a balancer
      sees are taken as warm (the client is new, not them); ``False`` ramps them too.

    The defaults are not Envoy's (linear, 10 %), which do not protect a p99: a p99
    hides at most 1 % of the calls, and a linear ramp from 10 % sends a cold
    newcomer a tenth of a warm instance's calls from its first second.  Three
    newcomers joining three warm instances, 10x slower for their first 5 s,
    under 200 calls/s (``python -m bench.bench_slow_start``): Envoy's curve leaves
    the p99 of the next 10 s where it is without slow start (1.0x), the defaults
    cut it 5-8x; the newcomers still reach half a warm instance's share at ~24 s and all of
    it at 30 s (Envoy's: 15 s and 30 s).  Envoy also needs its floor for its
    scheduler (a host of tiny weight gets a deadline far in the future,
    envoy#19526); here the factor is a keep probability read at each pick, so
    1 % means 1 % of the calls.  If your instances stay cold longer than ~5 s,
    widen the window (about six times the cold period).

    Give it to a balancer (``slow_start=``).  A plain frozen settings object:
    shareable, thread-safe.  Raises :class:`~kitsd.core.errors.WrongTypeError` /
    :class:`~kitsd.core.errors.MisuseError` naming a bad setting.
    """

    window: float = 30.0
    aggression: float = 0.3
    min_weight_percent: float = 0.5
    warm_start: bool = True

    def __post_init__(self) -> None:
        validate.seconds("window", self.window)
        validate.number("aggression", self.aggression, above=0.0)
        validate.number("min_weight_percent", self.min_weight_percent, minimum=0.0,
                        maximum=100.0)
        validate.flag("warm_start", self.warm_start)

    def factor(self, age: float) -> float:
        """The share factor of an instance ``age`` seconds into its ramp, in
        ``[min_weight_percent / 100, 1]``; 1 from ``window`` on (continuous there)."""
        if age >= self.window:
            return 1.0
        floor = self.min_weight_percent / 100.0
        if age <= 0.0:
            return floor
        ramp: float = (age / self.window) ** (1.0 / self.aggression)
        return ramp if ramp > floor else floor


def _as_set(items: Collection[str]) -> set[str] | frozenset[str]:
    return items if isinstance(items, set | frozenset) else set(items)


class Warming:
    """When each instance still ramping started, by instance name (the state one
    balancer owns for its :class:`SlowStart`; see the module docstring).

    Not thread-safe by itself: the balancer calls it under its lock.
    """

    __slots__ = ("_ends", "_seen", "_starts", "policy")

    def __init__(self, policy: SlowStart) -> None:
        self.policy = policy
        self._starts: dict[str, float] = {}
        self._ends = float("-inf")  # no ramp runs at or after this time
        self._seen = False  # whether a set with instances has been seen (warm_start's)

    def __len__(self) -> int:
        return len(self._starts)

    @property
    def starts(self) -> Mapping[str, float]:
        """Ramp start times of the instances still (possibly) ramping."""
        return self._starts

    def update(self, previous: Collection[str], current: Collection[str], now: float) -> list[str]:
        """The set changed from ``previous`` to ``current``: instances new to it start
        ramping at ``now`` (on the first set that has any only if ``warm_start`` is
        off: a registry that first answered "none" says nothing of their age),
        those that left are forgotten.  Returns the instances that started ramping.
        O(size of the sets), in C for the most part."""
        first = not self._seen
        if current:
            self._seen = True
        starts = self._starts
        if starts:
            present = _as_set(current)
            for key in [key for key in starts if key not in present]:
                del starts[key]
        if first and self.policy.warm_start:
            return []
        started = sorted(key for key in _as_set(current).difference(previous) if key not in starts)
        for key in started:
            starts[key] = now
        if started:
            self._ends = max(self._ends, now + self.policy.window)
        return started

    def restart(self, key: str, now: float) -> None:
        """Start ``key``'s ramp over at ``now`` (it was out, and is back)."""
        self._seen = True
        self._starts[key] = now
        self._ends = max(self._ends, now + self.policy.window)

    def forget(self, key: str) -> None:
        """Drop ``key``'s ramp (it left)."""
        self._starts.pop(key, None)

    def warming(self, now: float) -> bool:
        """Whether any ramp may still run at ``now``; drops the ramps that ended, so
        a balancer can go back to its plain picks."""
        if now < self._ends:
            return True
        self._starts.clear()
        return False

    def started(self, key: str) -> float | None:
        """When ``key``'s ramp started, or ``None`` (it is warm)."""
        return self._starts.get(key)

    def factor(self, key: str, now: float) -> float:
        """``key``'s share factor at ``now`` (1.0 when it is warm)."""
        start = self._starts.get(key)
        return 1.0 if start is None else self.policy.factor(now - start)

    def capacity(self, size: int, now: float) -> float:
        """What an adaptive concurrency limit scales by for a set of ``size`` instances
        at ``now`` (every instance ramping belongs to the set: :meth:`update` forgets
        those that left): 1.0 while any instance of the set is warm — relative shares
        already keep calls off the newcomers, and a scale-up must not shrink the limit
        (the mean factor of 3 warm and 3 new instances is a half) — else, when every
        one ramps, their mean factor (near ``min_weight_percent / 100`` when all just
        arrived).  O(number ramping)."""
        starts = self._starts
        if size <= 0 or len(starts) < size:
            return 1.0
        factor = self.policy.factor
        total = 0.0
        for start in starts.values():
            share = factor(now - start)
            if share >= 1.0:
                return 1.0  # its ramp has ended: a warm instance
            total += share
        return total / size

    @property
    def ends(self) -> float:
        """No ramp runs at or after this time (``-inf``: none ever started)."""
        return self._ends
