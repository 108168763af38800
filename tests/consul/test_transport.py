"""py-consul over httpx (sd.consul.transport): settings carried over, checked, never shown."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import consul
import httpx
import pytest

from kitsd.core.errors import MisuseError
from kitsd.sd.consul import AgentSettings, AsyncHttpxConsul, HttpxConsul, connect
from kitsd.sd.consul.client import private_client
from kitsd.sd.consul.transport import settings_of

pytestmark = pytest.mark.usefixtures("no_thread_leaks")

SECRET = "t0k3n-n3ver-sh0wn"  # noqa: S105 - a test value


@pytest.mark.parametrize("timeout", [-1, 0, float("nan"), float("inf")])
def test_connect_refuses_a_timeout_that_is_not_a_positive_finite_number(timeout: float) -> None:
    with pytest.raises(MisuseError, match="timeout"):
        connect("127.0.0.1:8500", timeout=timeout)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"timeout": "10"}, TypeError, "timeout"),
        ({"scheme": "ftp"}, MisuseError, "scheme"),
        ({"verify": 1}, TypeError, "verify"),
        ({"cert": ("a",)}, TypeError, "cert"),
        ({"token": "a\r\nInjected: 1"}, MisuseError, "token"),
        ({"dc": ""}, MisuseError, "dc"),
        ({"scheme": "https", "verify": "/nonexistent/ca.pem"}, MisuseError, "TLS files"),
    ],
)
def test_connect_checks_its_arguments(kwargs: dict[str, Any], error: type[Exception],
                                      match: str) -> None:
    with pytest.raises(error, match=match):
        connect("127.0.0.1:8500", **kwargs)


@pytest.mark.parametrize("address", ["h", "h:0", "h:65536", "::1:80", ""])
def test_connect_refuses_a_bad_address(address: str) -> None:
    with pytest.raises(MisuseError, match="host:port"):
        connect(address)


def test_settings_of_py_consuls_own_client_carry_over_to_the_private_clients() -> None:
    # Plain http, so that no certificate file is opened here: the settings are what
    # this test checks; test_tls.py checks the handshake with them on a real agent.
    original = consul.Consul(host="agent", port=8501, scheme="http", verify="/ca.pem",
                             cert=("/c.pem", "/k.pem"), dc="dc7", token=SECRET,
                             connections_timeout=3)
    original.token = SECRET  # CONSUL_HTTP_TOKEN may be set where the tests run
    settings = settings_of(original)
    assert settings == AgentSettings("agent", 8501, scheme="http", verify="/ca.pem",
                                     cert=("/c.pem", "/k.pem"), token=SECRET, dc="dc7",
                                     timeout=3.0)

    async def private() -> AgentSettings | None:
        client, found = private_client(original)
        assert isinstance(client, AsyncHttpxConsul)
        assert found == settings
        await client.aclose()
        return settings_of(client)

    assert asyncio.run(private()) == settings


def test_settings_of_a_connect_client_follow_its_token_and_dc() -> None:
    with connect("127.0.0.1:8500", token="first", dc="dc1") as client:  # noqa: S106
        client.token = SECRET
        client.dc = "dc2"
        settings = settings_of(client)
    assert settings is not None
    assert (settings.token, settings.dc) == (SECRET, "dc2")


def test_no_repr_shows_the_token() -> None:
    with connect("127.0.0.1:8500", token=SECRET) as client:
        texts = [repr(client), repr(client.settings), str(client.settings),
                 repr(settings_of(client))]
    assert all(SECRET not in text for text in texts)
    assert "token='***'" in repr(client.settings)


def test_a_token_in_the_query_string_moves_into_the_header(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=True)

    caplog.set_level(logging.DEBUG)
    with connect("127.0.0.1:8500", transport=httpx.MockTransport(answer)) as client:
        # py-consul's catalog.register sends the token as ?token=...
        client.catalog.register("n1", "10.0.0.1", token=SECRET)
    [request] = seen
    assert request.headers["X-Consul-Token"] == SECRET
    assert "token" not in request.url.params
    assert SECRET not in caplog.text


def test_timeouts_follow_py_consuls_rule() -> None:
    seen: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json=[], headers={"X-Consul-Index": "3"})

    with connect("127.0.0.1:8500", timeout=2, transport=httpx.MockTransport(answer)) as client:
        client.health.service("web")
        client.health.service("web", index="3", wait="16000ms")
    plain, blocking = seen
    assert plain == {"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}
    assert blocking["connect"] == 2.0
    assert blocking["read"] == pytest.approx(2.0 + 16.0 + 1.0)  # wait + wait/16


def test_the_sync_client_serves_py_consul_calls_and_closes() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/agent/service/register"
        assert request.method == "PUT"
        return httpx.Response(200)

    client = connect("127.0.0.1:8500", transport=httpx.MockTransport(answer))
    assert isinstance(client, HttpxConsul)
    assert client.agent.service.register("web", service_id="web-1", port=80) is True
    assert not client.closed
    client.close()
    assert client.closed


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (200, {"X-Consul-Index": "9"}, b'[{"a": 1}]', ("9", ("decoded", b'[{"a": 1}]'))),
        (404, {"X-Consul-Index": "9"}, b"", ("9", None)),
        (200, {}, b"[]", consul.ConsulException),
        (403, {"X-Consul-Index": "9"}, b"ACL not found", consul.ACLPermissionDenied),
        (500, {"X-Consul-Index": "9"}, b"No cluster leader", consul.ConsulException),
    ],
    ids=["200", "404", "no-index", "403", "500"],
)
def test_a_decode_hook_takes_the_body_py_consul_still_judges_the_answer(
    status: int, headers: dict[str, str], body: bytes, expected: object,
) -> None:
    """The watch's `decode` (sd.consul.decode) replaces json.loads on a 200's body only:
    statuses and the index header are still py-consul's to judge."""
    decoded: list[bytes] = []

    def decode(content: bytes) -> object:
        decoded.append(content)
        return ("decoded", content)

    async def run() -> object:
        client = AgentSettings("agent", 8500, transport=httpx.MockTransport(
            lambda request: httpx.Response(status, headers=headers, content=body),
        )).async_client()
        client.http.decode = decode
        try:
            return await client.health.service("web", index="3", wait="10ms")
        finally:
            await client.aclose()

    if isinstance(expected, type):
        with pytest.raises(expected):
            asyncio.run(run())
        assert decoded == []
    else:
        assert asyncio.run(run()) == expected
        assert decoded == ([body] if status == 200 else [])


def test_a_held_read_timeout_bounds_plain_reads_only() -> None:
    seen: list[dict[str, float | None]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, headers={"X-Consul-Index": "4"}, content=b"[]")

    async def run() -> None:
        client = AgentSettings("agent", 8500, timeout=2.0,
                               transport=httpx.MockTransport(answer)).async_client()
        client.http.held_read_timeout = 0.25
        try:
            await client.health.service("web")
            await client.health.service("web", index="3", wait="16000ms")
            client.http.held_read_timeout = None
            await client.health.service("web")
        finally:
            await client.aclose()

    asyncio.run(run())
    held, blocking, plain = seen
    assert held == {"connect": 0.25, "read": 0.25, "write": 0.25, "pool": 0.25}
    assert blocking["read"] == pytest.approx(2.0 + 16.0 + 1.0)  # a blocking query is held
    assert plain["read"] == 2.0
