"""A parent-death watch: the server processes we start never outlive us.

Theory of operation
-------------------
Servers run in sessions of their own, so that a Ctrl-C in the terminal reaches us
first and we stop them in order.  It also means that nothing stops them when we die
without doing it: SIGKILL, a crash, an OOM kill, a CI runner killing our process group
(their groups are not ours).  So the first server we start also starts one small
watcher process, this file run as a script, in a session of its own too:

* its stdin is the read end of a pipe whose write end only we hold (the pipe is not
  inherited by anything we start: close-on-exec);
* we tell it, one line each, ``+pid N`` when a server starts and ``-pid N`` when we
  have stopped and reaped it, ``+dir PATH`` / ``-dir PATH`` for a temporary
  directory we will remove;
* when the pipe reaches end-of-file -- we exited, however we exited -- it stops every
  process still registered, the last started first (SIGCONT, for a paused one, then
  SIGTERM to its process group, up to :data:`STEP` seconds each; SIGKILL for what is
  left after :data:`GRACE` seconds), removes every directory still registered, and
  exits.  A normal exit after every server was closed leaves it
  nothing to do.

A pid is only signalled if it is still the process that was registered (its start
time in ``/proc/PID/stat`` is unchanged; elsewhere, that it exists), so a reused pid
is never hit.  If the watcher itself is killed, the next registration starts a new
one and hands it everything still registered.  A process forked (without exec) from
ours starts its own watcher when it starts a server.  Linux first; any POSIX system
with ``/proc`` or ``kill(pid, 0)``.

Only the standard library is used, so the watcher runs as ``python -I reaper.py``
without kitsd on its path.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import IO

__all__ = ["GRACE", "STEP", "forget", "forget_dir", "watch", "watch_dir", "watcher_pid"]

GRACE = 5.0
"""Seconds the watcher gives SIGTERM, in all, before SIGKILL."""

STEP = 1.0
"""Seconds the watcher waits for one process before it signals the next."""


# --- our side -------------------------------------------------------------------------


class _Reaper:
    """Our end of the watch: the watcher process, and what we told it (to tell a new one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._pids: set[int] = set()
        self._dirs: set[str] = set()

    def add(self, kind: str, value: str) -> None:
        with self._lock:
            (self._pids.add(int(value)) if kind == "pid" else self._dirs.add(value))
            self._send(f"+{kind} {value}")

    def discard(self, kind: str, value: str) -> None:
        with self._lock:
            (self._pids.discard(int(value)) if kind == "pid" else self._dirs.discard(value))
            if self._process is not None:
                self._send(f"-{kind} {value}")

    def pid(self) -> int | None:
        with self._lock:
            return None if self._process is None else self._process.pid

    def _send(self, line: str) -> None:
        for _ in range(2):
            if self._process is None or self._process.poll() is not None:
                self._start()
                return  # the new watcher was told everything, this line included
            assert self._process.stdin is not None  # noqa: S101 - Popen(stdin=PIPE)
            try:
                self._process.stdin.write(line.encode() + b"\n")
                self._process.stdin.flush()
            except OSError:  # the watcher died: start another, tell it everything
                self._process = None
            else:
                return

    def _start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # a kill of our process group must not reach it
        )
        assert self._process.stdin is not None  # noqa: S101 - Popen(stdin=PIPE)
        lines = [f"+pid {pid}" for pid in sorted(self._pids)]
        lines += [f"+dir {path}" for path in sorted(self._dirs)]
        self._process.stdin.write("".join(f"{line}\n" for line in lines).encode())
        self._process.stdin.flush()

    def after_fork_in_child(self) -> None:
        """A forked child must not hold our pipe open (the watcher would wait for it too),
        nor stop our servers: it starts with nothing registered."""
        if self._process is not None and self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
            self._process.returncode = 0  # not our child: never waited for here
        self.__init__()  # type: ignore[misc]  # a fresh, unlocked state


_REAPER = _Reaper()
os.register_at_fork(after_in_child=_REAPER.after_fork_in_child)


def watch(pid: int) -> None:
    """Stop process ``pid`` (and its process group) if we die before :func:`forget`."""
    _REAPER.add("pid", str(pid))


def forget(pid: int) -> None:
    """``pid`` was stopped and reaped by us: nothing to do for it any more."""
    _REAPER.discard("pid", str(pid))


def watch_dir(path: str | os.PathLike[str]) -> None:
    """Remove directory ``path`` if we die before :func:`forget_dir`."""
    _REAPER.add("dir", os.path.abspath(path))


def forget_dir(path: str | os.PathLike[str]) -> None:
    """``path`` was removed (or is kept on purpose): leave it alone."""
    _REAPER.discard("dir", os.path.abspath(path))


def watcher_pid() -> int | None:
    """The watcher process's pid, once a server was started (for tests)."""
    return _REAPER.pid()


# --- the watcher ------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The process's start time (``/proc``, Linux), ``""`` where unknown, ``None`` if
    there is no such process or it is a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc here: existence only
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return ""
        return ""
    if fields[0] == b"Z":
        return None
    return fields[19].decode()  # field 22: starttime


def _signal(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)  # a server is its session's (and group's) leader
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _reap(pids: dict[int, str | None], dirs: Iterable[str]) -> None:
    """Stop ``pids`` (in registration order), the last started first: a client (a chaos
    instance deregistering) ends before the servers it talks to.  Each gets up to
    :data:`STEP` seconds alone, all of them :data:`GRACE` in total, then SIGKILL."""
    alive = {pid: started for pid, started in pids.items()
             if started is not None and _start_time(pid) == started}
    deadline = time.monotonic() + GRACE
    for pid in reversed(list(alive)):
        _signal(pid, signal.SIGCONT)
        _signal(pid, signal.SIGTERM)
        step = min(deadline, time.monotonic() + STEP)
        while _start_time(pid) == alive[pid] and time.monotonic() < step:
            time.sleep(0.02)
    while alive and time.monotonic() < deadline:
        alive = {pid: started for pid, started in alive.items() if _start_time(pid) == started}
        time.sleep(0.02)
    for pid in alive:
        _signal(pid, signal.SIGKILL)
    import shutil

    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)


def _watch(stream: IO[bytes]) -> None:
    pids: dict[int, str | None] = {}
    dirs: set[str] = set()
    for raw in stream:
        op, _, arg = raw.decode(errors="replace").rstrip("\n").partition(" ")
        try:
            if op == "+pid":
                pids[int(arg)] = _start_time(int(arg))
            elif op == "-pid":
                pids.pop(int(arg), None)
            elif op == "+dir":
                dirs.add(arg)
            elif op == "-dir":
                dirs.discard(arg)
        except ValueError:
            continue
    _reap(pids, dirs)  # end of file: our parent is gone


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is not for us
    _watch(sys.stdin.buffer)
