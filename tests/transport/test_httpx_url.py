"""The httpx internal kitsd.transport._httpx_url leans on: fails loudly when httpx changes."""

from __future__ import annotations

import httpx
import pytest

from kitsd.transport import _httpx_url


def test_fast_path_in_use() -> None:
    """If this fails, httpx changed URL._uri_reference: the transport still works
    (copy_with) but pays a URL parse per attempt; update _httpx_url."""
    assert _httpx_url.rehost is _httpx_url._fast


@pytest.mark.parametrize("url", ["http://users/a/b?x=1&y=%20z", "https://users/",
                                 "http://user:pw@users:8080/p#frag", "http://users"])
@pytest.mark.parametrize(("host", "port"), [("10.0.0.7", 8080), ("::1", 80), ("::1", 443),
                                            ("Example.ORG", 443), ("a.b", 80)])
def test_same_url_as_copy_with(url: str, host: str, port: int) -> None:
    original = httpx.URL(url)
    fast = _httpx_url._fast(original, _httpx_url.encoded_host(host), port)
    slow = original.copy_with(host=host, port=port)
    assert fast == slow
    assert str(fast) == str(slow)
    assert (fast.raw_host, fast.port, fast.raw_path) == (slow.raw_host, slow.port, slow.raw_path)


def test_attempt_request_fast_path_in_use() -> None:
    """If this fails, httpx.Request's constructor sets other attributes now: the
    transport still works (the constructor) but pays its checks and copies."""
    assert _httpx_url.attempt_request is _httpx_url._built
    assert _httpx_url.content_length is _httpx_url._length_fast


def test_attempt_request_same_as_constructed() -> None:
    url = httpx.URL("http://10.0.0.7:8080/a?b=1")
    headers = httpx.Headers({"Host": "users", "X-A": "b"})
    stream = httpx.ByteStream(b"body")
    extensions = {"timeout": {"connect": 1.0, "read": 1.0, "write": 1.0, "pool": 1.0}}
    built = _httpx_url._built("POST", url, headers, stream, extensions)
    made = httpx.Request("POST", url, headers=headers, stream=stream, extensions=extensions)
    assert vars(built).keys() == vars(made).keys()
    assert (built.method, built.url, built.headers, built.stream, built.extensions) == (
        made.method, made.url, made.headers, made.stream, made.extensions)
    assert built.read() == b"body"


@pytest.mark.parametrize("headers", [{"Content-Length": "12"}, {"content-length": "0"},
                                     {"X-Other": "1"}, {}, {"CONTENT-LENGTH": "7", "A": "b"}])
def test_content_length_same_as_get(headers: dict[str, str]) -> None:
    parsed = httpx.Headers(headers)
    fast = _httpx_url._length_fast(parsed)
    slow = parsed.get("content-length")
    assert (fast.decode() if isinstance(fast, bytes) else fast) == slow
