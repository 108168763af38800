"""Cancelling a task so that it stays cancelled.

Python 3.11's ``asyncio.wait_for`` drops a cancellation that arrives while the
operation it waits for completes (CPython gh-86296; 3.12 rebuilt ``wait_for`` on
``asyncio.timeout``): the caller's task goes on as if never cancelled.  dnspython
wraps every socket operation in ``wait_for``, so a watch cancelled while a DNS
query was being sent carried on with the query until its timeout (2 s a try,
then the next try), and ``stop()`` returned with the watch's thread still running.
:func:`cancel_until_done` asks again until the task has ended.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

__all__ = ["cancel_until_done"]

#: Seconds between two cancellation requests of a task that is still running.
AGAIN: Final = 0.01


def cancel_until_done(task: asyncio.Task[Any], *, again: float = AGAIN) -> None:
    """Cancel ``task``, and again every ``again`` seconds until it is done.  Call it on
    the task's loop (``loop.call_soon_threadsafe(cancel_until_done, task)`` from
    another thread); a task that is done is left alone."""
    if task.done():
        return
    task.cancel()
    loop = task.get_loop()

    def repeat() -> None:
        if not task.done():
            task.cancel()
            loop.call_later(again, repeat)

    loop.call_later(again, repeat)
