"""``kitsd watch URL``: print the live instance set of any ``instancer_from_url`` URL."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TextIO

from kitsd import sd

__all__ = ["watch"]


def _line(event: sd.Event) -> str:
    stamp = time.strftime("%H:%M:%S")
    listed = ", ".join(event.instances) if event.instances else "(none)"
    if event.error is not None:
        return f"{stamp}  error, keeping {len(event.instances)}: {event.error}  [{listed}]"
    return f"{stamp}  {len(event.instances)} instances: {listed}"


def watch(url: str, out: TextIO, *, stop: threading.Event | None = None,
          count: int | None = None, duration: float | None = None) -> int:
    """Print every change of ``url``'s instance set until ``stop`` is set, ``count``
    events were printed, ``duration`` seconds passed, or Ctrl-C.  Returns an exit code."""
    stop = stop or threading.Event()
    printed = 0
    lock = threading.Lock()

    def on_event(event: sd.Event) -> None:
        nonlocal printed
        with lock:
            out.write(_line(event) + "\n")
            out.flush()
            printed += 1
            if count is not None and printed >= count:
                stop.set()

    with sd.instancer_from_url(url) as instancer:
        instancer.subscribe(on_event)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait(duration)
    return 0
