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
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from types import FrameType
from typing import Any, Unpack

import httpx

from kitsd.core import validate
from kitsd.sd.instance import split_instance
from kitsd.serve import _calls
from kitsd.serve._drain import MAX_DRAIN, Check, Idle, Phase, Release, Sleep, Step
from kitsd.serve._driver import Driver
from kitsd.serve._options import ServeOptions, check_options

__all__ = ["ThreadedService"]

logger = logging.getLogger(__name__)


class ThreadedService(Driver):
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
                 **options: Unpack[ServeOptions]) -> None:
        validate.keywords("kitsd.serve.ThreadedService", options, ServeOptions)
        super().__init__(registrar, check_options(registrar, **options))
        if on_change is not None and not callable(on_change):
            raise TypeError(f"on_change must be callable, not {on_change!r}")
        self._on_change = on_change
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ready = False
        self._closing = False
        self._pending: list[int] = []
        self._released: threading.Event = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._calls: set[Future[Any]] = set()

    def start(self) -> None:
        """Take over the signals (main thread only) and start the driver thread.
        Idempotent; raises ``RuntimeError`` once closed."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed: make a new one to serve again")
            if self._thread is not None:
                return
            self._take_signals()
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
        except Exception as error:  # noqa: BLE001  # pragma: no cover - a defect, logged
            step = self._failed(error)
        if isinstance(step, Release):
            self._release(step.reason)

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change(self._machine.phase, self._machine.registered)
            except Exception:
                logger.exception("kitsd.serve: on_change failed")

    def _take_pending(self) -> list[int]:
        with self._lock:
            pending, self._pending = self._pending, []
        return pending

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
        """Carry out ``step``; the next step (a signal may interrupt the wait)."""
        if isinstance(step, Sleep):
            return self._next(step, self._wait(step.seconds))
        if isinstance(step, Idle):
            return self._next(step, self._wait(None))  # until a signal
        return self._next(step, *self._call(
            self._self_check if isinstance(step, Check) else self._work(step)))

    def _self_check(self) -> bool:
        target = self._check_target()
        if target is None:
            return True
        kind, where, timeout = target
        try:
            if kind == "tcp":
                host, port = split_instance(where)
                with socket.create_connection((host.strip("[]"), port), timeout):
                    return True
            response = httpx.get(where, timeout=timeout, trust_env=False)
        except (OSError, httpx.HTTPError):
            return False
        return 200 <= response.status_code < 300

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
        until = self._close_deadline()
        self._closing = True
        self._wake.set()
        try:
            thread.join()  # the driver waits on events only: it returns at once
            if self._closed_state(stuck=self._settle(until)):
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
            self._left_behind(len(left))
            with self._lock:
                self._calls.clear()
        return bool(left)

    def __enter__(self) -> ThreadedService:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"kitsd.serve.ThreadedService({self.registrar!r}, phase={self.phase.value})"
