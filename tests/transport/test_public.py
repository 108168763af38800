"""kitsd's public surface: the transports API.md names, and a complete __all__."""

from __future__ import annotations

import importlib

import httpx

import kitsd


def test_exports() -> None:
    assert {"AsyncTransport", "Transport", "breaker", "lb", "sd"} <= set(kitsd.__all__)
    transport = importlib.import_module("kitsd.transport")
    assert set(transport.__all__) == {
        "DEFAULT", "DEFAULT_BALANCER", "OUTLIER_DETECTION", "SLOW_START", "AsyncTransport",
        "TooManyServicesError", "Transport", "TransportKeywords", "TransportOptions"}
    for name in ("AsyncTransport", "TooManyServicesError", "Transport", "TransportKeywords",
                 "TransportOptions"):
        assert getattr(transport, name).__doc__
    assert issubclass(kitsd.Transport, httpx.BaseTransport)
    assert issubclass(kitsd.AsyncTransport, httpx.AsyncBaseTransport)
    assert kitsd.Transport.__module__ == "kitsd.transport"


def test_subpackages_resolve_lazily_from_the_one_import_name() -> None:
    import importlib

    for name in ("sd", "lb", "breaker"):
        assert getattr(kitsd, name) is importlib.import_module(f"kitsd.{name}")
    assert kitsd.sd.etcd is importlib.import_module("kitsd.sd.etcd")
