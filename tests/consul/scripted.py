"""A scripted Consul agent behind ``httpx.MockTransport``, and both instancer drivers.

:class:`ScriptedAgent` answers ``GET /v1/health/service/<name>`` from a script
of :class:`Reply` objects and exceptions, one per query, then behaves like an
idle agent (holds the query briefly and repeats the last answer).  Its
transport goes into :func:`sd.consul.connect`, so the requests are built by
py-consul and sent by httpx exactly as against a real agent.

:class:`Drivers` builds either instancer over it from a plain (sync) test:
``"thread"`` is :class:`~sd.consul.ConsulInstancer`, ``"asyncio"`` an
:class:`~sd.consul.AsyncConsulInstancer` on an event loop the fixture runs in a
thread of its own.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import httpx

from kitsd.sd.consul import AsyncConsulInstancer, ConsulInstancer, HttpxConsul, connect
from kitsd.sd.event import Event
from kitsd.sd.instancer import InstancerHandle


def entry(address: str, port: int, tags: list[str] | None = None) -> dict[str, object]:
    """One health entry as Consul writes it (the parts kitsd reads)."""
    return {"Node": {"Node": "n", "Address": "10.255.0.1"},
            "Service": {"ID": f"{address}-{port}", "Address": address, "Port": port,
                        "Tags": tags or []}}


@dataclass
class Reply:
    """One answer: ``X-Consul-Index`` (``None``: no header), a JSON body (or raw
    ``bytes``), a status and extra headers."""

    index: str | None = "1"
    body: object = field(default_factory=list)
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)

    def response(self) -> httpx.Response:
        headers = dict(self.headers)
        if self.index is not None:
            headers["X-Consul-Index"] = self.index
        content = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        return httpx.Response(self.status, headers=headers, content=content)


@dataclass
class Call:
    """One query the agent received."""

    at: float
    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]

    @property
    def index(self) -> str | None:
        return self.params.get("index", [None])[0]


class ScriptedAgent:
    """Plays ``script`` (:class:`Reply` or exceptions) one per health query, then idles.

    Queries wait until :attr:`gate` is set (so a test can subscribe before the
    first answer).  Other paths answer 404.  Thread-safe.
    """

    def __init__(self, script: list[Reply | BaseException], hold: float = 0.02) -> None:
        self.script = list(script)
        self.hold = hold
        self.gate = threading.Event()
        self.gate.set()
        self.idle = threading.Event()
        self.calls: list[Call] = []
        self.last = Reply("1", [])
        self._lock = threading.Lock()
        self.transport = httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        deadline = time.monotonic() + 5
        while not self.gate.is_set():
            if time.monotonic() > deadline:
                raise AssertionError("the test never opened the gate")
            await asyncio.sleep(0.001)
        if not request.url.path.startswith("/v1/health/service/"):
            return httpx.Response(404, text="no such path in the script")
        params: dict[str, list[str]] = {}
        for name, value in request.url.params.multi_items():
            params.setdefault(name, []).append(value)
        with self._lock:
            self.calls.append(Call(time.monotonic(), request.url.path, params,
                                   dict(request.headers)))
            outcome = self.script.pop(0) if self.script else None
        if outcome is None:
            self.idle.set()
            await asyncio.sleep(self.hold)  # a held blocking query, kept short
            return self.last.response()
        if isinstance(outcome, BaseException):
            raise outcome
        self.last = outcome
        return outcome.response()

    def client(self, **kwargs: Any) -> HttpxConsul:
        """A :func:`sd.consul.connect` client whose requests this agent answers."""
        return connect("127.0.0.1:8500", transport=self.transport, **kwargs)


class LoopInThread:
    """An asyncio loop in a thread of its own, for driving async code from sync tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-loop")
        self._thread.start()

    def run(self, make: Callable[[], Any]) -> Any:
        """Run ``make()`` on the loop (awaiting it if it returns an awaitable)."""
        async def call() -> Any:
            result = make()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        future: Future[Any] = asyncio.run_coroutine_threadsafe(call(), self.loop)
        return future.result(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


DRIVERS = ("thread", "asyncio")


class Drivers:
    """Builds instancers of one driver kind and stops them all at the end."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._loop: LoopInThread | None = LoopInThread() if kind == "asyncio" else None
        self._started: list[InstancerHandle] = []
        self._clients: list[HttpxConsul] = []

    def instancer(self, client: HttpxConsul, service: str = "svc",
                  **kwargs: Any) -> InstancerHandle:
        """An instancer of this kind over ``client``'s settings (not waiting for an answer)."""
        instancer: InstancerHandle
        if self._loop is None:
            instancer = ConsulInstancer(client, service, first_answer_timeout=0, **kwargs)
        else:
            instancer = self._loop.run(lambda: AsyncConsulInstancer(client, service, **kwargs))
        self._started.append(instancer)
        return instancer

    def watch(self, agent: ScriptedAgent, events: list[Event], *, client_kwargs: Mapping[
            str, Any] | None = None, **kwargs: Any) -> InstancerHandle:
        """An instancer over ``agent``, subscribed to ``events`` before its first answer."""
        agent.gate.clear()
        client = agent.client(**(client_kwargs or {}))
        self._clients.append(client)
        instancer = self.instancer(client, **kwargs)
        instancer.subscribe(events.append)
        agent.gate.set()
        return instancer

    def stop(self, instancer: InstancerHandle) -> None:
        """Stop ``instancer`` from where its driver wants it stopped."""
        if self._loop is not None and isinstance(instancer, AsyncConsulInstancer):
            self._loop.run(instancer.aclose)
        else:
            instancer.stop()

    def close(self) -> None:
        for instancer in self._started:
            self.stop(instancer)
        for client in self._clients:
            client.close()
        if self._loop is not None:
            self._loop.close()


def drivers(kind: str) -> Iterator[Drivers]:
    """Fixture body: a :class:`Drivers` of ``kind``, closed after the test."""
    built = Drivers(kind)
    try:
        yield built
    finally:
        built.close()
