"""kitsd.serve.asgi and kitsd.serve.lifespan driven as an ASGI server would (no server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import kitsd.serve
from kitsd.core.errors import MisuseError
from tests.serve.fakes import ScriptedRegistrar

pytestmark = pytest.mark.usefixtures("no_thread_leaks")


class Lifespan:
    """Feeds lifespan messages to an ASGI app and collects its answers."""

    def __init__(self, app: Any) -> None:
        self.to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                            self.to_app.get, self.sent.put))

    async def ask(self, kind: str) -> str:
        await self.to_app.put({"type": f"lifespan.{kind}"})
        answer = await asyncio.wait_for(self.sent.get(), 5)
        return str(answer["type"])


async def call(app: Any, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": "GET", "path": path, "headers": []}, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(
        m.get("body", b"") for m in sent[1:])


class App:
    """An ASGI app with its own lifespan (or none, ``lifespan=False``)."""

    def __init__(self, *, lifespan: bool = True, fail_startup: bool = False) -> None:
        self.lifespan = lifespan
        self.fail_startup = fail_startup
        self.events: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            if not self.lifespan:
                raise RuntimeError("no lifespan here")
            while True:
                message = await receive()
                kind = message["type"].rpartition(".")[2]
                self.events.append(kind)
                if kind == "startup" and self.fail_startup:
                    await send({"type": "lifespan.startup.failed", "message": "db down"})
                    return
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})


async def until(predicate: Any) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out")


@pytest.mark.parametrize("own_lifespan", [True, False])
async def test_the_app_lifespan_runs_around_the_service(own_lifespan: bool) -> None:
    app = App(lifespan=own_lifespan)
    registrar = ScriptedRegistrar()
    served = kitsd.serve.asgi(app, registrar, self_check=False, signals=(), margin=0)
    assert await call(served, "/healthz") == (
        503, {b"content-type": b"application/json"},
        b'{"status": "unmanaged", "registered": false}')
    lifespan = Lifespan(served)
    assert await lifespan.ask("startup") == "lifespan.startup.complete"
    assert app.events == (["startup"] if own_lifespan else [])
    await until(lambda: served.service is not None and served.service.registered)
    status, headers, body = await call(served, "/healthz")
    assert (status, body) == (200, b'{"status": "serving", "registered": true}')
    assert await call(served, "/work") == (200, {}, b"app")
    assert served.service is not None
    served.service.shutdown()
    await until(lambda: "deregister" in registrar.names())
    status, headers, _ = await call(served, "/work")
    assert (status, headers) == (200, {b"connection": b"close"})  # while draining
    assert (await call(served, "/healthz"))[0] == 503
    assert await lifespan.ask("shutdown") == "lifespan.shutdown.complete"
    assert app.events == (["startup", "shutdown"] if own_lifespan else [])
    await lifespan.task
    assert registrar.names() == ["register", "deregister"]


async def test_an_app_startup_failure_is_reported_and_nothing_registers() -> None:
    registrar = ScriptedRegistrar()
    lifespan = Lifespan(kitsd.serve.asgi(App(fail_startup=True), registrar, self_check=False,
                                         signals=()))
    assert await lifespan.ask("startup") == "lifespan.startup.failed"
    await lifespan.task
    assert registrar.names() == []


async def test_starlette_style_lifespan_with_the_apps_own() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def own(app: object) -> AsyncIterator[dict[str, str]]:
        events.append("up")
        yield {"db": "ready"}
        events.append("down")

    registrar = ScriptedRegistrar()
    served = kitsd.serve.lifespan(registrar, app_lifespan=own, self_check=False, signals=())
    assert (await call(served.health, "/healthz"))[0] == 503  # not running: unmanaged
    async with served(object()) as state:
        assert state == {"db": "ready"}
        await until(lambda: served.service is not None and served.service.registered)
        assert (await call(served.health, "/healthz"))[0] == 200
    assert events == ["up", "down"]
    assert registrar.names() == ["register", "deregister"]
    assert served.service is None


def test_bad_options_fail_when_the_app_is_built() -> None:
    with pytest.raises(MisuseError, match="drain"):
        kitsd.serve.asgi(App(), ScriptedRegistrar(), drain=-5)
    with pytest.raises(MisuseError, match="health_path"):
        kitsd.serve.lifespan(ScriptedRegistrar(), health_path="x")
    with pytest.raises(TypeError, match="unexpected keyword"):
        kitsd.serve.asgi(App(), ScriptedRegistrar(), drian=5)
    with pytest.raises(TypeError, match="app must be"):
        kitsd.serve.asgi(None, ScriptedRegistrar())  # type: ignore[arg-type]
