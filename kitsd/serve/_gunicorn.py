"""WSGI under gunicorn: the master registers and drains, the workers answer health.

gunicorn's master (the arbiter) owns the listening sockets and the workers' lives,
so it is the one process that registers the instance: :func:`gunicorn_hooks` gives
the server hooks of a ``gunicorn.conf.py``.  ``when_ready`` (the master is
listening) starts a :class:`~kitsd.serve._threaded.ThreadedService` that takes
SIGTERM in front of the arbiter's handler; on SIGTERM it deregisters, waits for the
registry and the margin, and only then hands SIGTERM on, so gunicorn closes its
sockets and stops its workers (``graceful_timeout``) after callers have left.
``on_exit`` closes it (deregistering if no drain did).

The workers are other processes: they answer the health route from a small
shared memory page the master writes (made before the workers fork), through
:func:`wsgi`.  gunicorn keeps ``Connection`` headers to itself, so a draining
WSGI app cannot ask for ``Connection: close`` as the ASGI wrapper does (sync
workers close every connection anyway).
"""

from __future__ import annotations

import concurrent.futures
import logging
import mmap
from collections.abc import Callable, Iterable
from typing import Any

from kitsd.serve._calls import CheckRunner
from kitsd.serve._drain import Phase
from kitsd.serve._health import health_answer
from kitsd.serve._options import check_options, check_settings
from kitsd.serve._service import is_async_check
from kitsd.serve._threaded import ThreadedService

__all__ = ["GunicornHooks", "gunicorn_hooks", "wsgi"]

logger = logging.getLogger(__name__)

_PHASES = list(Phase)
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_LATEST: list[GunicornHooks] = []  # the hooks made in this process (gunicorn's config)


class _SharedState:
    """Phase and registration in two bytes of anonymous shared memory (inherited by
    every process forked after it is made)."""

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, 2)
        self.write(Phase.STARTING, False)

    def write(self, phase: Phase, registered: bool) -> None:
        self._page[0] = _PHASES.index(phase)
        self._page[1] = int(registered)

    def read(self) -> tuple[Phase, bool]:
        return _PHASES[self._page[0]], bool(self._page[1])


class GunicornHooks:
    """Server hooks for ``gunicorn.conf.py`` (made by :func:`gunicorn_hooks`)::

        hooks = kitsd.serve.gunicorn_hooks(make_registrar, drain=30)
        when_ready, on_exit = hooks.when_ready, hooks.on_exit

    and in the app module: ``app = kitsd.serve.wsgi(app)``.  ``make_registrar`` is
    called once, in the master, when it is ready.  The options are checked here (when
    gunicorn reads its config), naming a bad one; the ones that need the registrar
    (the self-check's address) when it is made.
    """

    def __init__(self, make_registrar: Callable[[], Any], **options: Any) -> None:
        if not callable(make_registrar):
            raise TypeError(f"make_registrar must be a callable returning an sd.Registrar, "
                            f"not {make_registrar!r}")
        settings = check_settings(**options)
        if is_async_check(settings.check):
            raise TypeError("check must be a plain function under WSGI (gunicorn's workers "
                            "run no event loop), not an async one")
        self.make_registrar = make_registrar
        self.options = options
        self.health_path = settings.health_path
        self.check = settings.check
        self.check_timeout = settings.check_timeout
        self.check_runner = CheckRunner(settings.check) if settings.check is not None else None
        self.state = _SharedState()
        self.service: ThreadedService | None = None
        _LATEST[:] = [self]

    def when_ready(self, server: Any) -> None:
        """gunicorn's ``when_ready``: start registering (after the self-check)."""
        registrar = self.make_registrar()
        check_options(registrar, **self.options)  # a bad option or registrar: fail loudly
        self.service = ThreadedService(registrar, on_change=self.state.write, **self.options)
        self.service.start()
        self.service.ready()

    def on_exit(self, server: Any) -> None:
        """gunicorn's ``on_exit``: deregister if no drain did; stop everything started."""
        service, self.service = self.service, None
        if service is not None:
            service.close()

    def as_config(self) -> dict[str, Callable[[Any], None]]:
        """``{"when_ready": ..., "on_exit": ...}``, for ``globals().update(...)``."""
        return {"when_ready": self.when_ready, "on_exit": self.on_exit}


def gunicorn_hooks(make_registrar: Callable[[], Any], **options: Any) -> GunicornHooks:
    """Hooks registering the gunicorn master's instance when ready and draining it before
    gunicorn stops (options as :class:`kitsd.serve.Service`; ``check`` runs in the
    workers' health route, the self-check in the master)."""
    return GunicornHooks(make_registrar, **options)


def wsgi(app: WSGIApp, hooks: GunicornHooks | None = None) -> WSGIApp:
    """``app`` answering the health route from the master's state (``hooks``: the ones
    made in this process's gunicorn config, by default)."""
    if not callable(app):
        raise TypeError(f"app must be a WSGI application, not {app!r}")
    if hooks is not None and not isinstance(hooks, GunicornHooks):
        raise TypeError(f"hooks must be the GunicornHooks of gunicorn_hooks() or None, not "
                        f"{type(hooks).__name__}")

    def served(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        current = hooks if hooks is not None else (_LATEST[0] if _LATEST else None)
        if current is None or environ.get("PATH_INFO") != current.health_path:
            if current is None and environ.get("PATH_INFO") == "/healthz":
                start_response("503 Service Unavailable",
                               [("content-type", "application/json")])
                return [b'{"status": "unmanaged", "registered": false}']
            return app(environ, start_response)
        phase, registered = current.state.read()
        draining = phase in (Phase.DRAINING, Phase.RELEASED)
        check_ok = True
        runner = current.check_runner
        if runner is not None and not draining:
            call = runner.start()  # on a thread of its own: a hung check answers 503
            try:
                check_ok = bool(call.result(current.check_timeout))
            except concurrent.futures.TimeoutError:
                runner.timed_out(call, current.check_timeout)
                check_ok = False
            except Exception:
                logger.exception("the health check raised")
                check_ok = False
        status, headers, body = health_answer(
            phase.value, draining=draining, registered=registered, check_ok=check_ok)
        headers = [(name, value) for name, value in headers if name != "connection"]
        start_response(f"{status} {'OK' if status == 200 else 'Service Unavailable'}", headers)
        return [body]

    return served
