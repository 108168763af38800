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
