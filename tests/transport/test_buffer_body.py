"""buffer_body (issue 19's 0 failed GETs under SIGKILL): a small body of a request that
may be retried is read within the attempt, so an instance that dies between its
headers and its body costs an attempt, not the caller's request; larger bodies,
and requests that may not be retried, stream as with plain httpx."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from kitsd import sd
from kitsd.core.errors import MisuseError
from kitsd.transport import TransportOptions
from kitsd.transport._policy import buffered
from tests.transport.conftest import Driver, register
from tests.transport.servers import Instance


def cut_and_good(
    instances: Callable[[int], list[Instance]], registry: sd.MemoryRegistry, size: int
) -> tuple[Instance, Instance]:
    """One instance that dies after the headers of a ``size``-byte body, one that answers."""
    cut, good = instances(2)
    cut.mode = "cut"
    cut.stream_bytes = size
    register(registry, cut, good)
    return cut, good


def test_a_cut_small_body_is_retried_on_another_instance(
    driver: Callable[..., Driver], instances: Callable[[int], list[Instance]],
    registry: sd.MemoryRegistry,
) -> None:
    cut, good = cut_and_good(instances, registry, 1000)
    client = driver(registry, outlier_detection=None)  # keep sending to the cut one
    for _ in range(20):
        response = client.request("GET", "/")
        assert response.status_code == 200
        assert response.text.startswith(f"{good.port} GET /")
    assert cut.total() > 0  # the cut instance was tried, and its answers were retried


def test_without_buffering_the_caller_sees_the_cut(
    driver: Callable[..., Driver], instances: Callable[[int], list[Instance]],
    registry: sd.MemoryRegistry,
) -> None:
    """What buffer_body=0 (and plain httpx) does: the cut reaches the caller."""
    cut_and_good(instances, registry, 1000)
    client = driver(registry, outlier_detection=None, buffer_body=0)
    failures = 0
    for _ in range(20):
        try:
            client.request("GET", "/")
        except httpx.RemoteProtocolError:
            failures += 1
    assert failures > 0


def test_a_body_over_the_limit_streams_and_its_cut_reaches_the_caller(
    driver: Callable[..., Driver], instances: Callable[[int], list[Instance]],
    registry: sd.MemoryRegistry,
) -> None:
    cut_and_good(instances, registry, 2000)
    client = driver(registry, outlier_detection=None, buffer_body=1000)
    failures = 0
    for _ in range(20):
        try:
            client.request("GET", "/")
        except httpx.RemoteProtocolError:
            failures += 1
    assert failures > 0


def test_a_request_that_may_not_be_retried_is_not_buffered(
    driver: Callable[..., Driver], instances: Callable[[int], list[Instance]],
    registry: sd.MemoryRegistry,
) -> None:
    cut_and_good(instances, registry, 1000)
    client = driver(registry, outlier_detection=None)
    failures = 0
    for _ in range(20):
        try:
            client.request("POST", "/", content=b"x")
        except httpx.RemoteProtocolError:
            failures += 1
    assert failures > 0


def test_a_buffered_response_reads_as_any_other(
    driver: Callable[..., Driver], instances: Callable[[int], list[Instance]],
    registry: sd.MemoryRegistry,
) -> None:
    (one,) = instances(1)
    register(registry, one)
    client = driver(registry)
    response = client.request("GET", "/path?q=1")
    assert response.text.startswith(f"{one.port} GET /path?q=1")
    assert response.elapsed.total_seconds() >= 0  # httpx's own bookkeeping still ran
    assert response.is_closed
    assert response.request.url == "http://users/path?q=1"


@pytest.mark.parametrize(("length", "limit", "may_retry", "expected"), [
    (b"10", 10, True, True),
    ("10", 10, True, True),
    (b"11", 10, True, False),
    (b"10", 10, False, False),
    (None, 10, True, False),
    (b"0", 10, True, True),
    (b"10", 0, True, False),
    (b"-1", 10, True, False),
    (b"1e3", 10, True, False),
    (b" 5", 10, True, False),
    ("\u0665", 10, True, False),  # a non-ASCII digit
    (b"9" * 400, 10**9, True, False),
])
def test_buffered_rule(length: bytes | str | None, limit: int, may_retry: bool,
                       expected: bool) -> None:
    assert buffered(may_retry, length, limit) is expected


def test_buffer_body_is_checked() -> None:
    assert TransportOptions().buffer_body == 65536
    assert TransportOptions(buffer_body=0).buffer_body == 0
    with pytest.raises(MisuseError, match="buffer_body"):
        TransportOptions(buffer_body=-1)
    with pytest.raises(TypeError, match="buffer_body"):
        TransportOptions(buffer_body=True)
    with pytest.raises(TypeError, match="buffer_body"):
        TransportOptions(buffer_body=1.5)  # type: ignore[arg-type]
