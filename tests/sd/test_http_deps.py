"""sd.http's dependencies: sniffio, which httpcore looks for on every async request.

httpcore 1.0.x imports ``sniffio`` lazily, inside the function that names the
async library, and catches the ``ImportError``: without sniffio, every async
request searches ``sys.path`` for it about four times (~0.3 ms on this machine:
``python -m bench.bench_http_stack --without-sniffio``).  anyio 4.x no longer
depends on sniffio, so ``pip install httpx`` no longer brings it (checked with
httpx 0.28.1, httpcore 1.0.9, anyio 4.16.0).  kitsd must depend on it.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import tomllib
from pathlib import Path

import httpcore._synchronization
import pytest

from kitsd import sd
from kitsd.sd.http import _clients

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_httpcore_still_imports_sniffio_lazily() -> None:
    """While this holds, sniffio must be installed for async requests to be cheap."""
    source = inspect.getsource(httpcore._synchronization.current_async_library)
    assert "import sniffio" in source


def test_kitsd_depends_on_sniffio() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    assert any(dependency.split(">")[0].split("=")[0].strip() == "sniffio"
               for dependency in dependencies)


def _no_args(_request: object) -> dict[str, object]:
    return {}


def _decode(response: object) -> object:
    return response


def test_a_missing_sniffio_is_reported_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_clients, "_sniffio_checked", False)
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "sniffio" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.http._clients"):
        sd.http.factory("GET", "/x", encode=_no_args, decode=_decode)  # sync: no need
        sd.http.async_factory("GET", "/x", encode=_no_args, decode=_decode)
        sd.http.async_factory("GET", "/y", encode=_no_args, decode=_decode)
    warnings = [r for r in caplog.records if "sniffio" in r.getMessage()]
    assert len(warnings) == 1


def test_an_installed_sniffio_is_not_reported(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_clients, "_sniffio_checked", False)
    with caplog.at_level(logging.WARNING, logger="kitsd.sd.http._clients"):
        sd.http.async_factory("GET", "/x", encode=_no_args, decode=_decode)
    assert not [r for r in caplog.records if "sniffio" in r.getMessage()]
