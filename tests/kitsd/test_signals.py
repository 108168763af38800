"""Ctrl-C, SIGTERM, SIGHUP and SIGKILL: the command line stops everything it started.

Each command runs in a subprocess of its own; once it is visibly running (its first
line, or its threads), it gets the signal.  Then: one line on stderr and no traceback,
exit status 128 + N, and every process it started gone and every port it listened on
closed -- counted from ``/proc`` before the signal (Linux).  After SIGKILL nothing can
run in the command itself: the parent-death watch (:mod:`kitsd.compose.reaper`) stops
its servers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kitsd.compose import reaper
from tests.helpers import python_m, wait_for

ROOT = Path(__file__).resolve().parents[2]


class Command:
    """``python -m kitsd ARGS`` in a subprocess, its stdout lines collected."""

    def __init__(self, *args: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            # faulthandler: a command that hangs is made to show where (SIGABRT, finish())
            python_m("kitsd", *args, options=("-X", "faulthandler")), cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self._reader = threading.Thread(target=self._read, name="command-reader")
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_line(self, text: str, timeout: float = 60.0) -> None:
        wait_for(lambda: any(text in line for line in self.lines) or
                 self.process.poll() is not None, timeout, f"a line with {text!r}")
        assert any(text in line for line in self.lines), (
            "".join(self.lines) + (self.process.stderr.read() if self.process.stderr else ""))

    def finish(self, timeout: float = 60.0) -> tuple[int, str]:
        assert self.process.stderr is not None
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)  # faulthandler dumps every thread
            self.process.wait(10)
            raise AssertionError(f"still running {timeout:g}s after the signal; its threads:\n"
                                 + self.process.stderr.read()[-20000:]) from None
        self._reader.join(10)
        return code, self.process.stderr.read()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.finish()


@pytest.fixture
def command() -> Iterator[Callable[..., Command]]:
    started: list[Command] = []

    def start(*args: str) -> Command:
        started.append(Command(*args))
        return started[-1]

    yield start
    for each in started:
        each.kill()


def threads_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("Threads:")))


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children of every thread, recursively)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def listening_ports(pids: set[int]) -> set[int]:
    """TCP ports in LISTEN state whose socket belongs to one of ``pids``."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def assert_all_gone(pids: set[int], ports: set[int], timeout: float) -> None:
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout,
             f"processes {sorted(p for p in pids if alive(p))} to end")
    wait_for(lambda: not any(port_open(port) for port in ports), timeout,
             f"ports {sorted(p for p in ports if port_open(p))} to close")


def assert_one_line(stderr: str, what: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == [lines[-1]], stderr
    assert what in lines[-1], stderr
    assert "everything it started is stopped" in lines[-1]


@pytest.mark.parametrize(("signum", "code", "said"), [
    (signal.SIGINT, 130, "interrupted"),
    (signal.SIGTERM, 143, "SIGTERM"),
    (signal.SIGHUP, 129, "SIGHUP"),
])
def test_demo_stops_on_a_signal(command: Callable[..., Command], signum: int, code: int,
                                said: str) -> None:
    demo = command("demo", "--requests", "10000000", "--concurrency", "2")
    # 3 instances serving (a thread each) and 2 calling threads: it is running
    wait_for(lambda: threads_of(demo.process.pid) >= 6, 30, "the demo to run")
    demo.process.send_signal(signum)
    returncode, stderr = demo.finish()
    assert returncode == code
    assert_one_line(stderr, f"kitsd demo: {said}")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_watch_stops_on_a_signal(command: Callable[..., Command], signum: int,
                                 code: int) -> None:
    watch = command("watch", "static://127.0.0.1:1")
    watch.wait_line("1 instance")
    watch.process.send_signal(signum)
    returncode, stderr = watch.finish()
    assert returncode == code
    assert_one_line(stderr, "kitsd watch:")


def _chaos_running(command: Callable[..., Command], *args: str) -> tuple[Command, set[int],
                                                                           set[int]]:
    chaos = command("chaos", "--duration", "600", "--rate", "5", *args)
    chaos.wait_line("phase baseline")
    pids = descendants(chaos.process.pid)
    return chaos, pids, listening_ports(pids)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                              (signal.SIGHUP, 129)])
def test_chaos_stops_everything_on_a_signal(command: Callable[..., Command], signum: int,
                                            code: int) -> None:
    chaos, pids, ports = _chaos_running(command, "--registry", "memory")
    assert len(pids) >= 4  # 3 instances and the watcher
    assert len(ports) >= 3
    chaos.process.send_signal(signum)
    returncode, stderr = chaos.finish()
    assert returncode == code
    assert_one_line(stderr, "kitsd chaos:")
    assert_all_gone(pids, ports, timeout=5)


def test_chaos_killed_leaves_nothing_running(command: Callable[..., Command]) -> None:
    chaos, pids, ports = _chaos_running(command, "--registry", "memory")
    assert len(pids) >= 4  # 3 instances and the watcher
    chaos.process.kill()
    chaos.finish()
    assert_all_gone(pids, ports, timeout=reaper.GRACE + 10)


@pytest.mark.integration
@pytest.mark.kitsd_servers("etcd")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_chaos_on_etcd_leaves_no_server(command: Callable[..., Command], signum: int) -> None:
    """The issue's count: SIGTERM left 6 server processes (3 etcd members, 3 instances)
    and 9 listening ports behind."""
    chaos, pids, ports = _chaos_running(command, "--registry", "etcd")
    assert len(pids) >= 6
    assert len(ports) >= 9
    chaos.process.send_signal(signum)
    returncode, stderr = chaos.finish()
    if signum == signal.SIGTERM:
        assert returncode == 143
        assert_one_line(stderr, "kitsd chaos: SIGTERM")
    assert_all_gone(pids, ports, timeout=reaper.GRACE + 10)
