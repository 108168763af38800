"""The parts of py-consul kitsd relies on (verified with py-consul 1.8.0): fail loudly if they move.

kitsd plugs its httpx client into py-consul's documented seam (the
``HTTPClient`` that ``Consul.http_connect`` returns, as ``consul.aio`` does)
and lets py-consul build requests and judge answers.  These tests pin exactly
what that relies on, so a py-consul release that changes it fails here, by
name, rather than somewhere in a watch.
"""

from __future__ import annotations

import inspect

import consul
import consul.base
import consul.callback
import consul.std
import pytest

from kitsd.sd.consul.client import map_error


def test_the_http_client_seam() -> None:
    assert inspect.isabstract(consul.base.HTTPClient)
    for verb in ("get", "put", "delete", "post", "close"):
        assert verb in consul.base.HTTPClient.__abstractmethods__
    assert list(inspect.signature(consul.base.Consul.http_connect).parameters) == [
        "self", "host", "port", "scheme", "verify", "cert"]
    assert consul.base.Response._fields == ("code", "headers", "body")
    client = consul.std.HTTPClient("h", 1, "http", True, None)
    assert client.uri("/v1/x", [("a", "1")]) == "http://h:1/v1/x?a=1"


def test_the_blocking_query_timeout_rule() -> None:
    assert consul.std.parse_duration("16000ms") == 16.0
    assert consul.std.DEFAULT_WAIT == 300


def test_health_service_builds_the_query_through_the_plug_in() -> None:
    seen: list[tuple[str, list[tuple[str, str]], dict[str, str]]] = []

    class Recording(consul.base.HTTPClient):  # type: ignore[misc]  # py-consul is untyped
        def get(self, callback, path, params=None, headers=None, raw=False):  # type: ignore[no-untyped-def]
            seen.append((path, params, headers))
            return callback(consul.base.Response(200, {"X-Consul-Index": "7"}, "[]"))

        put = delete = post = close = get

    class Client(consul.base.Consul):  # type: ignore[misc]
        def http_connect(self, host, port, scheme, verify=True, cert=None):  # type: ignore[no-untyped-def]
            return Recording(host, port, scheme, verify, cert)

    client = Client(host="h", port=1, token="tok", dc="dc2")  # noqa: S106 - a test value
    client.token = "tok"  # noqa: S105 - CONSUL_HTTP_TOKEN may be set where tests run
    assert client.health.service("web", index="5", wait="10ms", passing=True, tag="a") == (
        "7", [])
    assert seen == [("/v1/health/service/web",
                     [("index", "5"), ("wait", "10ms"), ("passing", "1"), ("tag", "a"),
                      ("dc", "dc2")],
                     {"X-Consul-Token": "tok"})]


@pytest.mark.parametrize(
    ("code", "body", "headers", "error", "text"),
    [
        (403, "ACL not found", {}, consul.ACLPermissionDenied, "ACL not found"),
        (401, "no", {}, consul.ACLDisabled, "no"),
        (500, "No cluster leader", {}, consul.ConsulException, "500 No cluster leader"),
        (200, "[", {"X-Consul-Index": "1"}, consul.ConsulException, "Failed to decode JSON"),
        (200, "[]", {}, consul.ConsulException, "Missing index header"),
    ],
)
def test_how_py_consul_judges_answers(code: int, body: str, headers: dict[str, str],
                                      error: type[Exception], text: str) -> None:
    judge = consul.callback.CB.json(index=True)
    with pytest.raises(error) as raised:
        judge(consul.base.Response(code, headers, body))
    assert str(raised.value).startswith(text)
    # map_error reads these messages (the missing header has its own wording).
    mapped = str(map_error(raised.value, doing="x", agent="y"))
    assert ("X-Consul-Index" in mapped) is (text == "Missing index header")
