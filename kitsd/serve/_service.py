"""``Service``: the asyncio driver of one served instance's lifecycle.

The decisions are :class:`kitsd.serve._drain.Lifecycle`'s; this module only carries
them out on the running loop: the self-check (an HTTP GET of the health route, or a
TCP connect), ``register()``/``deregister()`` and the registry probes in worker
threads (the registrars block), the waits, and the signal hook.

The signal hook is what makes a drain possible under uvicorn: uvicorn closes its
listening socket and its connections *before* it runs the ASGI lifespan shutdown,
so a deregistration there (the naive way) comes when callers can no longer be
served.  :meth:`Service.start` therefore puts its own handler in front of the one
installed for each of ``signals`` (uvicorn's): the first signal starts the drain
and the server keeps serving; on release the signal is handed to the handler that
was there, and the server stops as it always does.  A second signal during the
drain ends it at once; later ones go straight to the server's handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import Future
from types import FrameType, TracebackType
from typing import Any, Self

import httpx

from kitsd.sd.instance import split_instance
from kitsd.serve import _calls
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
from kitsd.serve._health import health_answer
from kitsd.serve._options import DEFAULT_CHECK_TIMEOUT, HealthCheck, check_options
from kitsd.serve._registries import departure_probe

__all__ = ["CLOSE_GRACE", "Service", "is_async_check"]

logger = logging.getLogger(__name__)

#: Seconds ``aclose()`` still gives registry calls after a drain (and at least, without one).
CLOSE_GRACE = 1.0


def is_async_check(check: object) -> bool:
    """Whether ``check`` is an ``async def`` function (or an object with one as ``__call__``)."""
    return inspect.iscoroutinefunction(check) or inspect.iscoroutinefunction(
        getattr(check, "__call__", None))  # noqa: B004 - an async __call__, not callability

_Handler = Callable[[int, FrameType | None], Any] | int | None


class Service:
    """Registers ``registrar``'s instance when the server is ready, drains before exit.

    Use it around any asyncio server (``kitsd.serve.asgi`` and ``kitsd.serve.lifespan``
    use it for ASGI)::

        async with kitsd.serve.Service(registrar, drain=10) as service:
            server = await asyncio.start_server(handle, "0.0.0.0", 8080)
            service.ready()                 # the server accepts: register
            await service.released()        # SIGTERM came and the drain is over
            server.close()                  # stop accepting, finish what is in flight
            await server.wait_closed()

    On :meth:`ready`: a first passing self-check, then ``register()``, retried with
    backoff (0.1 s doubling to 10 s, logged) while the registry is unreachable; the
    instance serves meanwhile and :meth:`health` says ``"registered": false``.  On the
    first of ``signals`` (or :meth:`shutdown`): :attr:`draining` turns true (the health
    route answers 503), ``deregister()``, then the registry is asked until it no longer
    shows the instance, then ``margin`` more seconds -- ``drain`` seconds at most from
    the signal -- and the service is *released* (:meth:`released` returns; the signal
    goes on to the handler that was installed before, e.g. uvicorn's).  A second signal
    releases at once.

    Options (keyword-only, checked here: ``MisuseError``/``TypeError`` naming them):
    ``drain`` (30 s), ``margin`` (2 s), ``health_path`` (``"/healthz"``; ``None``: no
    route), ``check`` (your readiness, ``() -> bool`` or ``async () -> bool``, consulted
    by the health route and before registering), ``self_check`` (``None``: GET
    ``http://<instance><health_path>``, or connect to the instance without a health
    path; a URL; ``False``: none), ``signals`` (``("SIGTERM",)``; ``()``: call
    :meth:`shutdown` yourself), ``probe`` (``() -> bool``, blocking: whether the
    registry no longer shows the instance; default per registry, see
    :mod:`kitsd.serve._registries`), ``probe_interval`` (0.1 s), ``check_timeout``
    (1 s: a ``check`` slower than this makes the health route answer 503; a
    synchronous ``check`` runs on a thread of its own, never on the event loop, one
    call at a time however many health requests arrive).

    :meth:`aclose` (and leaving ``async with``) deregisters if no drain did and puts the
    signal handlers back.  It waits for registry calls still running at most
    :data:`CLOSE_GRACE` (1 s) after a drain, ``drain`` seconds without one: a call hung
    longer (a registry behind a partition) is abandoned on its daemon thread, with a
    warning, so the process can always exit.  A closed service cannot be started
    again.  Loop-bound: use it from one event loop.
    """

    def __init__(
        self,
        registrar: Any,
        *,
        drain: float = 30.0,
        margin: float = 2.0,
        health_path: str | None = "/healthz",
        check: HealthCheck | None = None,
        self_check: str | bool | None = None,
        signals: Collection[str | int] = ("SIGTERM",),
        probe: Callable[[], bool] | None = None,
        probe_interval: float = 0.1,
        check_timeout: float = DEFAULT_CHECK_TIMEOUT,
    ) -> None:
        self.options = check_options(
            registrar, drain=drain, margin=margin, health_path=health_path, check=check,
            self_check=self_check, signals=signals, probe=probe, probe_interval=probe_interval,
            check_timeout=check_timeout)
        self.timings = self.options.timings
        self.health_path = self.options.health_path
        self.signals = self.options.signals
        self.registrar = registrar
        self._check = check
        self._async_check = is_async_check(check)
        self._check_runner = _calls.CheckRunner(check) \
            if check is not None and not self._async_check else None
        self._probe = probe
        self._self_check = self.options.self_check
        self._machine = Lifecycle(self.timings, self_check=self._self_check is not None)
        self._rng = random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = asyncio.Event()
        self._signalled = asyncio.Event()
        self._released = asyncio.Event()
        self._pending_signals: list[int] = []
        self._runner: asyncio.Task[None] | None = None
        self._threads: set[Future[Any]] = set()
        self._previous: dict[signal.Signals, _Handler] = {}
        self._forward: int | None = None
        self._closed = False
        self._deregistered = False  # a deregister() call returned since the last register
        self._register_called = False

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

    async def health(self) -> tuple[int, list[tuple[str, str]], bytes]:
        """The health route's ``(status, headers, body)`` now (see :mod:`kitsd.serve._health`).

        Takes at most ``check_timeout`` seconds: a check that has not answered by then
        counts as failing (503)."""
        check_ok = True
        if self._check is not None and not self.draining:
            check_ok = await self._run_check()
        return health_answer(self.phase.value, draining=self.draining,
                             registered=self.registered, check_ok=check_ok)

    async def _run_check(self) -> bool:
        check, timeout, runner = self._check, self.options.check_timeout, self._check_runner
        assert check is not None  # noqa: S101 - health() asked only with a check
        future: Future[Any] | None = None
        try:
            async with asyncio.timeout(timeout):
                if runner is None:
                    answer = check()
                else:
                    future = runner.start()
                    answer = await asyncio.wrap_future(future)
                if inspect.isawaitable(answer):
                    answer = await answer
        except TimeoutError:
            if runner is not None and future is not None:
                runner.timed_out(future, timeout)
            else:
                logger.warning("kitsd.serve: the health check of %r did not answer within %gs",
                               self.registrar, timeout)
            return False
        except Exception:
            logger.exception("the health check of %r raised", self.registrar)
            return False
        return bool(answer)

    # -- driving ------------------------------------------------------------------------

    async def start(self) -> None:
        """Take over ``signals`` (main thread only; elsewhere logged and skipped) and start
        the driver, which waits for :meth:`ready`.  Idempotent; raises ``RuntimeError``
        once closed (a service runs once)."""
        if self._closed:
            raise RuntimeError(f"{self!r} is closed: make a new Service to serve again")
        if self._runner is not None:
            return
        self._loop = asyncio.get_running_loop()
        if self.signals:
            if threading.current_thread() is threading.main_thread():
                try:
                    for sig in self.signals:
                        self._previous[sig] = signal.signal(sig, self._on_signal)
                except BaseException:
                    self._restore_signals()
                    raise
            else:
                logger.warning("kitsd.serve: not on the main thread, so %s cannot start the "
                               "drain; call shutdown() instead",
                               ", ".join(sig.name for sig in self.signals))
        self._runner = asyncio.create_task(self._run(), name=f"kitsd-serve {self.registrar!r}")

    def ready(self) -> None:
        """The server is up: self-check, then register (in the background)."""
        self._ready.set()

    def shutdown(self) -> None:
        """Start the drain (as the first signal does); a second call ends it at once."""
        self._pending_signals.append(0)
        self._signalled.set()

    async def released(self) -> str:
        """Wait until the drain is over; the reason (see :attr:`reason`)."""
        await self._released.wait()
        return self._machine.reason or "closed"

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        loop = self._loop
        if self._released.is_set() or loop is None or loop.is_closed():
            self._call_previous(signum, frame)
            return
        loop.call_soon_threadsafe(self._note_signal, signum)

    def _note_signal(self, signum: int) -> None:
        if self._released.is_set():
            self._call_previous(signum, None)
            return
        logger.warning("kitsd.serve: %s: %s", signal.Signals(signum).name,
                       "ending the drain now" if self.draining else
                       f"draining (at most {self.timings.drain:g}s) before the server stops")
        self._pending_signals.append(signum)
        self._signalled.set()

    def _call_previous(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signal.Signals(signum))
        if callable(previous):
            previous(signum, frame)

    async def _run(self) -> None:
        machine = self._machine
        try:
            if await self._race(self._ready.wait()) == "done":
                step = machine.ready()
            else:
                step = self._on_signal_step()
            while not isinstance(step, Release):
                step = await self._advance(step)
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - a defect: never leave the server hanging
            logger.exception("kitsd.serve: the lifecycle driver failed; releasing")
            step = Release("error")
            machine.phase = Phase.RELEASED
            machine.reason = "error"
        self._release(step.reason)

    async def _advance(self, step: Step) -> Step:
        """Carry out ``step``; the next step (a signal may interrupt the wait)."""
        machine = self._machine
        now = time.monotonic
        if isinstance(step, Check):
            outcome, ok = await self._race_value(self._run_self_check())
            return self._on_signal_step() if outcome == "signal" else machine.checked(bool(ok))
        if isinstance(step, Register):
            outcome, ok = await self._race_value(self._in_thread(self._register))
            if outcome == "signal":
                return self._on_signal_step()
            return machine.register_done(bool(ok), self._rng.random())
        if isinstance(step, Deregister):
            probe = self._probe or departure_probe(self.registrar)
            self._probe_now = probe
            outcome, ok = await self._race_value(self._in_thread(self._deregister))
            if outcome == "signal":
                return self._on_signal_step()
            if outcome == "deadline":
                return machine.woken(now())
            return machine.deregister_done(now(), bool(ok))
        if isinstance(step, Probe):
            outcome, gone = await self._race_value(self._in_thread(self._probe_once))
            if outcome == "signal":
                return self._on_signal_step()
            if outcome == "deadline":
                return machine.woken(now())
            return machine.probed(now(), bool(gone))
        if isinstance(step, Sleep):
            outcome = await self._race(asyncio.sleep(step.seconds))
            return self._on_signal_step() if outcome == "signal" else machine.woken(now())
        # Idle: until a signal
        await self._race(asyncio.Event().wait())
        return self._on_signal_step()

    def _on_signal_step(self) -> Step:
        self._signalled.clear()
        step: Step = Idle()
        while self._pending_signals:
            signum = self._pending_signals.pop(0)
            if signum:
                self._forward = signum
            step = self._machine.signal(time.monotonic())
            if isinstance(step, Release):
                break
        return step

    async def _race(self, awaitable: Awaitable[Any]) -> str:
        return (await self._race_value(awaitable))[0]

    async def _race_value(self, awaitable: Awaitable[Any]) -> tuple[str, Any]:
        """Await ``awaitable`` unless a signal or the drain deadline comes first:
        ``("done", value)``, ``("signal", None)`` or ``("deadline", None)``.  An
        interrupted worker-thread call goes on (and is awaited by :meth:`aclose`)."""
        work = asyncio.ensure_future(awaitable)
        signalled = asyncio.ensure_future(self._signalled.wait())
        timeout = self._machine.deadline - time.monotonic()
        try:
            done, _ = await asyncio.wait(
                {work, signalled}, return_when=asyncio.FIRST_COMPLETED,
                timeout=None if timeout == float("inf") else max(0.0, timeout))
        finally:
            signalled.cancel()
            if not work.done():
                # a wait, a self-check: ended here (also when aclose() cancels the driver);
                # a registry call goes on in its thread (only its wrapper is cancelled)
                work.cancel()
        if work in done:
            return "done", work.result()
        return ("signal" if signalled in done else "deadline"), None

    def _in_thread(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        assert self._loop is not None  # noqa: S101 - start() set it
        future = self._start_call(call)
        return asyncio.wrap_future(future, loop=self._loop)

    def _start_call(self, call: Callable[[], Any]) -> Future[Any]:
        """``call`` on a daemon thread, tracked until it returns (see :mod:`._calls`)."""
        future = _calls.start(call, "kitsd-serve-call")
        self._threads.add(future)
        future.add_done_callback(self._threads.discard)
        return future

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

    _probe_now: Callable[[], bool] = staticmethod(lambda: True)

    async def _run_self_check(self) -> bool:
        target = self._self_check
        if target is None:
            return True
        kind, where = target
        # the health route may take check_timeout to answer: the GET waits a little longer
        timeout = self.options.check_timeout + 1.0
        try:
            async with asyncio.timeout(timeout):
                if kind == "tcp":
                    host, port = split_instance(where)
                    _, writer = await asyncio.open_connection(host.strip("[]"), port)
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                    return True
                async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
                    response = await client.get(where)
        except (OSError, httpx.HTTPError, TimeoutError):
            return False
        return 200 <= response.status_code < 300

    def _release(self, reason: str) -> None:
        if self._released.is_set():
            return
        logger.info("kitsd.serve: drain of %r over (%s)", self.registrar, reason)
        self._released.set()
        if self._forward is not None:
            self._call_previous(self._forward, None)

    # -- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Deregister if no drain did, stop the driver, wait (boundedly) for registry calls
        still running, put the signal handlers back.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        drained = self._machine.draining
        until = time.monotonic() + (CLOSE_GRACE if drained
                                    else max(self.timings.drain, CLOSE_GRACE))
        runner, self._runner = self._runner, None
        try:
            if runner is not None:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
            stuck = await self._settle(until)
            if self._machine.phase is not Phase.RELEASED:
                # the server stops without a drain (Ctrl-C, a signal not in `signals`)
                self._machine.phase = Phase.RELEASED
                self._machine.reason = "closed"
            self._machine.registered = False
            if self._register_called and not self._deregistered and not stuck:
                # no drain deregistered (or its call failed): once more, idempotent
                self._start_call(self._deregister)
                await self._settle(until)
        finally:
            self._released.set()
            self._restore_signals()

    async def _settle(self, until: float) -> bool:
        """Wait for the registry calls still running, until ``until`` at most; a call
        still running then is abandoned on its daemon thread (logged).  Whether one was."""
        left: set[asyncio.Future[Any]] = set()
        if self._threads:
            _, left = await asyncio.wait(
                {asyncio.wrap_future(future) for future in self._threads},
                timeout=max(0.0, until - time.monotonic()))
            for waiter in left:
                waiter.cancel()
        if left:
            logger.warning("kitsd.serve: %d registry call(s) of %r still running at close "
                           "(a registry that does not answer); left behind, not waited for",
                           len(left), self.registrar)
            self._threads.clear()
            return True
        return False

    def _restore_signals(self) -> None:
        for sig, previous in self._previous.items():
            if previous is not None and signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, previous)
        self._previous.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"kitsd.serve.Service({self.registrar!r}, phase={self.phase.value})"
