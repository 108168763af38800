from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.grpc.servers import GRPCInstance, SilentInstance


@pytest.fixture
def grpc_instances() -> Iterator[Callable[[int], list[GRPCInstance]]]:
    made: list[GRPCInstance] = []

    def make(count: int) -> list[GRPCInstance]:
        new = [GRPCInstance() for _ in range(count)]
        made.extend(new)
        return new

    yield make
    for instance in made:
        instance.kill()


@pytest.fixture
def silent_instance() -> Iterator[SilentInstance]:
    """An instance that accepts TCP and never speaks HTTP/2."""
    silent = SilentInstance()
    yield silent
    silent.close()
