"""A uvicorn-served app for the serving tests: ``python -m tests.serve.app PORT LOG [options]``.

Its registrar appends ``register``/``deregister`` lines to LOG (a registry a test can
read from another process); ``--starlette`` serves a Starlette app with
``lifespan=kitsd.serve.lifespan(...)`` instead of ``kitsd.serve.asgi(...)``.
Hostile parts, for the tests that attack it: ``--hang-deregister`` (the registry stops
answering at shutdown: ``deregister()`` never returns), ``--hang-check`` (the app's
synchronous health check never returns) and ``--hang-async-check`` (its async one).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

import kitsd.serve


class FileRegistrar:
    """register/deregister recorded as lines in a file."""

    def __init__(self, path: Path, instance: str, *, hang_deregister: bool = False) -> None:
        self.path = path
        self.instance = instance
        self.hang_deregister = hang_deregister

    def _note(self, what: str) -> None:
        with self.path.open("a", encoding="utf-8") as log:
            log.write(f"{what} {time.monotonic():.6f}\n")

    def register(self) -> None:
        self._note("register")

    def deregister(self) -> None:
        self._note("deregister")
        if self.hang_deregister:
            threading.Event().wait()  # a registry that never answers

    def __enter__(self) -> FileRegistrar:
        self.register()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deregister()


async def work(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rpartition(".")[2]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("log")
    parser.add_argument("--drain", type=float, default=10.0)
    parser.add_argument("--margin", type=float, default=1.0)
    parser.add_argument("--starlette", action="store_true")
    parser.add_argument("--hang-deregister", action="store_true")
    parser.add_argument("--hang-check", action="store_true")
    parser.add_argument("--hang-async-check", action="store_true")
    args = parser.parse_args()
    registrar = FileRegistrar(Path(args.log), f"127.0.0.1:{args.port}",
                              hang_deregister=args.hang_deregister)
    options: dict[str, Any] = {"drain": args.drain, "margin": args.margin}
    hung = threading.Event()

    def hanging_check() -> bool:
        hung.wait()
        return True

    async def hanging_async_check() -> bool:
        await asyncio.Event().wait()
        return True

    if args.hang_check:
        options.update(check=hanging_check, self_check=False)
    if args.hang_async_check:
        options.update(check=hanging_async_check, self_check=False)
    if args.starlette:
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route

        served = kitsd.serve.lifespan(registrar, **options)

        async def ok(request: Any) -> PlainTextResponse:
            return PlainTextResponse("ok")

        app: Any = Starlette(routes=[Route("/work", ok), Route("/healthz", served.health)],
                             lifespan=served)
    else:
        app = kitsd.serve.asgi(work, registrar, **options)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
