"""What the asyncio driver (:mod:`._service`) and the thread driver (:mod:`._threaded`)
share: everything about carrying out a :class:`~kitsd.serve._drain.Lifecycle` that
neither waits nor runs I/O.

A driver turns each step of the machine into one wait -- for a registry call on a
daemon thread (:meth:`Driver._work`), a self-check, a sleep, or nothing (idle) --
that a signal or the drain deadline may cut short, and feeds how the wait ended
(``"done"`` with a value, ``"signal"``, ``"deadline"``) to :meth:`Driver._next`,
which asks the machine for the next step.  How a wait is done (``asyncio.wait``
against ``threading.Event``), how signals are queued (the loop's
``call_soon_threadsafe`` against a lock), the self-check (asyncio streams and
``httpx.AsyncClient`` against sockets and ``httpx.get``) and the waiting for
registry calls at close stay in the drivers: they are what differs.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from kitsd.serve._drain import (
    Check,
    Deregister,
    Idle,
    Lifecycle,
    Phase,
    Probe,
    Register,
    Release,
    Sleep,
    Step,
)
from kitsd.serve._options import Options
from kitsd.serve._registries import departure_probe

__all__ = ["CLOSE_GRACE", "Driver"]

logger = logging.getLogger(__name__)

#: Seconds closing still gives registry calls after a drain (and at least, without one).
CLOSE_GRACE = 1.0

_Handler = Callable[[int, FrameType | None], Any] | int | None


class _Flag(Protocol):
    """``asyncio.Event`` or ``threading.Event``: all :meth:`Driver._release` needs."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...


class Driver:
    """The driver-independent half of :class:`~kitsd.serve.Service` and
    :class:`~kitsd.serve.ThreadedService` (not public; see the module docstring)."""

    _released: _Flag

    def __init__(self, registrar: Any, options: Options) -> None:
        self.options = options
        self.registrar = registrar
        self._machine = Lifecycle(options.timings, self_check=options.self_check is not None)
        self._rng = random.Random()
        self._previous: dict[signal.Signals, _Handler] = {}
        self._forward: int | None = None  # the signal handed on at release
        self._register_called = False
        self._deregistered = False  # a deregister() call returned since the last register
        self._probe_now: Callable[[], bool] = lambda: True

    # -- state --------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        """Where the instance is: starting, registering, serving, draining, released."""
        return self._machine.phase

    @property
    def draining(self) -> bool:
        """Whether the drain started (the health route answers 503)."""
        return self._machine.draining

    @property
    def registered(self) -> bool:
        """Whether the registry lists the instance, as far as this service knows."""
        return self._machine.registered

    @property
    def reason(self) -> str | None:
        """Why the drain ended (``"gone"``, ``"deadline"``, ``"cut"``, ``"never registered"``,
        ``"closed"``), once released."""
        return self._machine.reason

    # -- signals ------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        raise NotImplementedError  # pragma: no cover - each driver queues signals its way

    def _take_pending(self) -> list[int]:
        """The signals queued since the last call (0: :meth:`shutdown`), cleared."""
        raise NotImplementedError  # pragma: no cover - each driver queues signals its way

    def _take_signals(self) -> None:
        """Put :meth:`_on_signal` in front of the handlers of ``signals`` (main thread only;
        elsewhere logged and skipped)."""
        signals = self.options.signals
        if not signals:
            return
        if threading.current_thread() is not threading.main_thread():
            logger.warning("kitsd.serve: not on the main thread, so %s cannot start the "
                           "drain; call shutdown() instead",
                           ", ".join(sig.name for sig in signals))
            return
        try:
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        except BaseException:
            self._restore_signals()
            raise

    def _call_previous(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signal.Signals(signum))
        if callable(previous):
            previous(signum, frame)

    def _restore_signals(self) -> None:
        for sig, previous in self._previous.items():
            if previous is not None and signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, previous)
        self._previous.clear()

    def _signal_step(self) -> Step:
        """The machine's answer to the signals queued since the last call."""
        step: Step = Idle()
        for signum in self._take_pending():
            if signum:
                self._forward = signum
            step = self._machine.signal(time.monotonic())
            if isinstance(step, Release):
                break
        return step

    # -- steps --------------------------------------------------------------------------

    def _work(self, step: Step) -> Callable[[], bool]:
        """The blocking registry call that carries out ``step``, a :class:`Register`,
        :class:`Deregister` or :class:`Probe` (run on a daemon thread)."""
        if isinstance(step, Register):
            return self._register
        if isinstance(step, Deregister):
            self._probe_now = self.options.probe or departure_probe(self.registrar)
            return self._deregister
        return self._probe_once

    def _next(self, step: Step, outcome: str, value: Any = None) -> Step:
        """The step after ``step``, whose wait ended with ``outcome`` (``"done"`` with
        ``value``, ``"signal"``, ``"deadline"``; a sleep also ``"timeout"``)."""
        machine, now = self._machine, time.monotonic
        if outcome == "signal" or isinstance(step, Idle):
            return self._signal_step()
        if isinstance(step, Check):
            return machine.checked(bool(value))
        if isinstance(step, Register):
            return machine.register_done(bool(value), self._rng.random())
        if outcome == "deadline" or isinstance(step, Sleep):
            return machine.woken(now())
        if isinstance(step, Deregister):
            return machine.deregister_done(now(), bool(value))
        assert isinstance(step, Probe)  # noqa: S101 - Release never reaches a wait
        return machine.probed(now(), bool(value))

    def _failed(self, error: Exception) -> Release:
        """The driver broke (a defect): release rather than leave the server hanging."""
        logger.error("kitsd.serve: the lifecycle driver failed; releasing", exc_info=error)
        self._machine.phase = Phase.RELEASED
        self._machine.reason = "error"
        return Release("error")

    def _register(self) -> bool:
        self._register_called = True
        try:
            self.registrar.register()
        except Exception as error:  # noqa: BLE001 - logged; the driver retries with backoff
            logger.warning("kitsd.serve: registering %r failed (%s); serving unregistered, "
                           "retrying", self.registrar, error)
            return False
        self._deregistered = False
        logger.info("kitsd.serve: registered %r", self.registrar)
        return True

    def _deregister(self) -> bool:
        try:
            self.registrar.deregister()
        except Exception as error:  # noqa: BLE001 - the registry may still drop us: probed
            logger.warning("kitsd.serve: deregistering %r failed (%s)", self.registrar, error)
            return False
        self._deregistered = True
        return True

    def _probe_once(self) -> bool:
        try:
            return bool(self._probe_now())
        except Exception as error:  # noqa: BLE001 - counts as still there
            logger.debug("kitsd.serve: probing the registry failed: %s", error)
            return False

    def _check_target(self) -> tuple[str, str, float] | None:
        """The self-check to make: ``(kind, where, timeout)`` (``"http"`` and a URL, or
        ``"tcp"`` and ``host:port``); ``None`` for none."""
        if self.options.self_check is None:
            return None
        kind, where = self.options.self_check
        # the health route may take check_timeout to answer: the check waits a little longer
        return kind, where, self.options.check_timeout + 1.0

    def _release(self, reason: str) -> None:
        if self._released.is_set():
            return
        logger.info("kitsd.serve: drain of %r over (%s)", self.registrar, reason)
        self._released.set()
        if self._forward is not None:
            self._call_previous(self._forward, None)

    # -- closing ------------------------------------------------------------------------

    def _close_deadline(self) -> float:
        """Until when closing waits for registry calls: :data:`CLOSE_GRACE` after a
        drain, ``drain`` seconds (at least the grace) without one."""
        grace = CLOSE_GRACE if self._machine.draining \
            else max(self.options.timings.drain, CLOSE_GRACE)
        return time.monotonic() + grace

    def _closed_state(self, stuck: bool) -> bool:
        """Mark the machine released and unregistered; whether a last ``deregister()``
        is due (one was made registered and no drain deregistered, or its call failed;
        not while a registry call is stuck: it would hang too)."""
        if self._machine.phase is not Phase.RELEASED:
            # the server stops without a drain (Ctrl-C, a signal not in `signals`)
            self._machine.phase = Phase.RELEASED
            self._machine.reason = "closed"
        self._machine.registered = False
        return self._register_called and not self._deregistered and not stuck

    def _left_behind(self, count: int) -> None:
        logger.warning("kitsd.serve: %d registry call(s) of %r still running at close "
                       "(a registry that does not answer); left behind, not waited for",
                       count, self.registrar)
