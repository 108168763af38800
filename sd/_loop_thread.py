"""``LoopThread``: one coroutine on a private event loop in a daemon thread.

The thread-based drivers (``ConsulInstancer``'s watch, ``ConsulRegistrar``'s
heartbeat, ``EndpointSliceInstancer``'s watch) run the same coroutine the
asyncio drivers run, on a loop of their own.  ``stop()`` works from any
thread, including the loop's own (a subscriber callback): it cancels the task
through ``loop.call_soon_threadsafe``, which abandons an HTTP request in flight (a
held blocking query, an agent that never answers) at once, then joins the
thread.  The loop's default executor (where asyncio resolves host names) is
shut down with it, so nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from kitsd.sd._cancel import cancel_until_done

__all__ = ["LoopThread"]

logger = logging.getLogger(__name__)

JOIN_TIMEOUT = 5.0


class LoopThread:
    """Runs ``main()`` on a new event loop in a daemon thread named ``name``.

    Nothing runs until :meth:`start`.  :meth:`stop` is idempotent, thread-safe
    and prompt (see the module docstring).
    """

    def __init__(self, name: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._name = name
        self._main = main
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        loop = asyncio.new_event_loop()
        task = loop.create_task(self._main(), name=self._name)
        thread = threading.Thread(target=self._run, args=(loop, task), name=self._name,
                                  daemon=True)
        with self._lock:
            self._loop, self._task, self._thread = loop, task, thread
        thread.start()

    def _run(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[None]) -> None:
        asyncio.set_event_loop(loop)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(task)
        except Exception:
            logger.exception("%s ended with an error", self._name)
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                with self._lock:
                    loop.close()
                asyncio.set_event_loop(None)

    def stop(self) -> None:
        """Cancel the coroutine and wait for the thread to end (not when called
        from the thread itself: the loop then ends on its own)."""
        with self._lock:
            loop, task, thread = self._loop, self._task, self._thread
            if loop is not None and task is not None and not loop.is_closed():
                # (again and again until it ends: a cancellation can be lost, sd._cancel)
                loop.call_soon_threadsafe(cancel_until_done, task)
        if thread is None or thread is threading.current_thread():
            return
        thread.join(JOIN_TIMEOUT)
        if thread.is_alive():
            logger.warning("%s did not stop within %.0fs", self._name, JOIN_TIMEOUT)
