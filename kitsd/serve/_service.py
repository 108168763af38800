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
import signal
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from types import FrameType
from typing import Any, Self, Unpack

import httpx

from kitsd.core import validate
from kitsd.sd.aio import AsyncClosable
from kitsd.sd.instance import split_instance
from kitsd.serve import _calls
from kitsd.serve._drain import Check, Idle, Release, Sleep, Step
from kitsd.serve._driver import CLOSE_GRACE, Driver
from kitsd.serve._health import health_answer
from kitsd.serve._options import ServeOptions, check_options

__all__ = ["CLOSE_GRACE", "Service", "is_async_check"]

logger = logging.getLogger(__name__)


def is_async_check(check: object) -> bool:
    """Whether ``check`` is an ``async def`` function (or an object with one as ``__call__``)."""
    return inspect.iscoroutinefunction(check) or inspect.iscoroutinefunction(
        getattr(check, "__call__", None))  # noqa: B004 - an async __call__, not callability


class Service(Driver, AsyncClosable):
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

    def __init__(self, registrar: Any, **options: Unpack[ServeOptions]) -> None:
        validate.keywords("kitsd.serve.Service", options, ServeOptions)
        super().__init__(registrar, check_options(registrar, **options))
        self.timings = self.options.timings
        self.health_path = self.options.health_path
        self.signals = self.options.signals
        check = self._check = self.options.check
        self._async_check = is_async_check(check)
        self._check_runner = _calls.CheckRunner(check) \
            if check is not None and not self._async_check else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = asyncio.Event()
        self._signalled = asyncio.Event()
        self._released: asyncio.Event = asyncio.Event()
        self._pending_signals: list[int] = []
        self._runner: asyncio.Task[None] | None = None
        self._threads: set[Future[Any]] = set()
        self._closed = False

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
        self._take_signals()
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

    def _take_pending(self) -> list[int]:
        self._signalled.clear()
        pending, self._pending_signals = self._pending_signals, []
        return pending

    async def _run(self) -> None:
        try:
            if await self._race(self._ready.wait()) == "done":
                step = self._machine.ready()
            else:
                step = self._signal_step()
            while not isinstance(step, Release):
                step = await self._advance(step)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001  # pragma: no cover - a defect, logged
            step = self._failed(error)
        self._release(step.reason)

    async def _advance(self, step: Step) -> Step:
        """Carry out ``step``; the next step (a signal may interrupt the wait)."""
        if isinstance(step, Check):
            work: Awaitable[Any] = self._run_self_check()
        elif isinstance(step, Sleep):
            work = asyncio.sleep(step.seconds)
        elif isinstance(step, Idle):
            work = asyncio.Event().wait()  # until a signal
        else:
            work = self._in_thread(self._work(step))
        return self._next(step, *await self._race_value(work))

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

    async def _run_self_check(self) -> bool:
        target = self._check_target()
        if target is None:
            return True
        kind, where, timeout = target
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

    # -- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Deregister if no drain did, stop the driver, wait (boundedly) for registry calls
        still running, put the signal handlers back.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        until = self._close_deadline()
        runner, self._runner = self._runner, None
        try:
            if runner is not None:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
            if self._closed_state(stuck=await self._settle(until)):
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
            self._left_behind(len(left))
            self._threads.clear()
            return True
        return False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    def __repr__(self) -> str:
        return f"kitsd.serve.Service({self.registrar!r}, phase={self.phase.value})"
