"""Rolling restart of uvicorn instances registered in a real ZooKeeper."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kitsd.compose.zookeeper import ZooKeeperNotInstalled, standalone
from tests.serve.rolling import prove

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def zookeeper() -> Iterator[Any]:
    try:
        server = standalone()
    except ZooKeeperNotInstalled as error:
        pytest.fail(str(error), pytrace=False)
    with server:
        yield server


def test_rolling_restart_through_zookeeper(zookeeper: Any,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    prove(f"zk://{zookeeper.address}", capsys)
