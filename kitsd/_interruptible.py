"""Waits in the main thread that Ctrl-C (and SIGTERM, as :mod:`kitsd.cli` handles it)
always interrupts.

Python runs signal handlers in the main thread, between bytecodes.  A signal the kernel
delivers to another thread (any thread may receive a process-directed signal) only
flags the main thread; a main thread blocked in ``Event.wait()``, ``Thread.join()`` or a
long ``time.sleep()`` without a timeout does not look at the flag until it wakes up --
``kitsd demo`` sat out 3 of 10 Ctrl-Cs that way.  These waits wake every
:data:`SLICE` seconds, so a pending signal is handled within that time.
"""

from __future__ import annotations

import threading
import time

__all__ = ["SLICE", "join", "sleep", "wait"]

SLICE = 0.1
"""Seconds a wait blocks at most before looking for a pending signal."""


def wait(event: threading.Event, timeout: float | None = None) -> bool:
    """``event.wait(timeout)``, in slices; returns whether the event is set."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
        if left <= 0:
            return event.is_set()
        if event.wait(left):
            return True


def join(thread: threading.Thread) -> None:
    """``thread.join()``, in slices."""
    while thread.is_alive():
        thread.join(SLICE)


def sleep(seconds: float) -> None:
    """``time.sleep(seconds)``, in slices."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(SLICE, left))
