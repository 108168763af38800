"""consul:// URLs (sd.consul.url), through sd.instancer_from_url."""

from __future__ import annotations

import logging
import socket
import urllib.parse

import pytest

from kitsd.core.errors import MisuseError, RegistryUnavailableError
from kitsd.sd.consul import ConsulInstancer, ConsulRegistrar, HttpxConsul
from kitsd.sd.consul.url import ConsulURL, parse_url
from kitsd.sd.consul.url import instancer_from_url as consul_from_url
from kitsd.sd.event import Event
from kitsd.sd.instance_info import InstanceInfo
from kitsd.sd.instancer import InstancerHandle
from kitsd.sd.url import instancer_from_url
from tests.consul.conftest import Agent
from tests.helpers import wait_for

pytestmark = pytest.mark.usefixtures("no_thread_leaks")


def parse(url: str) -> ConsulURL:
    return parse_url(urllib.parse.urlsplit(url))


def from_url(url: str) -> InstancerHandle:
    """``sd.instancer_from_url``; ``consuls://`` straight to the Consul driver, until
    ``sd.url`` dispatches that scheme to it."""
    if url.startswith("consuls://"):
        return consul_from_url(urllib.parse.urlsplit(url))
    return instancer_from_url(url)


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
        ("consuls://h/web", ConsulURL("h:8501", "web", scheme="https")),
        ("consuls://h:9/web?ca=/ca.pem&cert=/c.pem&key=/k.pem&tag=a",
         ConsulURL("h:9", "web", ("a",), scheme="https", ca="/ca.pem", cert="/c.pem",
                   key="/k.pem")),
        ("consuls://h:9/web?cert=/both.pem", ConsulURL("h:9", "web", scheme="https",
                                                       cert="/both.pem")),
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
        ("consul://h:0/web", "bad port in consul://h:0/web"),
        ("consul://[::1]:0/web", "bad port"),
        ("consul://h:1/web?ca=/ca.pem", "use consuls://"),
        ("consuls://h:1/web?key=/k.pem", "key needs cert"),
        ("consuls://h:1/web?ca=/a&ca=/b", "ca must be given at most once"),
        ("consuls://h:1/web?ca=/nonexistent/ca.pem", "cannot load the TLS files"),
        ("consul://h:1/web#frag", "fragment"),
    ],
)
def test_bad_urls_raise_misuse_error(url: str, match: str) -> None:
    with pytest.raises(MisuseError, match=match):
        from_url(url)


def test_credentials_in_the_url_are_refused_without_being_echoed() -> None:
    with pytest.raises(MisuseError, match="KITSD_CONSUL_TOKEN") as excinfo:
        instancer_from_url("consul://s3cr3t-t0ken@h:1/web")
    assert "s3cr3t" not in str(excinfo.value)
    assert "consul://***@h:1/web" in str(excinfo.value)


@pytest.mark.parametrize(
    "url",
    [
        "consul://h:1/web?token=s3cr3t-t0ken",
        "consul://h:1/web?tag=a&token=s3cr3t-t0ken&passing=1",
        "consul://h:1/web?password=s3cr3t-t0ken",
        "consul://h:1/web?acl_token=s3cr3t-t0ken",
        "consul://h:1/web?s3cr3t-t0ken",
        "consul://h:1/web?s3cr3t-t0ken=1",
        "consul://admin:s3cr3t-t0ken@h:1/web",
        "consul://s3cr3t-t0ken@h:1/web?token=s3cr3t-t0ken",
        "consul://h:1/web#s3cr3t-t0ken",
        "consul://h:1/web?tag=a#token=s3cr3t-t0ken",
        "consul://h:s3cr3t-t0ken/web",
        "consuls://h:1/web?ca=/ca.pem&token=s3cr3t-t0ken",
        "consul://h:1/web?passing=s3cr3t-t0ken&token=s3cr3t-t0ken",
    ],
)
def test_no_url_shape_echoes_a_secret(url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(MisuseError) as excinfo:
        parse(url)
    message = f"{excinfo.value} {excinfo.value!r}"
    assert "s3cr3t" not in message
    assert "s3cr3t" not in caplog.text


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
            wait_for(lambda: instancer.state == Event(
                ("127.0.0.1:18201",), info={"127.0.0.1:18201": InstanceInfo(tags=("blue",))}),
                what="blue only")
        finally:
            instancer.stop()
    assert isinstance(instancer, ConsulInstancer)
    owned = instancer.client
    assert isinstance(owned, HttpxConsul)
    assert owned.closed
    assert not client.closed


@pytest.mark.parametrize("url", ["consul://h:99999/web", "consul://h:0/web"])
def test_parse_url_checks_the_port_itself(url: str) -> None:
    with pytest.raises(MisuseError, match=f"bad port in {url}"):
        parse(url)
