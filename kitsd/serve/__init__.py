"""Serving: register when ready, drain before exit.

A service that registers itself (an :class:`~kitsd.sd.Registrar`) should join
discovery only once it answers, and leave it *before* it stops answering: on
SIGTERM, deregister, keep serving until the registry shows the instance gone plus
a propagation margin (``drain=`` seconds at most), and only then let the server
stop accepting and finish what is in flight.  Callers then never pick an instance
that no longer answers.

- :func:`asgi` — any ASGI app (uvicorn, as users run it), with a health route;
- :func:`lifespan` — Starlette/FastAPI ``lifespan=``;
- :class:`Service` — the same for any asyncio server, :class:`ThreadedService` for a
  threaded one;
- :func:`gunicorn_hooks` and :func:`wsgi` — WSGI under gunicorn (the master
  registers and drains; workers answer the health route).

The decisions live in one pure state machine (:mod:`kitsd.serve._drain`), driven on
asyncio here and on a thread in gunicorn's master.
"""

from __future__ import annotations

from kitsd.serve._asgi import Lifespan, ServedApp, asgi, lifespan
from kitsd.serve._drain import Phase
from kitsd.serve._gunicorn import GunicornHooks, gunicorn_hooks, wsgi
from kitsd.serve._health import DRAINING_HEADER
from kitsd.serve._service import Service
from kitsd.serve._threaded import ThreadedService

__all__ = [
    "DRAINING_HEADER",
    "GunicornHooks",
    "Lifespan",
    "Phase",
    "ServedApp",
    "Service",
    "ThreadedService",
    "asgi",
    "gunicorn_hooks",
    "lifespan",
    "wsgi",
]
