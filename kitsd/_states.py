"""What the metric adapters read at scrape time: instances by state, breakers by state.

Both ``kitsd.prometheus`` and ``kitsd.otel`` feed one :class:`States` from the
observations they hear and read it when scraped, so a gauge is never stale:

* discovered instances: the count of the last :class:`kitsd.core.observe.DiscoveryUpdated`
  (or failure) per service, among the watches that still run: a watch that stopped
  (:class:`kitsd.core.observe.DiscoveryStopped`) is forgotten, and a watch whose
  label changed counts under its new label only, so what is kept is bounded by the
  watches running, not by every name ever watched;
* ejected instances: the ejections heard, each counted until its end (the
  balancer puts an instance back when its time is up without telling anyone) or
  until :class:`kitsd.core.observe.InstanceRestored`;
* breakers: held weakly, their state read from the breaker itself, so a breaker
  steered by hand (``cb.open()``) shows right and one that is gone disappears.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable

from kitsd.core.observe import (
    BreakerStateChanged,
    DiscoveryFailed,
    DiscoveryStopped,
    DiscoveryUpdated,
    InstanceEjected,
    InstanceRestored,
    Observation,
)

__all__ = ["BREAKER_STATES", "States"]

#: pybreaker's state names, in the order gauges show them.
BREAKER_STATES = ("closed", "open", "half-open")


class States:
    """Instance and breaker states fed by observations; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        # service label -> watch -> its instances, the watch that published last, last
        self._discovered: dict[str, dict[int, int]] = {}
        self._labels: dict[int, str] = {}  # watch -> the label it published under last
        self._ejected: dict[tuple[str, str], float] = {}  # (service, instance) -> until
        self._breakers: dict[str, Callable[[], object]] = {}  # name -> weak ref (or fallback)
        self._last_state: dict[str, str] = {}

    def observe(self, observation: Observation) -> None:
        """Book ``observation`` if it changes a state."""
        if isinstance(observation, DiscoveryUpdated | DiscoveryFailed):
            watch, service = observation.watch, observation.service
            with self._lock:
                if watch:  # 0: an emitter that does not tell its watches apart
                    before = self._labels.get(watch)
                    if before is not None and before != service:
                        self._forget(before, watch)
                    self._labels[watch] = service
                counts = self._discovered.setdefault(service, {})
                counts.pop(watch, None)  # re-inserted: the one published last comes last
                counts[watch] = observation.instances
        elif isinstance(observation, DiscoveryStopped):
            with self._lock:
                watch = observation.watch
                self._forget(self._labels.pop(watch, observation.service) if watch
                             else observation.service, watch)
        elif isinstance(observation, InstanceEjected):
            with self._lock:
                key = (observation.service, observation.instance)
                self._ejected[key] = observation.at + observation.duration
        elif isinstance(observation, InstanceRestored):
            with self._lock:
                self._ejected.pop((observation.service, observation.instance), None)
        elif isinstance(observation, BreakerStateChanged):
            try:
                ref: Callable[[], object] = weakref.ref(observation.breaker)
            except TypeError:  # not a breaker object: show the last state heard
                ref = _no_object
            with self._lock:
                self._breakers[observation.name] = ref
                self._last_state[observation.name] = observation.new

    def _forget(self, service: str, watch: int) -> None:
        counts = self._discovered.get(service)
        if counts is not None:
            counts.pop(watch, None)
            if not counts:
                del self._discovered[service]

    def instances(self) -> dict[tuple[str, str], int]:
        """``(service, state) -> count`` for states ``discovered`` and ``ejected``."""
        now = self._clock()
        with self._lock:
            for key in [key for key, until in self._ejected.items() if until <= now]:
                del self._ejected[key]
            ejected = Counter(service for service, _ in self._ejected)
            counts = {(service, "discovered"): next(reversed(watches.values()))
                      for service, watches in self._discovered.items()}
            for service in {*self._discovered, *ejected}:
                counts[(service, "ejected")] = ejected.get(service, 0)
            return counts

    def breakers(self) -> dict[str, str]:
        """``name -> state`` of the breakers alive."""
        with self._lock:
            entries = list(self._breakers.items())
        states: dict[str, str] = {}
        gone: list[str] = []
        for name, ref in entries:
            cb = ref()
            if cb is None:
                gone.append(name)
                continue
            state = getattr(cb, "current_state", None)
            states[name] = state if isinstance(state, str) else self._last_state[name]
        if gone:
            with self._lock:
                for name in gone:
                    if self._breakers.get(name) is not None and self._breakers[name]() is None:
                        del self._breakers[name]
                        self._last_state.pop(name, None)
        return states


_NO_OBJECT = object()


def _no_object() -> object:
    return _NO_OBJECT
