"""Watcher processes for the propagation and recovery benchmarks: kitsd's and go-kit's,
each in a process of its own (so no two share an interpreter lock), each printing when
its Endpointer applied a change.

    python -m bench.watchers thread|asyncio AGENT SERVICE [--stages]

runs kitsd's :class:`sd.consul.ConsulInstancer` (``thread``) or
:class:`sd.consul.AsyncConsulInstancer` (``asyncio``, on the main thread's loop) feeding
an :class:`sd.Endpointer`, and prints ``ready``, then ``add|remove <instance> <unix ns>``
each time a subscriber placed after the Endpointer finds an instance in (or gone from)
the Endpointer's snapshot: the Endpointer has published the change by then; and
``request <unix ns> ok|refused|error`` for every HTTP request the watch sends (counted
at the httpx transport); with ``--stages`` (after SERVICE), before each change line a
``stage <instance> <unix ns> <cpu ns>`` line: when a selector poll last found a socket
ready (the answer's bytes waking the watch) and the watch thread's CPU from then to the
mark.  The go-kit watcher (:mod:`bench.gokit`) prints the same lines
when its Endpointer calls the factory (add) or an endpoint's ``Close`` (remove), from
inside its update, and for every request of its Consul client.

:class:`WatcherProcess` runs either and answers "when did it see this change?".
"""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import Any, Self

import httpx

from kitsd import sd
from kitsd.sd.consul._http11 import Http11Transport
from kitsd.sd.event import Event


class WatcherProcess:
    """A watcher process (``command``); :meth:`wait` returns when it saw a change."""

    def __init__(self, name: str, command: list[str], *, start_timeout: float = 60.0) -> None:
        self.name = name
        self.requests: list[tuple[float, str]] = []
        """``(when, ok|refused|error)`` of every request the watcher sent."""
        self.stages: dict[str, tuple[float, float]] = {}
        """kitsd watchers run with ``--stages``: for the last change of each instance,
        when its answer's socket became readable (``time.time()`` seconds) and the
        watch thread's CPU seconds from then to the mark."""
        self._seen: list[tuple[str, str, float]] = []
        self._changed = threading.Condition()
        self._ready = threading.Event()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,  # noqa: S603 - ours
                                        stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                        text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._reader.start()
        if not self._ready.wait(start_timeout):
            self.close()
            raise RuntimeError(f"the {name} watcher did not start")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            parts = line.split()
            if parts == ["ready"]:
                self._ready.set()
            elif len(parts) == 3 and parts[0] == "request":
                self.requests.append((int(parts[1]) / 1e9, parts[2]))
            elif len(parts) == 4 and parts[0] == "stage":
                self.stages[parts[1]] = (int(parts[2]) / 1e9, int(parts[3]) / 1e9)
            elif len(parts) == 3 and parts[0] in ("add", "remove"):
                with self._changed:
                    self._seen.append((parts[0], parts[1], int(parts[2]) / 1e9))
                    self._changed.notify_all()

    def wait(self, what: str, instance: str, after: float, timeout: float = 30.0) -> float:
        """When (``time.time()`` seconds) the watcher's Endpointer did ``what`` (``"add"``
        or ``"remove"``) to ``instance`` at or after ``after``; ``TimeoutError`` if it
        did not within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout

        def found() -> float | None:
            for kind, name, at in self._seen:
                if kind == what and name == instance and at >= after:
                    return at
            return None

        with self._changed:
            while (at := found()) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.name} never saw {what} {instance}")
                self._changed.wait(left)
            return at

    def close(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def kitsd_command(flavour: str, agent: str, service: str, *, stages: bool = False) -> list[str]:
    """The command line of a kitsd watcher (``flavour``: ``thread`` or ``asyncio``);
    ``stages``: also print when each answer woke the watch (:attr:`WatcherProcess.stages`)."""
    return [sys.executable, "-m", "bench.watchers", flavour, agent, service,
            *(["--stages"] if stages else [])]


class _Endpoint:
    """An endpoint with a ``close()``, as go-kit's watcher's factory returns a Closer:
    the Endpointer's closing of retired endpoints is part of what is measured."""

    def __call__(self, request: Any) -> Any:
        return request

    def close(self) -> None:
        """Nothing to release."""


class _Marks:
    """A subscriber placed after the Endpointer: prints what its snapshot gained or lost
    (and, with ``--stages``, a ``stage`` line first: see :func:`_watch_readiness`)."""

    def __init__(self, endpointer: sd.Endpointer) -> None:
        self._endpointer = endpointer
        self._had: frozenset[str] = frozenset()

    def __call__(self, event: Event) -> None:
        now = time.time_ns()
        cpu = time.thread_time_ns() - _READY[1]
        has = frozenset(self._endpointer.snapshot().instances)
        changed = [("add", name) for name in has - self._had]
        changed += [("remove", name) for name in self._had - has]
        self._had = has
        lines = [f"stage {name} {_READY[0]} {cpu}\n" for _, name in changed if _READY[0]]
        lines += [f"{kind} {name} {now}\n" for kind, name in changed]
        if changed:
            os.write(1, "".join(lines).encode())


_READY = [0, 0]  # time.time_ns() and thread CPU when the selector last found a socket ready


def _watch_readiness() -> None:
    """Stamp every selector poll that found something ready (``--stages``): the last
    one before a mark is when the answer's bytes woke the watch's loop."""
    selector_class = selectors.DefaultSelector  # what asyncio's loops use
    poll = selector_class.select

    def stamped(self: selectors.DefaultSelector, timeout: float | None = None) -> Any:
        ready = poll(self, timeout)
        if ready:
            _READY[0], _READY[1] = time.time_ns(), time.thread_time_ns()
        return ready

    selector_class.select = stamped  # type: ignore[method-assign]


def _count_requests() -> None:
    """Print a ``request`` line for every request an httpx transport sends (this
    process only runs the watch): the watches' own (:class:`Http11Transport`) and
    httpx's, for a watch built on an injected transport."""
    for transport_class in (Http11Transport, httpx.AsyncHTTPTransport):
        _count_at(transport_class)


def _count_at(transport_class: type[httpx.AsyncBaseTransport]) -> None:
    send = transport_class.handle_async_request

    async def counted(transport: httpx.AsyncBaseTransport,
                      request: httpx.Request) -> httpx.Response:
        outcome = "error"
        try:
            response = await send(transport, request)
        except httpx.ConnectError:
            outcome = "refused"  # no connection: nothing reached the agent
            raise
        else:
            outcome = "ok"
        finally:
            os.write(1, f"request {time.time_ns()} {outcome}\n".encode())
        return response

    transport_class.handle_async_request = counted  # type: ignore[method-assign,assignment]


def _run_thread(agent: str, service: str) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with sd.consul.connect(agent) as client, \
            sd.consul.ConsulInstancer(client, service) as instancer, \
            sd.Endpointer(instancer, lambda instance: _Endpoint()) as endpointer:
        instancer.subscribe(_Marks(endpointer))
        os.write(1, b"ready\n")
        stop.wait()


async def _run_asyncio(agent: str, service: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with sd.consul.AsyncConsulInstancer(agent, service) as instancer, \
            sd.Endpointer(instancer, lambda instance: _Endpoint()) as endpointer:
        instancer.subscribe(_Marks(endpointer))
        os.write(1, b"ready\n")
        await stop.wait()


def main() -> None:
    flavour, agent, service = sys.argv[1:4]
    _count_requests()
    if "--stages" in sys.argv[4:]:
        _watch_readiness()
    if flavour == "thread":
        _run_thread(agent, service)
    elif flavour == "asyncio":
        asyncio.run(_run_asyncio(agent, service))
    else:
        raise SystemExit(f"unknown watcher {flavour!r} (thread or asyncio)")


if __name__ == "__main__":
    main()
