"""ASGI: ``kitsd.serve.asgi(app, registrar)`` and ``kitsd.serve.lifespan(registrar)``.

Both run one :class:`~kitsd.serve.Service` per server run (created at the lifespan
startup, closed at its shutdown).  ``asgi`` wraps any ASGI app: it answers the
lifespan messages itself (running the app's own lifespan inside, when the app has
one), serves the health route, and while draining adds ``Connection: close`` to
every response, so callers that have not yet heard of the drain open a fresh
connection per request instead of keeping one the server is about to close.
``lifespan`` is the same lifecycle for Starlette/FastAPI's ``lifespan=``, with the
health route as an ASGI app to mount (:attr:`Lifespan.health`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from kitsd.serve._service import Service

__all__ = ["Lifespan", "ServedApp", "asgi", "lifespan"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _answer_health(service: Service | None, send: Send) -> None:
    if service is None:  # no lifespan run (the server has lifespan off): not managed
        status, headers, body = 503, [("content-type", "application/json")], \
            b'{"status": "unmanaged", "registered": false}'
    else:
        status, headers, body = await service.health()
    await send({"type": "http.response.start", "status": status,
                "headers": [(name.encode(), value.encode()) for name, value in headers]})
    await send({"type": "http.response.body", "body": body})


class _HealthApp:
    """The health route as an ASGI app (mount it at your health path)."""

    def __init__(self, current: Callable[[], Service | None]) -> None:
        self._current = current

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"the kitsd health route serves http, not {scope['type']}")
        await _answer_health(self._current(), send)


class Lifespan:
    """A Starlette/FastAPI ``lifespan=``: the app's startup, then the :class:`Service`
    (registered once ready), and at shutdown the service closed, then the app's own
    shutdown.  Made by :func:`lifespan`; ``health`` is the health route to mount
    (``Route("/healthz", served.health)``).

    Under uvicorn the drain runs on SIGTERM before the server stops accepting (see
    :class:`Service`); the lifespan shutdown itself only deregisters when no drain did.
    """

    def __init__(
        self, registrar: Any, app_lifespan: Callable[[Any], Any] | None = None,
        **options: Any,
    ) -> None:
        Service(registrar, **options)  # options checked now, naming the bad one
        if app_lifespan is not None and not callable(app_lifespan):
            raise TypeError(f"app_lifespan must be a lifespan callable, not {app_lifespan!r}")
        self.registrar = registrar
        self.options = options
        self.app_lifespan = app_lifespan
        self.service: Service | None = None
        self.health = _HealthApp(lambda: self.service)

    @contextlib.asynccontextmanager
    async def __call__(self, app: Any) -> AsyncIterator[Any]:
        async with contextlib.AsyncExitStack() as stack:
            state = None
            if self.app_lifespan is not None:
                state = await stack.enter_async_context(self.app_lifespan(app))
            service = await stack.enter_async_context(Service(self.registrar, **self.options))
            self.service = service
            stack.callback(setattr, self, "service", None)
            service.ready()
            yield state


def lifespan(registrar: Any, *, app_lifespan: Callable[[Any], Any] | None = None,
             **options: Any) -> Lifespan:
    """A ``lifespan=`` for Starlette/FastAPI that registers when ready and drains before
    exit (``app_lifespan``: your own, run around it).  Options as
    :class:`kitsd.serve.Service`; bad ones raise here, naming them."""
    return Lifespan(registrar, app_lifespan, **options)


class ServedApp:
    """``app`` with the serving lifecycle (made by :func:`asgi`)."""

    def __init__(self, app: ASGIApp, registrar: Any, **options: Any) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, not {app!r}")
        probe = Service(registrar, **options)  # options checked now, naming the bad one
        self.app = app
        self.registrar = registrar
        self.options = options
        self.health_path = probe.health_path
        self.service: Service | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if kind == "http" and self.health_path is not None and scope["path"] == self.health_path:
            await _answer_health(self.service, send)
            return
        service = self.service
        if kind == "http" and service is not None and service.draining:
            await self.app(scope, receive, _closing(send))
            return
        await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        inner = _InnerLifespan(self.app, scope)
        message = await receive()
        if message["type"] != "lifespan.startup":  # pragma: no cover - ASGI says otherwise
            return
        failure = await inner.startup()
        if failure is not None:
            await send({"type": "lifespan.startup.failed", "message": failure})
            return
        try:
            service = Service(self.registrar, **self.options)
            await service.start()
        except Exception as error:
            logger.exception("kitsd.serve: starting failed")
            await inner.shutdown()
            await send({"type": "lifespan.startup.failed", "message": str(error)})
            return
        self.service = service
        service.ready()
        await send({"type": "lifespan.startup.complete"})
        message = await receive()  # lifespan.shutdown
        try:
            await service.aclose()
        finally:
            failure = await inner.shutdown()
        if failure is not None:
            await send({"type": "lifespan.shutdown.failed", "message": failure})
        else:
            await send({"type": "lifespan.shutdown.complete"})


def _closing(send: Send) -> Send:
    """``send`` adding ``Connection: close`` to the response start."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(name, value) for name, value in message.get("headers", ())
                       if name.lower() != b"connection"]
            headers.append((b"connection", b"close"))
            message = {**message, "headers": headers}
        await send(message)

    return closing


class _InnerLifespan:
    """The wrapped app's own lifespan, run as a task fed through queues.  An app that
    raises before answering the startup has no lifespan (as uvicorn's ``auto`` mode)."""

    def __init__(self, app: ASGIApp, scope: Scope) -> None:
        self._app = app
        self._scope = scope
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._supported = True

    async def _run(self) -> None:
        try:
            await self._app(self._scope, self._to_app.get, self._from_app.put)
        except Exception as error:  # noqa: BLE001 - judged by what the app had answered
            await self._from_app.put({"type": "kitsd.raised", "error": error})
        else:
            await self._from_app.put({"type": "kitsd.returned"})

    async def startup(self) -> str | None:
        """Run the app's startup; the failure message, or ``None``."""
        self._task = asyncio.create_task(self._run())
        await self._to_app.put({"type": "lifespan.startup"})
        answer = await self._from_app.get()
        if answer["type"] == "lifespan.startup.complete":
            return None
        if answer["type"] == "lifespan.startup.failed":
            return str(answer.get("message", ""))
        self._supported = False  # returned or raised at once: no lifespan
        return None

    async def shutdown(self) -> str | None:
        """Run the app's shutdown; the failure message, or ``None``."""
        task, self._task = self._task, None
        if task is None:
            return None
        if self._supported and not task.done():
            await self._to_app.put({"type": "lifespan.shutdown"})
            answer = await self._from_app.get()
            if answer["type"] == "lifespan.shutdown.failed":
                message: str | None = str(answer.get("message", ""))
            elif answer["type"] == "kitsd.raised":
                message = repr(answer["error"])
            else:
                message = None
        else:
            message = None
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return message


def asgi(app: ASGIApp, registrar: Any, **options: Any) -> ServedApp:
    """``app`` registered when ready and drained before exit; it also answers the health
    route (``health_path``, ``/healthz``).  Options as :class:`kitsd.serve.Service`; bad
    ones raise here, naming them."""
    return ServedApp(app, registrar, **options)
