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

A call given an earlier deadline of its own (:func:`lb.deadline`) joins the
queue too when it keeps the order (every call under the same shorter deadline
does); one that would jump it gets a loop timer of its own.

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

    __slots__ = ("cancelling", "deadline", "expired", "handle", "task")

    def __init__(self, task: asyncio.Task[Any], deadline: float) -> None:
        self.task: asyncio.Task[Any] | None = task
        self.deadline = deadline
        self.cancelling = task.cancelling()
        self.expired = False
        self.handle: asyncio.TimerHandle | None = None  # a timer of its own, if any

    def expire(self) -> None:
        """The deadline has come: cancel the call if it is still running."""
        if self.task is not None:
            self.expired = True
            self.task.cancel()

    def finish(self, *, cancelled: bool) -> bool:
        """Mark the call done; returns whether the deadline cancelled it (then the
        caller turns the ``CancelledError`` into its timeout error)."""
        task, self.task = self.task, None  # the queue must not keep the task alive
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
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

    def start(self, task: asyncio.Task[Any], deadline: float | None = None) -> Attempt:
        """Put ``task``'s call under the deadline ``timeout`` seconds from now, or
        ``deadline`` (on the loop's clock) when that is earlier."""
        at = self._loop.time() + self._timeout
        if deadline is not None and deadline < at:
            at = deadline
        attempt = Attempt(task, at)
        queue = self._queue
        if queue and queue[-1].deadline > at:  # out of order: a timer of its own
            attempt.handle = self._loop.call_at(at, attempt.expire)
            return attempt
        queue.append(attempt)
        if self._handle is None:
            self._handle = self._loop.call_at(at, self._fire)
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
                attempt.expire()
            else:
                self._handle = self._loop.call_at(attempt.deadline, self._fire)
                return
