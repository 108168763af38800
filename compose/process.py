"""Helpers shared by the server launchers: free ports, polling, process teardown, and the
process lifecycle they share.

:class:`ServerProcess` is one server process we start (its log file, start, readiness wait,
stop/kill/restart, close); a launcher gives its command line and readiness check.
:class:`ServerGroup` is such processes in one temporary directory, removed on close.
Every process and directory is also handed to :mod:`kitsd.compose.reaper`, so that
none outlives this process, even one killed with SIGKILL.

Not thread-safe: drive processes and groups from one thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import IO, ClassVar, Generic, Self, TypeVar

from kitsd.compose import reaper

__all__ = [
    "LOOPBACK",
    "ExternalServer",
    "ServerGroup",
    "ServerProcess",
    "free_ports",
    "stop_process",
    "wait_until",
]

LOOPBACK = "127.0.0.1"
"""The host every launched server listens on."""


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct TCP ports that were free on ``host`` a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``predicate`` until true; raise ``TimeoutError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001, S110 - a server still starting may fail in any way
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def stop_process(
    process: subprocess.Popen[bytes], *, kill: bool = False, timeout: float = 10.0
) -> None:
    """Stop ``process`` (SIGTERM, or SIGKILL with ``kill=True``) and reap it; idempotent."""
    if process.poll() is not None:
        return
    try:
        os.kill(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


class ServerProcess(ABC):
    """One server process we start, run in ``workdir`` and logging to ``workdir/<name>.log``.

    Subclasses give :meth:`command`, :meth:`ready` and :attr:`address`.
    :meth:`stop`, :meth:`kill` and :meth:`restart` keep the command line, so the
    ports and data directory stay.  :meth:`close` (or leaving the context manager)
    kills the process and closes the log file.  Not thread-safe.
    """

    kind: ClassVar[str] = "server"
    """What error messages call one process (``"etcd member"``)."""

    start_timeout: ClassVar[float] = 20.0
    """Seconds :meth:`wait_ready` waits by default."""

    def __init__(self, name: str, *, workdir: Path) -> None:
        self.name = name
        self.host = LOOPBACK
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    @abstractmethod
    def address(self) -> str:
        """``host:port`` clients connect to."""

    @abstractmethod
    def command(self) -> list[str]:
        """The command line this process runs."""

    def env(self) -> dict[str, str] | None:
        """The environment of the process (``None``: inherit ours)."""
        return None

    @abstractmethod
    def ready(self) -> bool:
        """Whether the server is up and serving (``False`` while it is not running)."""

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while running, else ``None``."""
        return self._process.pid if self._process is not None and self.running else None

    def start(self) -> None:
        """Spawn the process (does not wait); a no-op while running."""
        if self.running:
            return
        if self._log is not None:
            self._log.close()
        self._log = self.log_path.open("ab")
        self._log.write(f"\n==== kitsd: starting {self.name} ====\n".encode())
        self._log.flush()
        self._process = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the test terminal must not reach the server first
        )
        reaper.watch(self._process.pid)  # its own session: stopped by the reaper if we die

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until :meth:`ready` (``timeout`` defaults to :attr:`start_timeout`);
        raise ``RuntimeError`` with the log tail if not, or if the process exits."""
        try:
            wait_until(lambda: not self.running or self.ready(),
                       self.start_timeout if timeout is None else timeout,
                       f"{self.kind} {self.name} to be ready")
        except TimeoutError as error:
            raise RuntimeError(f"{error}\n--- {self.log_path} ---\n{self.log_tail()}") from error
        if not self.running:
            code = None if self._process is None else self._process.poll()
            raise RuntimeError(f"{self.kind} {self.name} exited with {code}\n"
                               f"--- {self.log_path} ---\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop with SIGTERM and reap; idempotent (a paused process is resumed first)."""
        if self._process is not None:
            self.resume()
            stop_process(self._process)
            reaper.forget(self._process.pid)

    def kill(self) -> None:
        """Kill with SIGKILL (a crash) and reap; idempotent."""
        if self._process is not None:
            stop_process(self._process, kill=True)
            reaper.forget(self._process.pid)

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the process if it is running (no-op otherwise)."""
        if self._process is not None and self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, signum)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): it keeps its sockets but answers nothing, as a hung
        server does.  :meth:`resume` lets it go on."""
        self.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        r"""Let a :meth:`pause`\ d process go on (SIGCONT)."""
        self.send_signal(signal.SIGCONT)

    def restart(self, *, wait: bool = True) -> None:
        """Stop (if running) and start again on the same ports (and data directory);
        with ``wait``, :meth:`wait_ready`."""
        self.stop()
        self.start()
        if wait:
            self.wait_ready()

    def close(self) -> None:
        """Kill the process and close the log file."""
        self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of this process's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"{type(self).__name__}({self.name!r}, {self.address}, {state})"


ProcessT = TypeVar("ProcessT", bound=ServerProcess)


class ServerGroup(Generic[ProcessT]):
    """Server processes (:attr:`members`, filled by the subclass) in one temporary directory.

    :meth:`close` (or leaving the context manager) closes every member and
    removes the directory: nothing is left behind.  Not thread-safe.
    """

    can_restart = True
    """Members we started can be stopped, killed and restarted."""

    def __init__(self, prefix: str, tmp_root: str | None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix, dir=tmp_root)
        reaper.watch_dir(self._tmp.name)
        self._closed = False
        self.members: list[ProcessT] = []

    @property
    def workdir(self) -> Path:
        """The temporary directory holding data directories and logs (absolute)."""
        return Path(self._tmp.name).absolute()

    def start(self) -> None:
        """Start every member that is not running (all before waiting: a cluster
        bootstraps only with a quorum), then wait until each is ready; raises
        ``RuntimeError`` (with the log tail) for one that does not become ready."""
        for member in self.members:
            member.start()
        for member in self.members:
            member.wait_ready()

    def stop(self) -> None:
        """Stop every member with SIGTERM (data directories stay for :meth:`restart`)."""
        for member in self.members:
            member.stop()

    def kill(self) -> None:
        """Kill every member with SIGKILL (data directories stay for :meth:`restart`)."""
        for member in self.members:
            member.kill()

    def restart(self) -> None:
        """Stop every member and :meth:`start` them again on the same ports (and data)."""
        self.stop()
        self.start()

    def _start_or_close(self) -> None:
        """:meth:`start`, closing the group if that fails: a constructor leaves nothing behind."""
        try:
            self.start()
        except BaseException:
            self.close()
            raise

    def log_tails(self, lines: int = 40) -> str:
        """The end of every member's log, for a failure message."""
        return "\n".join(
            f"--- {member.name} ({member.log_path}) ---\n{member.log_tail(lines)}"
            for member in self.members
        )

    def close(self) -> None:
        """Kill every member and remove the temporary directory; idempotent."""
        if self._closed:
            return
        self._closed = True
        for member in self.members:
            member.close()
        self._tmp.cleanup()
        reaper.forget_dir(self._tmp.name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.members!r})"


class ExternalServer:
    """A server someone else runs (named by an environment variable): its address
    only, no process control.  The launchers' ``External*`` classes build on it."""

    can_restart = False
    """We cannot stop, kill or restart a server we did not start."""

    kind: ClassVar[str] = "server"
    """What it is, for messages (``"etcd"``, ``"Consul agent"``...)."""

    def __init__(self, address: str, env: str) -> None:
        host, sep, port = address.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{env} must be host:port, not {address!r}")
        self.host = host
        self.port = int(port)
        self.address = f"{host}:{port}"

    @property
    def running(self) -> bool:
        """Assumed: we do not manage it."""
        return True

    def log_tails(self, lines: int = 40) -> str:
        """An external server's logs are not ours to read."""
        return f"(external {self.kind} at {self.address}: logs not available)"

    def close(self) -> None:
        """Nothing to stop."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"
