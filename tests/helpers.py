"""Test helpers: polling with a deadline, and checks that nothing is left running."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


async def async_wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float = 5.0,  # noqa: ASYNC109 - mirrors wait_for; it polls, never cancels
    what: str = "condition",
) -> None:
    """Async twin of :func:`wait_for`."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


def thread_names() -> set[str]:
    """Names of the live threads (compare before and after a test)."""
    return {thread.name for thread in threading.enumerate()}


def assert_no_new_threads(before: set[threading.Thread], timeout: float = 5.0) -> None:
    """Fail unless every thread started since ``before`` has ended within ``timeout``."""
    def leftover() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in before and t.is_alive()]

    deadline = time.monotonic() + timeout
    while leftover():
        if time.monotonic() > deadline:
            raise AssertionError(f"threads left running: {[t.name for t in leftover()]}")
        time.sleep(0.01)
