"""What every asyncio instancer shares: a watch run as a task of the caller's loop.

:class:`AsyncWatchHandle` is the :class:`~sd.instancer.InstancerHandle` of the
asyncio instancers (Consul, DNS SRV, Kubernetes): each only builds its watch
coroutine; starting it on the running loop, the timer that publishes the "no
first answer" error, ``stop()`` from any thread, ``aclose()`` and ``async with``
are written here once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from kitsd.sd._cancel import cancel_until_done
from kitsd.sd.aio import AsyncClosable
from kitsd.sd.instancer import Broadcaster, InstancerHandle

__all__ = ["AsyncWatchHandle"]


class AsyncWatchHandle(InstancerHandle, AsyncClosable):
    """An instancer whose watch (``watch()``, a coroutine) runs as a task named
    ``name`` on the running loop (else ``RuntimeError``), not shared.

    Subscribers get the first answer when it arrives; after ``first_answer_timeout``
    seconds without one (``None``: no bound) the error naming ``source`` (see
    :class:`~sd.instancer.InstancerHandle`).  ``stop()`` cancels the task (from any
    thread, idempotent); ``await aclose()`` (or leaving ``async with``) also waits
    until it has ended, so nothing is left running.
    """

    def __init__(self, broadcaster: Broadcaster,
                 watch: Callable[[], Coroutine[Any, Any, None]], *, name: str,
                 source: str, first_answer_timeout: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        super().__init__(broadcaster, self._cancel, source=source)
        self._task = self._loop.create_task(watch(), name=name)
        self._late = None if first_answer_timeout is None else self._loop.call_later(
            first_answer_timeout, self.first_answer_late, first_answer_timeout)

    def _cancel(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        late = self._late
        if running is self._loop:
            cancel_until_done(self._task)  # (a cancellation can be lost: sd._cancel)
            if late is not None:
                late.cancel()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the task is gone
                self._loop.call_soon_threadsafe(cancel_until_done, self._task)
                if late is not None:
                    self._loop.call_soon_threadsafe(late.cancel)
        self._broadcaster.stopped()  # kitsd.observe: forget this watch

    async def aclose(self) -> None:
        """:meth:`stop`, then wait until the watch task has ended (it closes its
        connections); idempotent."""
        self.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
