"""The observers installed process-wide, and the delivery of observations to them.

Observers are kept as tuples swapped whole under a lock, so emitters read them
without one; an emitter tests ``HUB.observers`` (empty by default) before building
an observation, which is all the seam costs when nobody listens.  Delivery is
synchronous, in the emitting thread and task; "finished" observations go in
reverse registration order; an observer that raises is logged once and
otherwise ignored (see the package docstring, :mod:`kitsd.core.observe`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from kitsd.core.observe.observations import Observation, Observer

__all__ = ["HUB", "add_observer", "emit", "emit_started", "observing", "remove_observer"]

logger = logging.getLogger(__name__)


class _Hub:
    """The installed observers, as tuples swapped whole (readers take no lock)."""

    __slots__ = ("_complained", "_lock", "observers", "reversed", "starting")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.observers: tuple[Observer, ...] = ()
        self.reversed: tuple[Observer, ...] = ()
        #: the observers that hear "started" observations (see :func:`emit_started`)
        self.starting: tuple[Observer, ...] = ()
        self._complained: set[int] = set()  # ids of installed observers that raised

    def add(self, observer: Observer) -> None:
        if not callable(observer):
            raise TypeError(f"an observer must be callable(observation), got {observer!r}")
        with self._lock:
            self._set((*self.observers, observer))

    def remove(self, observer: Observer) -> None:
        with self._lock:
            observers = list(self.observers)
            for index, installed in enumerate(observers):
                if installed is observer:
                    del observers[index]
                    self._complained.discard(id(observer))
                    self._set(tuple(observers))
                    return

    def _set(self, observers: tuple[Observer, ...]) -> None:
        self.observers = observers
        self.reversed = observers[::-1]
        self.starting = tuple(each for each in observers if getattr(each, "hears_starts", True))

    def first_complaint(self, observer: Observer) -> bool:
        """Whether this is the first error of ``observer`` since it was installed."""
        key = id(observer)  # only while installed: remove() forgets it
        if key in self._complained:
            return False
        self._complained.add(key)
        return True


#: The process-wide hub.  Emitters test ``HUB.observers`` before building anything.
HUB = _Hub()


def add_observer(observer: Observer) -> None:
    """Install ``observer`` process-wide (installing one twice makes it hear twice).
    Raises ``TypeError`` if it is not callable.  Thread-safe."""
    HUB.add(observer)


def remove_observer(observer: Observer) -> None:
    """Uninstall one installation of ``observer``; unknown observers are ignored."""
    HUB.remove(observer)


@contextmanager
def observing(*observers: Observer) -> Iterator[None]:
    """Install ``observers`` for the ``with`` block (handy in tests)."""
    installed: list[Observer] = []
    try:
        for observer in observers:
            HUB.add(observer)
            installed.append(observer)
        yield
    finally:
        for observer in reversed(installed):
            HUB.remove(observer)


def emit(observation: Observation, *, finished: bool = False) -> None:
    """Deliver ``observation`` to every installed observer (``finished``: in reverse
    order).  Never raises on an observer's behalf."""
    for observer in HUB.reversed if finished else HUB.observers:
        try:
            observer(observation)
        except Exception:  # observing must not change the call's outcome
            if HUB.first_complaint(observer):
                logger.exception("observer %r raised on %s; its further errors are not logged",
                                 observer, type(observation).__name__)


def emit_started(observation: Observation) -> None:
    """Deliver a "started" observation (:class:`CallStarted`, :class:`AttemptStarted`)
    to the observers that hear them, in registration order: those without a false
    ``hears_starts`` attribute (an observer that books endings only, as the
    Prometheus one, sets it so; emitters test ``HUB.starting`` before building the
    observation).  Never raises on an observer's behalf."""
    for observer in HUB.starting:
        try:
            observer(observation)
        except Exception:  # observing must not change the call's outcome
            if HUB.first_complaint(observer):
                logger.exception("observer %r raised on %s; its further errors are not logged",
                                 observer, type(observation).__name__)

