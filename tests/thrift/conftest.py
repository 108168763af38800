"""Fixtures of sd.thrift's tests: the Store service (thriftpy2 loads the IDL the Go
server is built from) and real Go Thrift servers (:mod:`tests.thrift.goserver`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import thriftpy2

from kitsd.compose.gobuild import GoBuildError
from tests.thrift.goserver import IDL, StoreServer, binary

StartServers = Callable[..., list[StoreServer]]


@pytest.fixture(scope="session")
def store() -> Any:
    """The thriftpy2 module of ``store.thrift`` (``store.Store``, ``store.NotFound``, ...)."""
    return thriftpy2.load(str(IDL), module_name="store_thrift")


@pytest.fixture(scope="session")
def store_server_binary() -> Path:
    """The Go server, built (and cached) on first use."""
    try:
        return binary()
    except GoBuildError as error:
        pytest.fail(f"could not build the Go Thrift test server: {error}")


@pytest.fixture
def store_servers(store_server_binary: Path) -> Iterator[StartServers]:
    """``start(count, transport=..., protocol=...)`` starts Go servers; all are killed
    after the test."""
    started: list[StoreServer] = []

    def start(count: int = 1, **options: str) -> list[StoreServer]:
        new = [StoreServer(store_server_binary, **options) for _ in range(count)]
        started.extend(new)
        return new

    yield start
    for server in started:
        server.close()
