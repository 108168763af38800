"""``ThreadedService``: the serving lifecycle driven on a thread.

The thread twin of :class:`kitsd.serve.Service`, for servers whose main thread runs
no asyncio loop (gunicorn's master, a ``ThreadingHTTPServer``).  The decisions are
the same :class:`~kitsd.serve._drain.Lifecycle`'s; this module only waits on a
``threading.Event`` where the asyncio driver awaits, and runs the registry calls in
a small pool of its own so that a signal or the drain deadline can interrupt the
wait (never the call: it is waited for by :meth:`ThreadedService.close`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from types import FrameType
from typing import Any

import httpx

from kitsd.core import validate
from kitsd.sd.instance import split_instance
from kitsd.serve import _calls
from kitsd.serve._drain import (
    MAX_DRAIN,
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
from kitsd.serve._options import check_options
from kitsd.serve._registries import departure_probe
from kitsd.serve._service import CLOSE_GRACE

__all__ = ["ThreadedService"]

logger = logging.getLogger(__name__)

_Handler = Callable[[int, FrameType | None], Any] | int | None


class ThreadedService:
    """Registers when ready, drains before exit, on a thread (see :class:`Service` for
    the behaviour and the options, which are the same).

    ``on_change(phase, registered)`` is called on the driver thread after every step
    (gunicorn's hooks publish it to the workers); the signal is handed on at release
    by calling the previous handler *on the driver thread* (gunicorn's arbiter only
    queues it).  :meth:`close` deregisters if no drain did, joins the driver thread
    and puts the signal handlers back; it waits for registry calls still running as
    :meth:`Service.aclose` does (at most 1 s after a drain, ``drain`` seconds
    without; a call hung longer is abandoned on its daemon thread, logged).  A
    closed service cannot be started again.  Thread-safe.
    """

    def __init__(self, registrar: Any, *,
                 on_change: Callable[[Phase, bool], None] | None = None,
                 **options: Any) -> None:
        self.options = check_options(registrar, **options)
        if on_change is not None and not callable(on_change):
            raise TypeError(f"on_change must be callable, not {on_change!r}")
        self.registrar = registrar
        self._on_change = on_change
        self._machine = Lifecycle(self.options.timings,
                                  self_check=self.options.self_check is not None)
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ready = False
        self._closing = False
        self._pending: list[int] = []
        self._released = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._calls: set[Future[Any]] = set()
        self._previous: dict[signal.Signals, _Handler] = {}
        self._forward: int | None = None
        self._register_called = False
        self._deregistered = False
        self._probe_now: Callable[[], bool] = lambda: True

    @property
    def phase(self) -> Phase:
        """Where the instance is."""
        return self._machine.phase

    @property
    def draining(self) -> bool:
        """Whether the drain started."""
        return self._machine.draining

    @property
    def registered(self) -> bool:
        """Whether the registry lists the instance, as far as this service knows."""
        return self._machine.registered

    @property
    def reason(self) -> str | None:
        """Why the drain ended, once released."""
        return self._machine.reason

    def start(self) -> None:
        """Take over the signals (main thread only) and start the driver thread.
        Idempotent; raises ``RuntimeError`` once closed."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed: make a new one to serve again")
            if self._thread is not None:
                return
            if self.options.signals:
                if threading.current_thread() is threading.main_thread():
                    try:
                        for sig in self.options.signals:
                            self._previous[sig] = signal.signal(sig, self._on_signal)
                    except BaseException:
                        self._restore_signals()
                        raise
                else:
                    logger.warning("kitsd.serve: not on the main thread, so signals cannot "
                                   "start the drain; call shutdown() instead")
            self._thread = threading.Thread(target=self._run, name="kitsd-serve", daemon=True)
            self._thread.start()

    def ready(self) -> None:
        """The server is up: self-check, then register."""
        with self._lock:
            self._ready = True
        self._wake.set()

    def shutdown(self) -> None:
        """Start the drain (a second call ends it)."""
        with self._lock:
            self._pending.append(0)
        self._wake.set()

    def wait_released(self, timeout: float | None = None) -> bool:
        """Block until the drain is over (or ``timeout`` seconds, at most a day; ``None``:
        no limit); whether it is.  Raises ``TypeError``/``MisuseError`` for a bad timeout."""
        wait = validate.optional_seconds("timeout", timeout, zero=True, maximum=MAX_DRAIN)
        return self._released.wait(wait)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._released.is_set():
            self._call_previous(signum, frame)
            return
        with self._lock:
            self._pending.append(signum)
        self._wake.set()

    def _call_previous(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signal.Signals(signum))
        if callable(previous):
            previous(signum, frame)

    # -- the driver ---------------------------------------------------------------------

    def _run(self) -> None:
        machine = self._machine
        step: Step = Idle()
        try:
            while not self._closing:
                with self._lock:
                    ready, pending = self._ready, bool(self._pending)
                if pending:
                    step = self._signal_step()
                    break
                if ready:
                    step = machine.ready()
                    break
                self._wake.wait()
                self._wake.clear()
            while not isinstance(step, Release) and not self._closing:
                step = self._advance(step)
                self._changed()
        except Exception:  # pragma: no cover - a defect: never leave the server hanging
            logger.exception("kitsd.serve: the lifecycle driver failed; releasing")
            step = Release("error")
            machine.phase = Phase.RELEASED
            machine.reason = "error"
        if isinstance(step, Release):
            self._release(step.reason)

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change(self._machine.phase, self._machine.registered)
            except Exception:
                logger.exception("kitsd.serve: on_change failed")

    def _signal_step(self) -> Step:
        step: Step = Idle()
        with self._lock:
            pending, self._pending = self._pending, []
        for signum in pending:
            if signum:
                self._forward = signum
            step = self._machine.signal(time.monotonic())
            if isinstance(step, Release):
                break
        return step

    def _wait(self, seconds: float | None, work: Future[Any] | None = None) -> str:
        """Wait ``seconds`` (``None``: no limit) for ``work``, a signal, the deadline:
        ``"done"``, ``"signal"``, ``"deadline"`` or ``"timeout"``."""
        end = None if seconds is None else time.monotonic() + seconds
        while True:
            self._wake.clear()
            if work is not None and work.done():
                return "done"
            with self._lock:
                if self._pending:
                    return "signal"
            if self._closing:
                return "signal"
            now = time.monotonic()
            deadline = self._machine.deadline
            if now >= deadline:
                return "deadline"
            if end is not None and now >= end:
                return "timeout"
            limit = min(deadline, end if end is not None else float("inf")) - now
            self._wake.wait(None if limit == float("inf") else limit)

    def _start_call(self, call: Callable[[], Any]) -> Future[Any]:
        """``call`` on a daemon thread, tracked until it returns (see :mod:`._calls`)."""
        work = _calls.start(call, "kitsd-serve-call")
        with self._lock:
            self._calls.add(work)

        def done(finished: Future[Any]) -> None:
            with self._lock:
                self._calls.discard(finished)
            self._wake.set()

        work.add_done_callback(done)
        return work

    def _call(self, call: Callable[[], Any]) -> tuple[str, Any]:
        work = self._start_call(call)
        outcome = self._wait(None, work)
        return outcome, (work.result() if outcome == "done" else None)

    def _advance(self, step: Step) -> Step:
        machine = self._machine
        now = time.monotonic
        if isinstance(step, Check):
            outcome, ok = self._call(self._self_check)
            return self._signal_step() if outcome == "signal" else machine.checked(bool(ok))
        if isinstance(step, Register):
            outcome, ok = self._call(self._register)
            if outcome == "signal":
                return self._signal_step()
            return machine.register_done(bool(ok), self._rng.random())
        if isinstance(step, Deregister):
            self._probe_now = self.options.probe or departure_probe(self.registrar)
            outcome, ok = self._call(self._deregister)
            if outcome == "signal":
                return self._signal_step()
            if outcome == "deadline":
                return machine.woken(now())
            return machine.deregister_done(now(), bool(ok))
        if isinstance(step, Probe):
            outcome, gone = self._call(self._probe_once)
            if outcome == "signal":
                return self._signal_step()
            if outcome == "deadline":
                return machine.woken(now())
            return machine.probed(now(), bool(gone))
        if isinstance(step, Sleep):
            outcome = self._wait(step.seconds)
            return self._signal_step() if outcome == "signal" else machine.woken(now())
        self._wait(None)  # Idle: until a signal
        return self._signal_step()

    def _register(self) -> bool:
        self._register_called = True
        try:
            self.registrar.register()
        except Exception as error:  # noqa: BLE001 - logged; retried with backoff
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

    def _self_check(self) -> bool:
        target = self.options.self_check
        if target is None:
            return True
        kind, where = target
        timeout = self.options.check_timeout + 1.0
        try:
            if kind == "tcp":
                host, port = split_instance(where)
                with socket.create_connection((host.strip("[]"), port), timeout):
                    return True
            response = httpx.get(where, timeout=timeout, trust_env=False)
        except (OSError, httpx.HTTPError):
            return False
        return 200 <= response.status_code < 300

    def _release(self, reason: str) -> None:
        if self._released.is_set():
            return
        logger.info("kitsd.serve: drain of %r over (%s)", self.registrar, reason)
        self._released.set()
        if self._forward is not None:
            self._call_previous(self._forward, None)

    def close(self) -> None:
        """Deregister if no drain did, join the driver thread, wait (boundedly) for
        registry calls still running, put the signal handlers back.  Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is None:
            self._released.set()
            return
        drained = self._machine.draining
        until = time.monotonic() + (CLOSE_GRACE if drained
                                    else max(self.options.timings.drain, CLOSE_GRACE))
        self._closing = True
        self._wake.set()
        try:
            thread.join()  # the driver waits on events only: it returns at once
            stuck = self._settle(until)
            if self._machine.phase is not Phase.RELEASED:
                self._machine.phase = Phase.RELEASED
                self._machine.reason = "closed"
            self._machine.registered = False
            if self._register_called and not self._deregistered and not stuck:
                self._start_call(self._deregister)
                self._settle(until)
            self._released.set()
            self._changed()
        finally:
            self._released.set()
            self._restore_signals()

    def _settle(self, until: float) -> bool:
        """Wait for the registry calls still running, until ``until`` at most; whether
        one is still running then (abandoned on its daemon thread, logged)."""
        with self._lock:
            calls = list(self._calls)
        _, left = concurrent.futures.wait(calls, timeout=max(0.0, until - time.monotonic()))
        if left:
            logger.warning("kitsd.serve: %d registry call(s) of %r still running at close "
                           "(a registry that does not answer); left behind, not waited for",
                           len(left), self.registrar)
            with self._lock:
                self._calls.clear()
        return bool(left)

    def _restore_signals(self) -> None:
        for sig, previous in self._previous.items():
            if previous is not None and signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, previous)
        self._previous.clear()

    def __enter__(self) -> ThreadedService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"kitsd.serve.ThreadedService({self.registrar!r}, phase={self.phase.value})"
