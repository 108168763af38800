"""sd.http: sync HTTP endpoints against a real local server, and MockTransport for odd answers.

:class:`LocalServer` is shared with ``test_http_async.py``.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from kitsd import sd
from kitsd.core.deadline import reset_deadline, set_deadline
from kitsd.core.endpoint import is_async
from kitsd.core.errors import ConnectionFailure, InvalidInstanceError, KitsdError
from kitsd.sd.endpointer import Endpointer
from kitsd.sd.http import HTTPEndpoint, StatusError
from kitsd.sd.instancer import FixedInstancer
from tests.helpers import wait_for

# The slow route gives up on its own after this long, so a broken test cannot hang.
SLOW_MAX = 5.0


@dataclass
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    client_port: int


@dataclass
class LocalServer:
    """A tiny threaded HTTP/1.1 server on 127.0.0.1 with a few routes.

    * ``/echo`` answers 200 with JSON describing the request (and the client's port);
    * ``/status/N`` answers status N with ``{"status": N}``;
    * ``/slow`` waits until ``release`` is set (or ``SLOW_MAX``), answering 200,
      unless the client hangs up first, which sets ``hung_up``.

    It counts connections and live handler threads (one per connection).
    """

    release: threading.Event = field(default_factory=threading.Event)
    slow_started: threading.Event = field(default_factory=threading.Event)
    hung_up: threading.Event = field(default_factory=threading.Event)
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.httpd = _Server(("127.0.0.1", 0), _handler_for(self))
        self.thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.02},  # shutdown() waits up to one poll
            name="test-http-server",
            daemon=True,
        )
        self.thread.start()

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    request_queue_size = 64  # the default 5 makes concurrent connects wait for a SYN retry
    daemon_threads = True  # not joined by server_close; the thread-leak check waits instead


def _handler_for(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive
        timeout = 10  # a stray kept-alive connection cannot hold a thread for ever

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in two writes; without this, Nagle and delayed
            # ACKs add ~40 ms to every answer.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with server.lock:
                server.connections += 1
                server.active += 1

        def finish(self) -> None:
            try:
                super().finish()
            finally:
                with server.lock:
                    server.active -= 1

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, payload: object) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _client_gone(self) -> bool:
            readable, _, _ = select.select([self.connection], [], [], 0.02)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""

        def _handle(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length) if length else b""
            seen = Seen(
                method=self.command,
                path=url.path,
                query=parse_qs(url.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                client_port=self.client_address[1],
            )
            with server.lock:
                server.seen.append(seen)
            if url.path == "/echo":
                self._answer(200, {
                    "method": seen.method,
                    "query": seen.query,
                    "headers": seen.headers,
                    "body": body.decode(),
                    "client_port": seen.client_port,
                })
            elif url.path.startswith("/status/"):
                status = int(url.path.rsplit("/", 1)[1])
                self._answer(status, {"status": status})
            elif url.path == "/slow":
                server.slow_started.set()
                give_up = time.monotonic() + SLOW_MAX
                while not server.release.is_set() and time.monotonic() < give_up:
                    if self._client_gone():
                        server.hung_up.set()
                        self.close_connection = True
                        return
                self._answer(200, {"slow": True})
            else:
                self._answer(404, {"error": "no such route"})

        do_GET = do_POST = do_PUT = do_DELETE = _handle

    return Handler


@pytest.fixture
def server(no_thread_leaks: None) -> Iterator[LocalServer]:
    """A running :class:`LocalServer`; after the test, no thread may be left (client or server)."""
    local = LocalServer()
    yield local
    local.close()


def no_args(_request: object) -> dict[str, Any]:
    return {}


def as_json(response: httpx.Response) -> Any:
    return response.json()


@pytest.fixture
def make(server: LocalServer) -> Iterator[Callable[..., HTTPEndpoint[Any, Any]]]:
    """Build endpoints on ``server`` (GET /echo by default); all are closed after the test."""
    made: list[HTTPEndpoint[Any, Any]] = []

    def build(
        method: str = "GET", path: str = "/echo", instance: str | None = None, **kwargs: Any
    ) -> HTTPEndpoint[Any, Any]:
        kwargs.setdefault("encode", no_args)
        kwargs.setdefault("decode", as_json)
        endpoint = sd.http.factory(method, path, **kwargs)(instance or server.instance)
        made.append(endpoint)
        return endpoint

    yield build
    for endpoint in made:
        endpoint.close()


@contextmanager
def deadline_in(seconds: float) -> Iterator[None]:
    """Run the block as if inside a retry attempt with ``seconds`` left."""
    token = set_deadline(time.monotonic() + seconds)
    try:
        yield
    finally:
        reset_deadline(token)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def mock_endpoint(
    handler: Callable[[httpx.Request], httpx.Response],
    *,
    decode: Callable[[httpx.Response], Any] = as_json,
    **kwargs: Any,
) -> HTTPEndpoint[Any, Any]:
    client_kwargs = {"transport": httpx.MockTransport(handler), **kwargs.pop("client_kwargs", {})}
    return HTTPEndpoint(
        "svc.local:8080", "GET", "/x", encode=no_args, decode=decode,
        client_kwargs=client_kwargs, **kwargs,
    )


# --- requests and responses ------------------------------------------------------------------


def test_encoded_arguments_reach_the_server(make: Callable[..., HTTPEndpoint[Any, Any]]) -> None:
    def encode(request: dict[str, Any]) -> dict[str, Any]:
        return {
            "json": request,
            "params": {"q": "kit", "n": 2},
            "headers": {"X-Trace": "abc"},
        }

    endpoint = make("post", encode=encode)
    answer = endpoint({"hello": ["world", 1]})

    assert answer["method"] == "POST"
    assert json.loads(answer["body"]) == {"hello": ["world", 1]}
    assert answer["query"] == {"q": ["kit"], "n": ["2"]}
    assert answer["headers"]["x-trace"] == "abc"
    assert answer["headers"]["content-type"] == "application/json"


def test_content_argument_is_sent_raw(make: Callable[..., HTTPEndpoint[Any, Any]]) -> None:
    endpoint = make("PUT", encode=lambda text: {"content": text.encode()})
    assert endpoint("raw bytes")["body"] == "raw bytes"


def test_decode_result_is_returned(
    make: Callable[..., HTTPEndpoint[Any, Any]], server: LocalServer
) -> None:
    decoded: list[httpx.Response] = []

    def decode(response: httpx.Response) -> tuple[int, str]:
        decoded.append(response)
        return response.status_code, response.json()["method"]

    assert make(decode=decode)(None) == (200, "GET")
    assert len(decoded) == 1
    assert decoded[0].is_closed  # the body was read in full before decode ran
    assert len(server.seen) == 1


def test_client_kwargs_reach_the_client(make: Callable[..., HTTPEndpoint[Any, Any]]) -> None:
    endpoint = make(client_kwargs={"headers": {"Authorization": "Bearer s3cret"}, "timeout": 7.5})
    assert endpoint(None)["headers"]["authorization"] == "Bearer s3cret"
    assert endpoint.client is not None
    assert endpoint.client.timeout == httpx.Timeout(7.5)


def test_keep_alive_reuses_one_connection(
    make: Callable[..., HTTPEndpoint[Any, Any]], server: LocalServer
) -> None:
    endpoint = make()
    first, second, third = endpoint(None), endpoint(None), endpoint(None)
    assert first["client_port"] == second["client_port"] == third["client_port"]
    assert server.connections == 1


def test_each_instance_has_its_own_client(
    make: Callable[..., HTTPEndpoint[Any, Any]], server: LocalServer
) -> None:
    by_ip = make()
    by_name = make(instance=server.instance.replace("127.0.0.1", "localhost"))
    by_ip(None)
    by_name(None)
    assert by_ip.client is not None
    assert by_name.client is not None
    assert by_ip.client is not by_name.client
    assert server.connections == 2


def test_concurrent_calls_from_threads(make: Callable[..., HTTPEndpoint[Any, Any]]) -> None:
    endpoint = make(encode=lambda n: {"params": {"n": n}})
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def call(n: int) -> None:
        try:
            results[n] = endpoint(n)["query"]["n"]
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    assert results == {n: [str(n)] for n in range(8)}


# --- statuses ----------------------------------------------------------------------------------


def test_non_2xx_raises_status_error(
    make: Callable[..., HTTPEndpoint[Any, Any]], server: LocalServer
) -> None:
    decode_calls: list[httpx.Response] = []
    endpoint = make(path="/status/503", decode=decode_calls.append)

    with pytest.raises(StatusError) as caught:
        endpoint(None)

    error = caught.value
    assert isinstance(error, KitsdError)
    assert error.status_code == 503
    assert error.instance == server.instance
    assert error.response.json() == {"status": 503}
    assert str(error) == f"HTTP 503 from {server.instance} (GET /status/503)"
    assert decode_calls == []
    assert not isinstance(error, ConnectionFailure)


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_every_2xx_goes_to_decode(
    make: Callable[..., HTTPEndpoint[Any, Any]], status: int
) -> None:
    endpoint = make(path=f"/status/{status}", decode=lambda response: response.status_code)
    assert endpoint(None) == status


@pytest.mark.parametrize("accept_status", [{404}, range(400, 500), lambda status: status == 404])
def test_accept_status_lets_a_status_through_to_decode(
    make: Callable[..., HTTPEndpoint[Any, Any]], accept_status: Any
) -> None:
    endpoint = make(
        path="/status/404",
        accept_status=accept_status,
        decode=lambda response: ("missing", response.status_code),
    )
    assert endpoint(None) == ("missing", 404)


def test_accept_status_does_not_accept_others(
    make: Callable[..., HTTPEndpoint[Any, Any]],
) -> None:
    endpoint = make(path="/status/500", accept_status={404})
    with pytest.raises(StatusError) as caught:
        endpoint(None)
    assert caught.value.status_code == 500


def test_decode_errors_propagate(make: Callable[..., HTTPEndpoint[Any, Any]]) -> None:
    class Refused(Exception):
        pass

    def decode(response: httpx.Response) -> None:
        raise Refused(response.status_code)

    endpoint = make(path="/status/404", accept_status={404}, decode=decode)
    with pytest.raises(Refused) as caught:
        endpoint(None)
    assert caught.value.args == (404,)


# --- odd answers (MockTransport) ---------------------------------------------------------------


def test_redirect_is_not_followed_by_default_and_raises() -> None:
    def redirect(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "/elsewhere"})

    with mock_endpoint(redirect) as endpoint, pytest.raises(StatusError) as caught:
        endpoint(None)
    assert caught.value.status_code == 302
    assert str(caught.value) == "HTTP 302 from svc.local:8080 (GET /x)"


def test_undecodable_body_raises_from_decode() -> None:
    def garbage(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"not json")

    with mock_endpoint(garbage) as endpoint, pytest.raises(json.JSONDecodeError):
        endpoint(None)


def test_informational_status_is_refused() -> None:
    def odd(request: httpx.Request) -> httpx.Response:
        return httpx.Response(199, content=b"{}")

    with mock_endpoint(odd) as endpoint, pytest.raises(StatusError) as caught:
        endpoint(None)
    assert caught.value.status_code == 199


def test_https_scheme_is_used() -> None:
    urls: list[httpx.URL] = []

    def record(request: httpx.Request) -> httpx.Response:
        urls.append(request.url)
        return httpx.Response(200, json={})

    with mock_endpoint(record, scheme="https") as endpoint:
        assert endpoint.base_url == "https://svc.local:8080"
        endpoint(None)
    assert [str(url) for url in urls] == ["https://svc.local:8080/x"]


def test_encode_must_return_a_mapping() -> None:
    def encode(request: object) -> Any:
        return [("json", request)]

    endpoint: HTTPEndpoint[object, Any] = HTTPEndpoint(
        "svc.local:1", "GET", "/x", encode=encode, decode=as_json
    )
    with endpoint, pytest.raises(TypeError, match="mapping"):
        endpoint(None)


@pytest.mark.parametrize("key", ["method", "url"])
def test_encode_may_not_set_method_or_url(key: str) -> None:
    endpoint: HTTPEndpoint[object, Any] = HTTPEndpoint(
        "svc.local:1", "GET", "/x", encode=lambda r: {key: "x"}, decode=as_json
    )
    with endpoint, pytest.raises(TypeError, match=key):
        endpoint(None)


# --- connection failures -----------------------------------------------------------------------


def test_connect_error_on_a_closed_port_is_a_connection_failure(no_thread_leaks: None) -> None:
    instance = f"127.0.0.1:{closed_port()}"
    endpoint = sd.http.factory("GET", "/echo", encode=no_args, decode=as_json)(instance)
    with endpoint, pytest.raises(httpx.ConnectError) as caught:
        endpoint(None)
    assert isinstance(caught.value, ConnectionFailure)


def test_which_httpx_errors_are_connection_failures() -> None:
    # sd.http's own subclasses carry the marker; httpx's classes stay untouched, so
    # importing sd.http changes nothing for the rest of the process.
    assert issubclass(sd.http.ConnectError, httpx.ConnectError)
    assert issubclass(sd.http.ConnectError, ConnectionFailure)
    assert issubclass(sd.http.ConnectTimeout, httpx.ConnectTimeout)
    assert issubclass(sd.http.ConnectTimeout, ConnectionFailure)
    assert not issubclass(httpx.ConnectError, ConnectionFailure)
    # The server may have seen (even processed) the request: not a connection failure.
    for error in (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout,
                  httpx.RemoteProtocolError, httpx.ReadError):
        assert not issubclass(error, ConnectionFailure), error


def test_a_connect_error_keeps_httpx_message_request_and_cause() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        try:
            raise OSError("connection refused")
        except OSError as cause:
            raise httpx.ConnectError("refused", request=request) from cause

    with mock_endpoint(refuse) as endpoint, pytest.raises(httpx.ConnectError) as caught:
        endpoint(None)
    assert type(caught.value) is sd.http.ConnectError
    assert str(caught.value) == "refused"
    assert caught.value.request.url.host == "svc.local"
    assert isinstance(caught.value.__cause__, OSError)


def test_connect_timeout_is_a_connection_failure_outside_a_retry() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    with mock_endpoint(hang) as endpoint, pytest.raises(httpx.ConnectTimeout) as caught:
        endpoint(None)
    assert isinstance(caught.value, ConnectionFailure)


def test_connect_timeout_caused_by_the_deadline_is_not_a_connection_failure() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    endpoint = mock_endpoint(hang, client_kwargs={"timeout": 5.0})
    with endpoint, deadline_in(1.0), pytest.raises(TimeoutError) as caught:
        endpoint(None)
    assert not isinstance(caught.value, ConnectionFailure)
    assert isinstance(caught.value.__cause__, httpx.ConnectTimeout)
    assert "svc.local:8080" in str(caught.value)


def test_connect_timeout_within_the_deadline_stays_a_connection_failure() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    endpoint = mock_endpoint(hang, client_kwargs={"timeout": httpx.Timeout(5.0, connect=0.5)})
    with endpoint, deadline_in(30.0), pytest.raises(httpx.ConnectTimeout) as caught:
        endpoint(None)
    assert isinstance(caught.value, ConnectionFailure)


# --- deadlines ---------------------------------------------------------------------------------


def test_deadline_caps_every_timeout_phase() -> None:
    timeouts: list[dict[str, float | None]] = []

    def record(request: httpx.Request) -> httpx.Response:
        timeouts.append(dict(request.extensions["timeout"]))
        return httpx.Response(200, json={})

    configured = httpx.Timeout(10.0, connect=0.5, pool=None)
    with mock_endpoint(record, client_kwargs={"timeout": configured}) as endpoint:
        endpoint(None)
        with deadline_in(2.0):
            endpoint(None)

    outside, inside = timeouts
    assert outside == {"connect": 0.5, "read": 10.0, "write": 10.0, "pool": None}
    assert inside["connect"] == 0.5
    for phase in ("read", "write", "pool"):
        value = inside[phase]
        assert value is not None
        assert 1.0 < value <= 2.0, (phase, value)


def test_deadline_caps_a_timeout_given_by_encode() -> None:
    timeouts: list[dict[str, float | None]] = []

    def record(request: httpx.Request) -> httpx.Response:
        timeouts.append(dict(request.extensions["timeout"]))
        return httpx.Response(200, json={})

    endpoint: HTTPEndpoint[object, Any] = HTTPEndpoint(
        "svc.local:1", "GET", "/x",
        encode=lambda r: {"timeout": httpx.Timeout(0.25, read=None)},
        decode=as_json,
        client_kwargs={"transport": httpx.MockTransport(record)},
    )
    with endpoint, deadline_in(3.0):
        endpoint(None)
    (inside,) = timeouts
    assert inside["connect"] == inside["write"] == inside["pool"] == 0.25
    read = inside["read"]
    assert read is not None
    assert 2.0 < read <= 3.0


def test_slow_request_times_out_at_the_deadline_and_hangs_up(
    make: Callable[..., HTTPEndpoint[Any, Any]], server: LocalServer
) -> None:
    endpoint = make(path="/slow")  # the client's own timeout stays httpx's 5 s
    started = time.monotonic()
    with deadline_in(0.2), pytest.raises(TimeoutError) as caught:
        endpoint(None)
    elapsed = time.monotonic() - started

    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert not isinstance(caught.value, ConnectionFailure)

    assert server.slow_started.is_set()
    assert elapsed < 0.2 + 1.0 < SLOW_MAX
    # The timed-out request is not left running: the client closed its connection,
    # and the server's handler saw it go (it was never released).
    wait_for(server.hung_up.is_set, timeout=3.0, what="the server to see the client hang up")
    assert not server.release.is_set()
    # The endpoint still works afterwards, on a fresh connection.
    assert make()(None)["method"] == "GET"


def test_no_time_left_raises_without_sending(
    make: Callable[..., HTTPEndpoint[Any, Any]], server: LocalServer
) -> None:
    encoded: list[object] = []

    def encode(request: object) -> dict[str, Any]:
        encoded.append(request)
        return {}

    endpoint = make(encode=encode)
    token = set_deadline(time.monotonic() - 1.0)
    try:
        with pytest.raises(TimeoutError) as caught:
            endpoint("never sent")
    finally:
        reset_deadline(token)

    assert not isinstance(caught.value, ConnectionFailure)
    assert server.instance in str(caught.value)
    assert encoded == []
    assert server.seen == []
    assert server.connections == 0


# --- lifecycle ---------------------------------------------------------------------------------


def test_close_closes_the_client_and_its_connections(
    make: Callable[..., HTTPEndpoint[Any, Any]], server: LocalServer
) -> None:
    endpoint = make()
    endpoint(None)
    client = endpoint.client
    assert client is not None
    assert server.active == 1  # the kept-alive connection holds a handler thread

    endpoint.close()
    endpoint.close()  # idempotent

    assert client.is_closed
    wait_for(lambda: server.active == 0, timeout=3.0, what="the server to see the connection close")
    with pytest.raises(RuntimeError, match="closed"):
        endpoint(None)
    assert endpoint.client is client  # a closed endpoint does not make a new client


def test_nothing_is_left_running_after_close(server: LocalServer) -> None:
    before = set(threading.enumerate())
    endpoint = sd.http.factory("GET", "/echo", encode=no_args, decode=as_json)(server.instance)
    with endpoint:
        for _ in range(3):
            endpoint(None)
        client = endpoint.client
    assert client is not None
    assert client.is_closed
    # Closing the client hung up its kept-alive connection, so the server's handler
    # thread for it ends; the client itself never started a thread.
    wait_for(
        lambda: not [t for t in threading.enumerate() if t not in before and t.is_alive()],
        timeout=3.0,
        what="the server's handler threads to end",
    )
    assert server.active == 0


def test_endpointer_closes_http_endpoints(server: LocalServer) -> None:
    make_endpoint = sd.http.factory("GET", "/echo", encode=no_args, decode=as_json)
    with Endpointer(FixedInstancer([server.instance]), make_endpoint) as endpointer:
        (endpoint,) = endpointer.endpoints()
        assert not is_async(endpoint)
        assert endpoint(None)["method"] == "GET"
        assert isinstance(endpoint, HTTPEndpoint)
        client = endpoint.client
    assert client is not None
    assert client.is_closed
    wait_for(lambda: server.active == 0, timeout=3.0, what="the connection to close")


def test_repr_names_the_instance_and_never_headers() -> None:
    endpoint = sd.http.factory(
        "get", "/users", encode=no_args, decode=as_json,
        client_kwargs={"headers": {"Authorization": "Bearer s3cret"}},
    )("Example.COM:8080")
    with endpoint:
        text = repr(endpoint)
    assert "example.com:8080" in text
    assert "GET" in text
    assert "s3cret" not in text
    assert "Authorization" not in text


def test_instance_is_normalised() -> None:
    with sd.http.factory("GET", "/x", encode=no_args, decode=as_json)("[0:0::1]:80") as endpoint:
        assert endpoint.instance == "[::1]:80"
        assert endpoint.base_url == "http://[::1]:80"


# --- argument checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": ""}, ValueError, "method"),
        ({"method": "  "}, ValueError, "method"),
        ({"method": "GE T"}, ValueError, "method"),
        ({"method": 3}, TypeError, "method"),
        ({"path": "echo"}, ValueError, "path"),
        ({"path": ""}, ValueError, "path"),
        ({"path": "//evil.example/x"}, ValueError, "path"),
        ({"path": None}, TypeError, "path"),
        ({"encode": "json"}, TypeError, "encode"),
        ({"decode": None}, TypeError, "decode"),
        ({"scheme": "ftp"}, ValueError, "scheme"),
        ({"client_kwargs": {"base_url": "http://x"}}, ValueError, "base_url"),
        ({"client_kwargs": [("timeout", 1)]}, TypeError, "client_kwargs"),
        ({"accept_status": 404}, TypeError, "accept_status"),
        ({"accept_status": "404"}, TypeError, "accept_status"),
    ],
)
@pytest.mark.parametrize("build", [sd.http.factory, sd.http.async_factory])
def test_bad_arguments_are_refused_at_once(
    build: Callable[..., Any], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    arguments: dict[str, Any] = {
        "method": "GET", "path": "/x", "encode": no_args, "decode": as_json, **kwargs
    }
    method, path = arguments.pop("method"), arguments.pop("path")
    with pytest.raises(error, match=match):
        build(method, path, **arguments)


@pytest.mark.parametrize("instance", ["", "no-port", "host:0", "::1:80", "a b:80"])
@pytest.mark.parametrize("build", [sd.http.factory, sd.http.async_factory])
def test_bad_instance_is_refused(build: Callable[..., Any], instance: str) -> None:
    make_endpoint = build("GET", "/x", encode=no_args, decode=as_json)
    with pytest.raises(InvalidInstanceError):
        make_endpoint(instance)


def test_method_is_upper_cased() -> None:
    methods: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        methods.append(request.method)
        return httpx.Response(200, json={})

    make_endpoint = sd.http.factory(
        " patch ", "/x", encode=no_args, decode=as_json,
        client_kwargs={"transport": httpx.MockTransport(record)},
    )
    endpoint = make_endpoint("svc.local:1")
    with endpoint:
        endpoint(None)
    assert methods == ["PATCH"]


def test_public_surface() -> None:
    assert set(sd.http.__all__) == {
        "AsyncHTTPEndpoint", "ConnectError", "ConnectTimeout", "HTTPEndpoint", "StatusError",
        "async_factory", "factory",
    }
    for name in sd.http.__all__:
        assert getattr(sd.http, name).__doc__
