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


#: Run by the child before its module: SIGINT, SIGTERM and SIGHUP as a terminal leaves
#: them to Python (KeyboardInterrupt; the default action) (see :func:`python_m`).
_DEFAULT_SIGNALS = (
    "import runpy, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "for signum in (signal.SIGTERM, signal.SIGHUP):\n"
    "    signal.signal(signum, signal.SIG_DFL)\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
)


def python_m(module: str, *args: str, options: tuple[str, ...] = ()) -> list[str]:
    """``python [options] -m module args`` for a child a test signals, with Ctrl-C,
    SIGTERM and SIGHUP as a terminal leaves them: a test run started in the background
    (``cmd &``) or under ``nohup`` passes SIGINT or SIGHUP on ignored, and a child that
    ignores the signal a test sends it never stops.  Reset in the child itself, not by
    a ``preexec_fn``: that forces a fork running Python in a process using gRPC, whose
    fork handlers then abort the child before it runs (seen under load: the child died
    of SIGABRT, ``epoll_wait error: Bad file descriptor``)."""
    import sys

    return [sys.executable, *options, "-c", _DEFAULT_SIGNALS, module, *args]


def thread_names() -> set[str]:
    """Names of the live threads (compare before and after a test)."""
    return {thread.name for thread in threading.enumerate()}


def _stacks(threads: list[threading.Thread]) -> str:
    """Where each of ``threads`` is, for the message of a leak (what it is stuck in)."""
    import sys
    import traceback

    frames = sys._current_frames()
    return "".join(f"\n--- {thread.name}:\n" + "".join(traceback.format_stack(frame))
                   for thread in threads if (frame := frames.get(thread.ident or 0)) is not None)


def assert_no_new_threads(before: set[threading.Thread], timeout: float = 5.0) -> None:
    """Fail unless every thread started since ``before`` has ended within ``timeout``."""
    def leftover() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in before and t.is_alive()]

    deadline = time.monotonic() + timeout
    while leftover():
        if time.monotonic() > deadline:
            raise AssertionError(f"threads left running: {[t.name for t in leftover()]}"
                                 + _stacks(leftover()))
        time.sleep(0.01)


class WatchProcess:
    """``python -m kitsd watch URL`` in a subprocess, its lines collected by a thread."""

    INTERRUPTED = 130
    """Its exit status after :meth:`close` (Ctrl-C: 128 + SIGINT, everything stopped)."""

    def __init__(self, url: str, duration: float = 60.0) -> None:
        import queue
        import subprocess

        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self.process = subprocess.Popen(
            python_m("kitsd", "watch", url, "--duration", str(duration)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,  # close(): SIGINT
        )
        stdout = self.process.stdout
        assert stdout is not None

        def read() -> None:
            for line in stdout:
                self._queue.put(line)

        self._reader = threading.Thread(target=read, name="watch-reader")
        self._reader.start()

    def wait_line(self, predicate: Callable[[str], bool], timeout: float = 15.0) -> str:
        """The first new line satisfying ``predicate``; fail after ``timeout`` seconds."""
        import queue

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching watch line in {timeout}s; saw {self.lines}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            self.lines.append(line)
            if predicate(line):
                return line

    def close(self) -> None:
        """Interrupt the watch (as Ctrl-C does) and reap it."""
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except Exception:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
