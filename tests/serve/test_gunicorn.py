"""kitsd.serve under a real gunicorn: the master registers when its workers answer and
drains on SIGTERM before gunicorn closes its sockets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import wait_for
from tests.serve.test_uvicorn import free_port

ROOT = Path(__file__).resolve().parents[2]


class Gunicorn:
    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.port = free_port()
        self.log = tmp_path / "registry.log"
        self.log.touch()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {**os.environ, "KITSD_TEST_PORT": str(self.port),
                       "KITSD_TEST_LOG": str(self.log), **env,
                       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH",
                                                                                "")])}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "tests/serve/gunicorn_conf.py"),
             "tests.serve.wsgi_app:app"], cwd=ROOT, env=environment,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def lines(self) -> list[str]:
        return [line.split()[0] for line in self.log.read_text().splitlines()]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        assert self.process.stderr is not None
        self.process.stderr.close()


@pytest.fixture
def gunicorn(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    server = Gunicorn(tmp_path, **getattr(request, "param", {}))
    yield server
    server.close()


def test_the_master_registers_then_drains_before_gunicorn_stops(gunicorn: Gunicorn) -> None:
    wait_for(lambda: gunicorn.lines() == ["register"], timeout=30, what="registration")
    health = httpx.get(gunicorn.url + "/healthz")
    assert health.json() == {"status": "serving", "registered": True}
    gunicorn.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "deregister" in gunicorn.lines(), timeout=10, what="deregistration")
    assert httpx.get(gunicorn.url + "/work").text == "ok"  # still serving while draining
    health = httpx.get(gunicorn.url + "/healthz")
    assert health.status_code == 503
    assert health.headers["kitsd-draining"] == "1"
    assert gunicorn.process.wait(15) == 0
    assert gunicorn.lines() == ["register", "deregister"]


@pytest.mark.parametrize("gunicorn", [{"KITSD_TEST_MARGIN": "60", "KITSD_TEST_DRAIN": "120"}],
                         indirect=True)
def test_a_second_sigterm_ends_the_drain(gunicorn: Gunicorn) -> None:
    wait_for(lambda: gunicorn.lines() == ["register"], timeout=30, what="registration")
    gunicorn.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "deregister" in gunicorn.lines(), timeout=10, what="deregistration")
    started = time.monotonic()
    gunicorn.process.send_signal(signal.SIGTERM)
    gunicorn.process.wait(15)
    assert time.monotonic() - started < 10
