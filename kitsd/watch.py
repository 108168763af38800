"""``kitsd watch URL``: print the live instance set of any ``instancer_from_url`` URL."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
import threading
import time
from typing import TextIO

from kitsd import _interruptible, sd

__all__ = ["main_watch", "watch"]


def _line(event: sd.Event) -> str:
    stamp = time.strftime("%H:%M:%S")
    listed = ", ".join(event.instances) if event.instances else "(none)"
    if event.error is not None:
        return f"{stamp}  error, keeping {len(event.instances)}: {event.error}  [{listed}]"
    return f"{stamp}  {_count(len(event.instances))}: {listed}"


def _count(n: int) -> str:
    return f"{n} instance" if n == 1 else f"{n} instances"


def watch(url: str, out: TextIO, *, stop: threading.Event | None = None,
          count: int | None = None, duration: float | None = None,
          err: TextIO | None = None) -> int:
    """Print every change of ``url``'s instance set until ``stop`` is set, ``count``
    events were printed or ``duration`` seconds passed; returns an exit code.

    0 when the registry's last answer was good; 1 when it was an error, when no
    answer came at all, or when the instancer could not even be built because the
    registry failed (an etcd URL with credentials authenticates first): a line on
    ``err``, default ``sys.stderr``, says which.  Raises ``ValueError``
    (:class:`sd.MisuseError`) for a bad URL, before watching; ``KeyboardInterrupt``
    propagates after the watch is stopped, and so does ``BrokenPipeError`` when the
    reader of ``out`` went away (``kitsd watch URL | head -1``): the watch stops then.
    """
    err = sys.stderr if err is None else err
    stop = stop or threading.Event()
    printed = 0
    last: sd.Event | None = None
    reached = False
    lock = threading.Lock()

    gone = False  # the reader of ``out`` went away (``kitsd watch URL | head -1``)

    def on_event(event: sd.Event) -> None:
        nonlocal printed, last, reached, gone
        with lock:
            try:
                out.write(_line(event) + "\n")
                out.flush()
            except BrokenPipeError:
                gone = True
                stop.set()
                return
            last = event
            reached = reached or event.error is None
            printed += 1
            if count is not None and printed >= count:
                stop.set()

    try:
        instancer = sd.instancer_from_url(url)
    except sd.BackendError as error:  # the registry failed before there was a watch
        err.write(f"kitsd watch: the registry was never reached: {error}\n")
        return 1
    with instancer:
        instancer.subscribe(on_event)
        _interruptible.wait(stop, duration)  # Ctrl-C reaches a main thread that waits
        instancer.unsubscribe(on_event)
    with lock:
        if gone:
            raise BrokenPipeError(errno.EPIPE, "the output was closed")
        if last is None:
            err.write("kitsd watch: no answer from the registry"
                      + (f" within {duration:g}s\n" if duration is not None else "\n"))
            return 1
        if last.error is not None:
            what = "the registry was never reached" if not reached else \
                "the registry's last answer was an error"
            err.write(f"kitsd watch: {what}: {last.error}\n")
            return 1
    return 0


def main_watch(args: argparse.Namespace) -> int:
    """The ``kitsd watch`` command (``args`` from :mod:`kitsd.cli`).

    Each registry error is printed once, as a line of the watch: the drivers' own
    warnings about the same error are silenced unless ``--verbose``.
    """
    library = logging.getLogger("kitsd")
    previous = library.level
    if not args.verbose:
        library.setLevel(logging.ERROR)
    try:
        return watch(args.url, sys.stdout, count=args.count, duration=args.duration)
    finally:  # main may run in-process (tests, embedding): leave logging as found
        library.setLevel(previous)
