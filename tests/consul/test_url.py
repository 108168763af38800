"""consul:// URLs (sd.consul.url), through sd.instancer_from_url."""

from __future__ import annotations

import logging
import socket
import urllib.parse

import pytest

from sd.consul import ConsulInstancer, ConsulRegistrar, HttpxConsul
from sd.consul.url import ConsulURL, parse_url
from sd.errors import MisuseError, RegistryUnavailableError
from sd.event import Event
from sd.url import instancer_from_url
from tests.consul.conftest import Agent
from tests.helpers import wait_for

pytestmark = pytest.mark.usefixtures("no_thread_leaks")


def parse(url: str) -> ConsulURL:
    return parse_url(urllib.parse.urlsplit(url))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("consul://10.0.0.1:8600/web", ConsulURL("10.0.0.1:8600", "web")),
        ("consul:///web", ConsulURL("127.0.0.1:8500", "web")),
        ("consul://agent.local/web/", ConsulURL("agent.local:8500", "web")),
        ("consul://[::1]:8500/web?tag=a&tag=b&passing=1",
         ConsulURL("[::1]:8500", "web", ("a", "b"), True)),
        ("consul://h:1/web?passing=0", ConsulURL("h:1", "web", (), False)),
        ("consul://h:1/web?passing=false&tag=x&dc=eu1",
         ConsulURL("h:1", "web", ("x",), False, "eu1")),
        ("consul://h:1/my%20svc", ConsulURL("h:1", "my svc")),
    ],
)
def test_parse(url: str, expected: ConsulURL) -> None:
    assert parse(url) == expected


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("consul://h:1/", "names one service"),
        ("consul://h:1", "names one service"),
        ("consul://h:1/a/b", "names one service"),
        ("consul://h:99999/web", "(?i)port"),
        ("consul://h:1/web?tags=a", "unknown consul:// URL parameter"),
        ("consul://h:1/web?passing=maybe", "passing"),
        ("consul://h:1/web?passing=1&passing=0", "passing"),
        ("consul://h:1/web?tag=", "empty tag"),
        ("consul://h:1/web?dc=", "dc"),
    ],
)
def test_bad_urls_raise_misuse_error(url: str, match: str) -> None:
    with pytest.raises(MisuseError, match=match):
        instancer_from_url(url)


def test_credentials_in_the_url_are_refused_without_being_echoed() -> None:
    with pytest.raises(MisuseError, match="KITSD_CONSUL_TOKEN") as excinfo:
        instancer_from_url("consul://s3cr3t-t0ken@h:1/web")
    assert "s3cr3t" not in str(excinfo.value)
    assert "consul://h:1/web" in str(excinfo.value)


@pytest.fixture
def refused_address() -> str:
    """``host:port`` where nothing listens (connections are refused at once)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"127.0.0.1:{port}"


@pytest.fixture
def clean_token_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("KITSD_CONSUL_TOKEN", raising=False)
    monkeypatch.delenv("CONSUL_HTTP_TOKEN", raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"KITSD_CONSUL_TOKEN": "tok-kitsd", "CONSUL_HTTP_TOKEN": "tok-consul"}, "tok-kitsd"),
        ({"CONSUL_HTTP_TOKEN": "tok-consul"}, "tok-consul"),
        ({}, None),
    ],
)
def test_token_comes_from_the_environment_and_is_never_shown(
    clean_token_env: pytest.MonkeyPatch, refused_address: str, env: dict[str, str],
    expected: str | None, caplog: pytest.LogCaptureFixture,
) -> None:
    for name, value in env.items():
        clean_token_env.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    with instancer_from_url(f"consul://{refused_address}/web?tag=a") as instancer:
        assert isinstance(instancer, ConsulInstancer)
        client = instancer.client
        assert isinstance(client, HttpxConsul)
        assert client.token == expected
        # Nothing listens there: the failure arrives as an event, not an exception.
        assert isinstance(instancer.state.error, RegistryUnavailableError)
        shown = [repr(instancer), repr(client), str(instancer.state.error), caplog.text]
    for value in env.values():
        assert all(value not in text for text in shown)
    assert client.closed  # the URL's instancer owned its client


@pytest.mark.integration
def test_url_instancer_sees_a_real_agent_and_closes_its_client(
    consul_agent: Agent, client: HttpxConsul, service_name: str
) -> None:
    url = f"consul://{consul_agent.http_addr}/{service_name}?tag=blue&passing=1"
    with ConsulRegistrar(client, service_name, "127.0.0.1", 18201, tags=["blue"]), \
            ConsulRegistrar(client, service_name, "127.0.0.1", 18202, tags=["green"]):
        instancer = instancer_from_url(url)
        try:
            wait_for(lambda: instancer.state == Event(("127.0.0.1:18201",)), what="blue only")
        finally:
            instancer.stop()
    assert isinstance(instancer, ConsulInstancer)
    owned = instancer.client
    assert isinstance(owned, HttpxConsul)
    assert owned.closed
    assert not client.closed


def test_parse_url_checks_the_port_itself() -> None:
    with pytest.raises(MisuseError, match="bad port in consul://h:99999/web"):
        parse("consul://h:99999/web")
