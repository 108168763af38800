"""Edges of the one-line client, each once a reported defect: the sync deadline
against a trickling server (16.4), odd ``Retry-After`` values (16.9), the
templates the README lists (16.12, 15.4: static, consuls), a port in the request
URL and a missing driver (15.4), and errors that say why there are no endpoints
(15.4: registry down vs no instances)."""

from __future__ import annotations

import importlib.util
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import kitsd
from kitsd import lb, sd
from kitsd.core.errors import MisuseError
from tests.sd.test_http_deadline import TrickleServer
from tests.transport.conftest import Driver, register
from tests.transport.servers import Instance

Make = Callable[..., Driver]
Instances = Callable[[int], list[Instance]]


@pytest.fixture
def trickle() -> Iterator[TrickleServer]:
    server = TrickleServer(headers_too=True)
    yield server
    server.close()


def test_call_deadline_bounds_a_trickling_server(
    driver: Make, trickle: TrickleServer, registry: sd.MemoryRegistry
) -> None:
    """16.4: headers trickled one byte per 0.1 s took 4.0 s against a 1 s timeout
    through the sync transport (async stopped at 1.01 s)."""
    registry.registrar("users", trickle.instance).register()
    client = driver(registry, max_attempts=1)
    start = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        client.request("GET", "/", timeout=1.0)
    assert time.monotonic() - start < 2.0


def test_a_given_inner_transport_is_left_as_it_is(registry: sd.MemoryRegistry) -> None:
    inner = httpx.HTTPTransport()
    pool_backend = inner._pool._network_backend
    with kitsd.Transport(registry, transport=inner):
        assert inner._pool._network_backend is pool_backend


@pytest.mark.parametrize("value", ["²", "١٢", "1.5", "-3", "Mon, 32 Foo 2020 99:99:99 GMT"])
def test_odd_retry_after_returns_the_response(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry, value: str
) -> None:
    """16.9: ``Retry-After: ²`` raised ValueError (past ``except httpx.HTTPError``)."""
    (one,) = instances(1)
    one.mode = "status"
    one.headers = {"Retry-After": value}
    register(registry, one)
    client = driver(registry, max_attempts=2)
    response = client.request("GET", "/", timeout=5)
    assert response.status_code == 503
    assert one.total() == 2  # retried at once: the header was ignored


def test_static_template_serves_every_service(driver: Make, instances: Instances) -> None:
    """15.4: ``static://h1:p1,h2:p2`` was refused (``must contain {service}``)."""
    first, second = instances(2)
    client = driver(f"static://{first.address},{second.address}")
    ports = {client.request("GET", f"http://{name}/").text.split(" ")[0]
             for name in ("users", "orders", "users", "orders")}
    assert ports == {str(first.port), str(second.port)}


def test_static_template_with_the_service_substituted(driver: Make,
                                                      instances: Instances) -> None:
    (one,) = instances(1)
    client = driver(f"static://{{service}}:{one.port}")
    assert client.request("GET", "http://127.0.0.1/").status_code == 200
    with pytest.raises(MisuseError):
        kitsd.Transport("static://")


def test_consuls_template_accepted() -> None:
    """16.12: ``consuls://`` templates were refused (``unknown scheme 'consuls'``)."""
    kitsd.Transport("consuls://127.0.0.1:8501/{service}").close()
    kitsd.Transport("etcds://127.0.0.1:2379/services/{service}/?ca=/tmp/ca.pem").close()
    with pytest.raises(MisuseError, match="consuls://"):
        kitsd.Transport("consul://127.0.0.1:8500/{service}?ca=/tmp/ca.pem")


def test_a_port_in_the_request_url_is_refused(
    driver: Make, instances: Instances, registry: sd.MemoryRegistry
) -> None:
    """15.4: ``http://users:9999/`` silently went to the registry's port."""
    (one,) = instances(1)
    register(registry, one)
    client = driver(registry)
    with pytest.raises(MisuseError, match="port 9999"):
        client.request("GET", "http://users:9999/")
    assert client.request("GET", "http://users:80/").status_code == 200  # the default port
    assert one.total() == 1


@pytest.mark.parametrize(("template", "library", "extra"), [
    ("etcd://127.0.0.1:2379/services/{service}/", "pyetcd", "etcd"),
    ("consul://127.0.0.1:8500/{service}", "consul", "consul"),
    ("zk://127.0.0.1:2181/services/{service}", "kazoo", "zk"),
    ("dnssrv://_{service}._tcp.example.com", "dns", "dns"),
])
def test_a_missing_driver_fails_at_construction(
    monkeypatch: pytest.MonkeyPatch, template: str, library: str, extra: str
) -> None:
    """15.4: a template whose driver is missing failed at the first request."""
    real = importlib.util.find_spec
    hidden = {library, "etcd3"}

    def find_spec(name: str, *args: Any) -> Any:
        return None if name.split(".")[0] in hidden else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MisuseError, match=rf"pip install 'kitsd\[{extra}\]'"):
        kitsd.Transport(template)
    with pytest.raises(MisuseError, match=rf"pip install 'kitsd\[{extra}\]'"):
        kitsd.AsyncTransport(template)


def test_no_instances_error_says_the_registry_answered(
    driver: Make, registry: sd.MemoryRegistry
) -> None:
    client = driver(registry)
    with pytest.raises(lb.NoEndpointsError) as caught:
        client.request("GET", "http://users/")
    first_line = str(caught.value).splitlines()[0]
    assert first_line == ("no endpoints available for service 'users': the registry "
                          "answered: no instances of 'users'")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("scheme", ["etcd", "consul", "zk", "dnssrv"])
def test_registry_down_error_names_the_registry_and_its_error(driver: Make, scheme: str) -> None:
    """15.4: a registry on a closed port looked exactly like an unknown service."""
    port = _closed_port()
    template = {
        "etcd": f"etcd://u:S3CRET@127.0.0.1:{port}/services/{{service}}/?timeout=0.5",
        "consul": f"consul://127.0.0.1:{port}/{{service}}",
        "zk": f"zk://127.0.0.1:{port}/services/{{service}}?timeout=1",
        "dnssrv": f"dnssrv://_{{service}}._tcp.example.com?server=127.0.0.1:{port}&timeout=0.3",
    }[scheme]
    client = driver(template)
    start = time.monotonic()
    with pytest.raises((lb.NoEndpointsError, httpx.TimeoutException)) as caught:
        client.request("GET", "http://users/", timeout=3)
    elapsed = time.monotonic() - start
    first_line = str(caught.value).splitlines()[0]
    assert "no endpoints available for service 'users'" in first_line
    assert "the registry answered" not in first_line
    assert f"127.0.0.1:{port}" in first_line
    assert "S3CRET" not in str(caught.value)
    assert elapsed < 3.5
