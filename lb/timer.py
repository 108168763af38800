"""Cancelling asyncio calls at their deadline without a timer per call.

``asyncio.timeout()`` arms and cancels one loop timer per call (a heap push, a
handle, two coroutine steps): about 5 µs, the largest part of
:func:`lb.retry_async`'s own cost.  The calls made through one retrying endpoint
all have the same timeout, so on one loop their deadlines fall in the order they
started.  :class:`DeadlineTimer` keeps them in a queue, in that order, with one
loop timer armed for the oldest unfinished call: starting a call appends to the
queue, finishing one marks it done, and the timer, when it fires, drops the
finished calls, cancels the expired ones and re-arms for the next.  Cancelling
follows ``asyncio.timeout``'s rules (``Task.cancelling``/``uncancel``), so an
outer cancellation is never mistaken for the deadline.

Only touched from its loop's thread; one timer per (retrying endpoint, loop).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

__all__ = ["Attempt", "DeadlineTimer"]

_RESOLUTION = time.get_clock_info("monotonic").resolution


class Attempt:
    """One call under a :class:`DeadlineTimer`."""

    __slots__ = ("cancelling", "deadline", "expired", "task")

    def __init__(self, task: asyncio.Task[Any], deadline: float) -> None:
        self.task: asyncio.Task[Any] | None = task
        self.deadline = deadline
        self.cancelling = task.cancelling()
        self.expired = False

    def finish(self, *, cancelled: bool) -> bool:
        """Mark the call done; returns whether the deadline cancelled it (then the
        caller turns the ``CancelledError`` into its timeout error)."""
        task, self.task = self.task, None  # the queue must not keep the task alive
        if not self.expired or task is None:
            return False
        # As asyncio.timeout: undo our cancel request; the error is ours only if
        # nobody else asked for a cancel meanwhile.
        return task.uncancel() <= self.cancelling and cancelled


class DeadlineTimer:
    """Deadlines of calls that share one timeout, on one loop."""

    __slots__ = ("_handle", "_loop", "_queue", "_timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._queue: deque[Attempt] = deque()
        self._handle: asyncio.TimerHandle | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop this timer runs on."""
        return self._loop

    def start(self, task: asyncio.Task[Any]) -> Attempt:
        """Put ``task``'s call under the deadline ``timeout`` seconds from now."""
        attempt = Attempt(task, self._loop.time() + self._timeout)
        self._queue.append(attempt)
        if self._handle is None:
            self._handle = self._loop.call_at(attempt.deadline, self._fire)
        return attempt

    def _fire(self) -> None:
        self._handle = None
        now = self._loop.time() + _RESOLUTION
        queue = self._queue
        while queue:
            attempt = queue[0]
            if attempt.task is None:
                queue.popleft()
            elif attempt.deadline <= now:
                queue.popleft()
                attempt.expired = True
                attempt.task.cancel()
            else:
                self._handle = self._loop.call_at(attempt.deadline, self._fire)
                return
