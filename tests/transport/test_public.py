"""kitsd's public surface: the transports API.md names, and a complete __all__."""

from __future__ import annotations

import httpx

import kitsd


def test_exports() -> None:
    assert set(kitsd.__all__) == {"AsyncTransport", "Transport"}
    assert issubclass(kitsd.Transport, httpx.BaseTransport)
    assert issubclass(kitsd.AsyncTransport, httpx.AsyncBaseTransport)
    assert kitsd.Transport.__module__ == "kitsd.transport"
