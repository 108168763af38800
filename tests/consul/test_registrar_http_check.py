"""ConsulRegistrar's HTTP check (``http=``): beside the TTL check, or alone; run by a real agent."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from kitsd.sd.consul import ConsulRegistrar, HttpxConsul
from tests.consul.conftest import passing_instances
from tests.helpers import wait_for


class _NoClient:
    """Never called: argument checks happen before any request."""


def _make(**kwargs: object) -> ConsulRegistrar:
    return ConsulRegistrar(_NoClient(), "web", "10.0.0.1", 80, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"http": "ftp://10.0.0.1/healthz"}, "http must be"),
        ({"http": "/healthz"}, "http must be"),
        ({"http": "http:///healthz"}, "http must be"),
        ({"http": "http://10.0.0.1:0/healthz"}, "http must be"),
        ({"http": "http://10.0.0.1:99999/healthz"}, "http must be"),
        ({"http": "http://10.0.0.1/a b"}, "http must be"),
        ({"http": "http://10.0.0.1/", "http_interval": 0.5}, "http_interval"),
        ({"http": "http://10.0.0.1/", "http_interval": float("inf")}, "http_interval"),
        ({"http": "http://10.0.0.1/", "http_timeout": 0}, "http_timeout"),
    ],
)
def test_bad_http_check_options_name_the_option(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        _make(**kwargs)


def test_http_check_type_errors() -> None:
    with pytest.raises(TypeError, match="http must be"):
        _make(http=b"http://10.0.0.1/")
    with pytest.raises(TypeError, match="http_interval"):
        _make(http="http://10.0.0.1/", http_interval=None)


def test_user_information_is_refused_and_never_shown() -> None:
    with pytest.raises(ValueError, match="user information") as excinfo:
        _make(http="http://admin:s3cret@10.0.0.1/healthz")
    assert "s3cret" not in str(excinfo.value)


def test_http_check_alone_and_beside_the_ttl_check() -> None:
    alone = _make(ttl=None, http="http://10.0.0.1:80/healthz", http_interval=1.5,
                  http_timeout=0.5).registration()
    assert alone["check"] == {
        "CheckID": "service:web-10.0.0.1-80:http", "Name": "kitsd HTTP check of web-10.0.0.1-80",
        "HTTP": "http://10.0.0.1:80/healthz", "Interval": "1500ms", "Timeout": "500ms",
        "Status": "passing", "DeregisterCriticalServiceAfter": "60000ms"}
    assert "extra_checks" not in alone
    both = _make(ttl=5, http="http://10.0.0.1/healthz").registration()
    assert both["check"]["CheckID"] == "service:web-10.0.0.1-80"
    assert both["check"]["ttl"] == "5000ms"
    [extra] = both["extra_checks"]
    assert extra["HTTP"] == "http://10.0.0.1/healthz"
    assert extra["Interval"] == "2000ms"
    assert "Timeout" not in extra
    assert "extra_checks" not in _make().registration()


class _Health:
    """A loopback HTTP server whose every answer is ``status`` (switchable)."""

    def __init__(self) -> None:
        self.status = 200
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(owner.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def health() -> Iterator[_Health]:
    server = _Health()
    yield server
    server.close()


@pytest.mark.integration
@pytest.mark.parametrize("ttl", [None, 10.0])
def test_the_agent_marks_an_instance_answering_503_critical(
    client: HttpxConsul, service_name: str, health: _Health, ttl: float | None
) -> None:
    url = f"http://127.0.0.1:{health.port}/healthz"
    with ConsulRegistrar(client, service_name, "127.0.0.1", health.port, ttl=ttl, http=url,
                         http_interval=1) as registrar:
        checks = client.agent.checks()
        assert checks[registrar.http_check_id]["Status"] == "passing"
        assert (registrar.check_id in checks) == (ttl is not None)
        wait_for(lambda: passing_instances(client, service_name) == [f"127.0.0.1:{health.port}"],
                 what="the instance passing")
        health.status = 503  # a draining health route
        wait_for(lambda: passing_instances(client, service_name) == [], timeout=15,
                 what="the agent's HTTP check turning critical")
        assert client.agent.checks()[registrar.http_check_id]["Status"] == "critical"
        health.status = 200
        wait_for(lambda: passing_instances(client, service_name) == [f"127.0.0.1:{health.port}"],
                 timeout=15, what="the instance passing again")
    assert registrar.service_id not in client.agent.services()
