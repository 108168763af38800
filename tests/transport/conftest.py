"""Fixtures: local instances in a MemoryRegistry, and one client per driver (sync
httpx.Client over kitsd.Transport, httpx.AsyncClient over kitsd.AsyncTransport run
on an asyncio.Runner) so each scenario runs against both."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import kitsd
from kitsd import sd
from tests.transport.servers import Instance


class Driver:
    """One client over a kitsd transport; ``request`` is sync for both kinds."""

    kind = ""
    transport: Any
    client: Any
    runner: Any

    def __init__(self, discover: Any, base_url: str = "http://users", **options: Any) -> None:
        raise NotImplementedError

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SyncDriver(Driver):
    kind = "sync"

    def __init__(self, discover: Any, base_url: str = "http://users", **options: Any) -> None:
        client_options = options.pop("client", {})
        self.transport = kitsd.Transport(discover, **options)
        self.client = httpx.Client(transport=self.transport, base_url=base_url,
                                   **client_options)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response: httpx.Response = self.client.request(method, url, **kwargs)
        return response

    def close(self) -> None:
        self.client.close()


class AsyncDriver(Driver):
    kind = "async"

    def __init__(self, discover: Any, base_url: str = "http://users", **options: Any) -> None:
        client_options = options.pop("client", {})
        self.closed = False
        self.runner = asyncio.Runner()
        self.transport = kitsd.AsyncTransport(discover, **options)

        async def make() -> httpx.AsyncClient:
            return httpx.AsyncClient(transport=self.transport, base_url=base_url,
                                     **client_options)

        self.client = self.runner.run(make())

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response: httpx.Response = self.runner.run(self.client.request(method, url, **kwargs))
        return response

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.runner.run(self.client.aclose())
        finally:
            self.runner.close()


@pytest.fixture
def instances() -> Iterator[Callable[[int], list[Instance]]]:
    made: list[Instance] = []

    def make(count: int) -> list[Instance]:
        new = [Instance() for _ in range(count)]
        made.extend(new)
        return new

    yield make
    for instance in made:
        instance.kill()


@pytest.fixture
def registry() -> sd.MemoryRegistry:
    return sd.MemoryRegistry()


def register(registry: sd.MemoryRegistry, *found: Instance, service: str = "users") -> None:
    for instance in found:
        registry.registrar(service, instance.address).register()


@pytest.fixture(params=[SyncDriver, AsyncDriver], ids=["sync", "async"])
def driver(request: pytest.FixtureRequest) -> Iterator[Callable[..., Driver]]:
    kind: type[Driver] = request.param
    made: list[Driver] = []

    def make(discover: Any, **options: Any) -> Driver:
        made.append(kind(discover, **options))
        return made[-1]

    make.kind = kind.kind  # type: ignore[attr-defined]
    yield make
    for each in made:
        each.close()
