"""The parent-death watch (:mod:`kitsd.compose.reaper`), process by process: what a
parent registered is stopped when it dies, the last started first; what it forgot is
left alone; a pid that now names another process is never signalled; a killed
watcher is replaced and told everything again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from kitsd.compose import reaper
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    return reaper._start_time(pid) is not None


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def sleeper(started: list[subprocess.Popen[bytes]], script: str = "exec sleep 600",
            ready: Path | None = None) -> subprocess.Popen[bytes]:
    """``script`` in a session of its own; with ``ready``, once it has created that file
    (after setting its traps)."""
    process = subprocess.Popen(["bash", "-c", script], start_new_session=True)
    started.append(process)
    if ready is not None:
        wait_for(ready.exists, 10, "the script to set its traps")
    return process


def test_the_last_started_is_stopped_first(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    server = sleeper(sleepers)
    seen, ready = tmp_path / "seen", tmp_path / "ready"
    # a client that, told to stop, looks whether its server is still there
    client = sleeper(sleepers, f"trap 'kill -0 {server.pid} && echo up > {seen}; exit 0' TERM;"
                               f" touch {ready}; while :; do sleep 0.02; done", ready)
    directory = tmp_path / "data"
    directory.mkdir()
    reaper._reap({server.pid: reaper._start_time(server.pid),
                  client.pid: reaper._start_time(client.pid)}, [str(directory)])
    assert seen.read_text().strip() == "up"
    assert client.wait(5) == 0
    assert server.wait(5) == -signal.SIGTERM
    assert not directory.exists()


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reaper, "GRACE", 0.5)
    ready = tmp_path / "ready"
    stubborn = sleeper(sleepers, f"trap '' TERM; touch {ready}; while :; do sleep 0.02; done",
                       ready)
    reaper._reap({stubborn.pid: reaper._start_time(stubborn.pid)}, [])
    assert stubborn.wait(5) == -signal.SIGKILL


def test_a_reused_pid_is_never_signalled(sleepers: list[subprocess.Popen[bytes]]) -> None:
    other = sleeper(sleepers)
    wait_for(lambda: alive(other.pid), 5, "it to run")
    reaper._reap({other.pid: "1"}, [])  # registered with another start time: not this one
    assert other.poll() is None


PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from kitsd.compose import reaper

    def start():
        return subprocess.Popen(["sleep", "600"], start_new_session=True)

    kept, forgotten = start(), start()
    reaper.watch(kept.pid)
    reaper.watch(forgotten.pid)
    reaper.forget(forgotten.pid)
    if sys.argv[1] == "kill-watcher":  # the next registration starts a new one
        first = reaper.watcher_pid()
        os.kill(first, 9)
        while os.waitpid(first, os.WNOHANG) == (0, 0):
            time.sleep(0.01)
        later = start()
        reaper.watch(later.pid)
        assert reaper.watcher_pid() != first
    else:
        later = kept
    print(kept.pid, forgotten.pid, later.pid, flush=True)
    time.sleep(600)
    """
)


@pytest.mark.parametrize("how", ["plain", "kill-watcher"])
def test_a_parent_killed_leaves_only_what_it_forgot(how: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, how], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert parent.stdout is not None
    kept, forgotten, later = map(int, parent.stdout.readline().split())
    try:
        parent.kill()
        parent.wait()
        wait_for(lambda: not alive(kept) and not alive(later), reaper.GRACE + 5,
                 "the watched processes to be stopped")
        assert alive(forgotten)
    finally:
        for pid in (kept, forgotten, later):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
