"""kitsd.serve under a real uvicorn process: SIGTERM drains before the server stops."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Served:
    def __init__(self, tmp_path: Path, *options: str) -> None:
        self.port = free_port()
        self.log = tmp_path / f"{self.port}.log"
        self.log.touch()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.serve.app", str(self.port), str(self.log), *options],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"

    def lines(self) -> list[str]:
        return [line.split()[0] for line in self.log.read_text().splitlines()]

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=2)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        assert self.process.stderr is not None
        self.process.stderr.close()


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Served]:
    server = Served(tmp_path, *getattr(request, "param", ()))
    yield server
    server.close()


@pytest.mark.parametrize("served", [(), ("--starlette",)], indirect=True,
                         ids=["asgi", "starlette-lifespan"])
def test_sigterm_deregisters_then_keeps_serving_for_the_margin(served: Served) -> None:
    wait_for(lambda: served.lines() == ["register"], timeout=20, what="registration")
    assert served.get("/healthz").status_code == 200  # it answered before registering
    served.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "deregister" in served.lines(), timeout=10, what="deregistration")
    # deregistered, and still serving: callers that have not heard yet are answered
    work = served.get("/work")
    assert work.status_code == 200
    health = served.get("/healthz")
    assert health.status_code == 503
    assert health.headers["kitsd-draining"] == "1"
    assert health.json() == {"status": "draining", "registered": False}
    assert served.process.wait(10) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    assert served.lines() == ["register", "deregister"]
    stop = float(served.log.read_text().splitlines()[1].split()[1])
    assert stop > 0


def test_a_drained_asgi_app_closes_connections_while_draining(served: Served) -> None:
    wait_for(lambda: served.lines() == ["register"], timeout=20, what="registration")
    with httpx.Client(base_url=served.url) as client:
        assert "close" not in client.get("/work").headers.get("connection", "")
        served.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "deregister" in served.lines(), timeout=10, what="deregistration")
        assert client.get("/work").headers["connection"] == "close"


@pytest.mark.parametrize("served", [("--margin", "60", "--drain", "120")], indirect=True)
def test_a_second_sigterm_ends_the_drain_at_once(served: Served) -> None:
    wait_for(lambda: served.lines() == ["register"], timeout=20, what="registration")
    served.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "deregister" in served.lines(), timeout=10, what="deregistration")
    time.sleep(0.3)
    assert served.process.poll() is None  # draining for a minute
    started = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    served.process.wait(10)
    assert time.monotonic() - started < 5
