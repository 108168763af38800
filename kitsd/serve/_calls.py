"""Blocking calls the serving drivers must be able to walk away from.

A registrar's ``register()``/``deregister()``, a registry probe and an app's
synchronous health ``check`` all block, and any of them may hang: a registry
behind a partition accepts the connection and never answers, a check waits on a
database that is down.  Every wait on them is bounded by its caller (the drain's
deadline, the close grace, ``check_timeout``), so the call itself runs on a
**daemon** thread of its own (:func:`start`): a call still hung when its caller
gives up is abandoned there -- logged, never joined -- and cannot keep the
process from exiting (a ``ThreadPoolExecutor`` worker would: its threads are
joined at interpreter exit).

:class:`CheckRunner` runs the app's synchronous ``check`` this way, one call at a
time: health requests that arrive while a check runs share its answer, so 200
concurrent probes of a hung check cost one thread, not 200.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["CheckRunner", "start"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def start(call: Callable[[], T], name: str) -> Future[T]:
    """Run ``call`` on a new daemon thread; its result (or error) in the returned future.

    The future is marked running before the thread starts, so cancelling it (as
    ``asyncio.wait_for`` does to a wrapped future that timed out) never succeeds:
    the thread always delivers its outcome."""
    future: Future[T] = Future()
    future.set_running_or_notify_cancel()

    def run() -> None:
        try:
            result = call()
        except BaseException as error:  # noqa: BLE001 - delivered to whoever waits
            future.set_exception(error)
        else:
            future.set_result(result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


class CheckRunner:
    """The app's synchronous ``check``, one call at a time on a daemon thread.

    :meth:`start` returns the call in flight, or starts one.  Thread-safe.
    """

    __slots__ = ("_check", "_lock", "_running", "_warned")

    def __init__(self, check: Callable[[], Any]) -> None:
        self._check = check
        self._lock = threading.Lock()
        self._running: Future[Any] | None = None
        self._warned: Future[Any] | None = None

    def start(self) -> Future[Any]:
        """The check call in flight, or a new one."""
        with self._lock:
            running = self._running
            if running is None or running.done():
                running = self._running = start(self._check, "kitsd-serve-check")
            return running

    def timed_out(self, future: Future[Any], timeout: float) -> None:
        """Say (once per call) that ``future``'s check ran past ``timeout`` seconds."""
        with self._lock:
            if self._warned is future:
                return
            self._warned = future
        logger.warning("kitsd.serve: the health check did not answer within %gs; the health "
                       "route answers 503 until it does", timeout)
