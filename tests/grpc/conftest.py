from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.grpc.servers import GRPCInstance


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
