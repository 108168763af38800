"""sd.http: clients made on first call from settings shared per factory; argument checks.

An endpoint used to build its ``httpx.Client`` eagerly, each loading the
certificate bundle into its own TLS context, even for ``http://`` (issue 6.7).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from kitsd import sd
from kitsd.core.errors import MisuseError
from kitsd.sd.http._clients import ClientSettings
from tests.helpers import async_wait_for, wait_for
from tests.sd.test_http import LocalServer, as_json, closed_port, no_args

Build = Callable[..., Any]
BUILDERS = [sd.http.factory, sd.http.async_factory]


@pytest.fixture
def server(no_thread_leaks: None) -> Iterator[LocalServer]:
    local = LocalServer()
    yield local
    local.close()


@pytest.fixture
def certificate_loads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every ``load_verify_locations`` call (how a CA bundle gets into a TLS context)."""
    loads: list[object] = []
    original = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(args or kwargs)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    return loads


def _call_closed_port(endpoint: Any) -> None:
    """One call, which makes the endpoint's client and fails to connect."""
    with pytest.raises(httpx.ConnectError):
        endpoint(None)


# --- construction costs nothing per instance --------------------------------------------------


@pytest.mark.parametrize("build", BUILDERS)
def test_an_endpoint_makes_no_client_until_called(build: Build) -> None:
    make = build("GET", "/x", encode=no_args, decode=as_json)
    endpoints = [make(f"10.0.0.{n}:80") for n in range(1, 50)]
    assert all(endpoint.client is None for endpoint in endpoints)


def test_an_http_factory_loads_no_certificate(certificate_loads: list[object]) -> None:
    make = sd.http.factory("GET", "/x", encode=no_args, decode=as_json)
    port = closed_port()
    endpoints = [make(f"127.0.0.{n}:{port}") for n in range(1, 11)]
    try:
        for endpoint in endpoints:
            _call_closed_port(endpoint)
            assert endpoint.client is not None
    finally:
        for endpoint in endpoints:
            endpoint.close()
    assert certificate_loads == []


def test_an_https_factory_loads_the_certificates_once(certificate_loads: list[object]) -> None:
    make = sd.http.factory("GET", "/x", encode=no_args, decode=as_json, scheme="https")
    assert len(certificate_loads) == 1
    port = closed_port()
    endpoints = [make(f"127.0.0.{n}:{port}") for n in range(1, 11)]
    try:
        for endpoint in endpoints:
            _call_closed_port(endpoint)
    finally:
        for endpoint in endpoints:
            endpoint.close()
    assert len(certificate_loads) == 1


async def test_an_async_http_factory_loads_no_certificate(
    certificate_loads: list[object],
) -> None:
    make = sd.http.async_factory("GET", "/x", encode=no_args, decode=as_json)
    port = closed_port()
    endpoints = [make(f"127.0.0.{n}:{port}") for n in range(1, 6)]
    for endpoint in endpoints:
        async with endpoint:
            with pytest.raises(httpx.ConnectError):
                await endpoint(None)
    assert certificate_loads == []


class RecordingContext(ssl.SSLContext):
    """A TLS context that records its handshakes and refuses them."""

    handshakes: list[str | None]

    def wrap_socket(self, *args: Any, **kwargs: Any) -> Any:
        self.handshakes.append(kwargs.get("server_hostname"))
        raise ssl.SSLError("refused by the test")


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_a_given_verify_context_is_used_by_every_client(
    server: LocalServer, scheme: str
) -> None:
    context = RecordingContext(ssl.PROTOCOL_TLS_CLIENT)
    context.handshakes = []
    make = sd.http.factory(
        "GET", "/echo", encode=no_args, decode=as_json, scheme="https",
        client_kwargs={"verify": context},
    )
    port = server.instance.rsplit(":", 1)[1]
    for host in ("127.0.0.1", "localhost"):
        with make(f"{host}:{port}") as endpoint, pytest.raises(httpx.ConnectError):
            endpoint(None)
    assert context.handshakes == ["127.0.0.1", "localhost"]


def test_an_http_factory_does_not_follow_a_redirect_to_https_unverified() -> None:
    # An http factory builds no CA bundle; its shared context trusts no one rather
    # than no one being checked.
    settings = ClientSettings("http", {}, asynchronous=False)
    client, _ = settings.client("http://svc.local:80")
    with client:
        transport = client._transport
        assert isinstance(transport, httpx.HTTPTransport)
        context = transport._pool._ssl_context
        assert context is not None
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
        assert context.cert_store_stats()["x509_ca"] == 0


def test_a_given_transport_is_shared_and_not_closed_by_the_check() -> None:
    closed: list[bool] = []

    class Transport(httpx.MockTransport):
        def close(self) -> None:
            closed.append(True)

    transport = Transport(lambda request: httpx.Response(200, json={"url": str(request.url)}))
    make = sd.http.factory(
        "GET", "/x", encode=no_args, decode=as_json, client_kwargs={"transport": transport}
    )
    assert closed == []
    first, second = make("a.local:1"), make("b.local:2")
    assert first(None) == {"url": "http://a.local:1/x"}
    assert second(None) == {"url": "http://b.local:2/x"}
    assert first.client is not None
    assert second.client is not None
    assert first.client._transport is second.client._transport is transport


def test_the_first_calls_from_many_threads_make_one_client(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[httpx.Client] = []
    original = ClientSettings.client

    def counting(
        self: ClientSettings, base_url: str
    ) -> tuple[httpx.Client, httpx.HTTPTransport | None]:
        client, transport = original(self, base_url)
        made.append(client)
        return client, transport

    monkeypatch.setattr(ClientSettings, "client", counting)
    endpoint = sd.http.factory("GET", "/echo", encode=no_args, decode=as_json)(server.instance)
    made.clear()  # the factory's own check of client_kwargs
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def call() -> None:
        start.wait()
        try:
            endpoint(None)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(8)]
    with endpoint:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert errors == []
        assert made == [endpoint.client]
    assert made[0].is_closed


def test_close_before_any_call_makes_no_client_and_calls_then_raise() -> None:
    endpoint = sd.http.factory("GET", "/x", encode=no_args, decode=as_json)("svc.local:80")
    endpoint.close()
    with pytest.raises(RuntimeError, match="closed"):
        endpoint(None)
    assert endpoint.client is None


def test_close_racing_a_first_call_leaves_no_open_client(server: LocalServer) -> None:
    for _ in range(20):
        endpoint = sd.http.factory("GET", "/echo", encode=no_args, decode=as_json)(
            server.instance
        )
        outcome: list[object] = []

        def call(endpoint: Any = endpoint, outcome: list[object] = outcome) -> None:
            try:
                outcome.append(endpoint(None))
            except Exception as error:  # refused as closed, or cut off in flight
                outcome.append(error)

        thread = threading.Thread(target=call)
        thread.start()
        endpoint.close()
        thread.join(timeout=10)
        assert len(outcome) == 1
        client = endpoint.client
        assert client is None or client.is_closed


# --- argument checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_kwargs", "error", "match"),
    [
        ({"timout": 1.0}, TypeError, "client_kwargs.*timout"),
        ({"limits": 5}, TypeError, "client_kwargs"),
        ({"headers": 5}, TypeError, "client_kwargs"),
        ({"timeout": "soon"}, TypeError, "client_kwargs: timeout"),
        ({"timeout": True}, TypeError, "client_kwargs: timeout"),
        ({"timeout": -1}, MisuseError, "client_kwargs: timeout"),
        ({"timeout": 0}, MisuseError, "client_kwargs: timeout"),
        ({"timeout": float("nan")}, MisuseError, "client_kwargs: timeout"),
        ({"timeout": float("inf")}, MisuseError, "client_kwargs: timeout"),
        ({"timeout": httpx.Timeout(1.0, read=-2.0)}, MisuseError, "timeout read"),
        ({"verify": "/no/such/bundle.pem"}, MisuseError, "client_kwargs.*TLS"),
        ({"proxy": "nonsense"}, MisuseError, "client_kwargs"),
        ({"base_url": "http://x"}, MisuseError, "base_url"),
    ],
)
@pytest.mark.parametrize("build", BUILDERS)
@pytest.mark.filterwarnings("ignore:`verify=<str>` is deprecated:DeprecationWarning")
def test_bad_client_kwargs_are_refused_at_construction(
    build: Build, client_kwargs: dict[str, Any], error: type[Exception], match: str,
    no_thread_leaks: None,
) -> None:
    with pytest.raises(error, match=match):
        build("GET", "/x", encode=no_args, decode=as_json, client_kwargs=client_kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"method": ""}, MisuseError),
        ({"method": "GE T"}, MisuseError),
        ({"path": "echo"}, MisuseError),
        ({"scheme": "ftp"}, MisuseError),
        ({"scheme": 3}, TypeError),
        ({"method": b"GET"}, TypeError),
    ],
)
@pytest.mark.parametrize("build", BUILDERS)
def test_value_errors_are_misuse_errors_and_type_errors_are_not(
    build: Build, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    arguments: dict[str, Any] = {
        "method": "GET", "path": "/x", "encode": no_args, "decode": as_json, **kwargs
    }
    method, path = arguments.pop("method"), arguments.pop("path")
    with pytest.raises(error) as caught:
        build(method, path, **arguments)
    assert isinstance(caught.value, MisuseError) == (error is MisuseError)


@pytest.mark.parametrize("good", [None, 3, 2.5, (1, 2, 3, 4), httpx.Timeout(1.0, read=None)])
def test_good_timeouts_are_accepted(good: object) -> None:
    make = sd.http.factory("GET", "/x", encode=no_args, decode=as_json,
                           client_kwargs={"timeout": good})
    assert make("svc.local:1").client is None


def test_the_async_check_leaves_no_task_or_loop_behind() -> None:
    sd.http.async_factory("GET", "/x", encode=no_args, decode=as_json)
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


# --- closing with calls in flight --------------------------------------------------------------


def test_close_with_a_call_in_flight_returns_at_once_and_the_call_closes_the_client(
    server: LocalServer,
) -> None:
    endpoint = sd.http.factory("GET", "/slow", encode=no_args, decode=as_json)(server.instance)
    answers: list[object] = []
    thread = threading.Thread(target=lambda: answers.append(endpoint(None)))
    thread.start()
    assert server.slow_started.wait(timeout=5)
    client = endpoint.client
    assert client is not None

    endpoint.close()  # does not wait for the call
    assert thread.is_alive()
    assert not client.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        endpoint(None)  # no new call once closed

    server.release.set()
    thread.join(timeout=10)
    assert answers == [{"slow": True}]  # the call in flight ended normally
    assert client.is_closed  # and, being the last, closed the client
    wait_for(lambda: server.active == 0, timeout=3.0, what="the connection to close")


async def test_aclose_with_a_call_in_flight_leaves_closing_to_the_call(
    server: LocalServer,
) -> None:
    endpoint = sd.http.async_factory("GET", "/slow", encode=no_args, decode=as_json)(
        server.instance
    )
    call = asyncio.ensure_future(endpoint(None))
    await async_wait_for(server.slow_started.is_set, timeout=5.0, what="the slow request")
    client = endpoint.client
    assert client is not None

    await endpoint.aclose()
    assert not call.done()
    assert not client.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        await endpoint(None)

    server.release.set()
    assert await call == {"slow": True}
    assert client.is_closed
    assert endpoint.client is client  # kept, closed, for inspection
    await async_wait_for(lambda: server.active == 0, timeout=3.0, what="the connection to close")
