"""Fixtures for the ZooKeeper tests: a real ZooKeeper, never a fake.

* ``zk_server`` -- a standalone server started by :mod:`compose.zookeeper` for the
  test module (or ``KITSD_ZK_HOSTS``'s), started again before each test if a test
  stopped it;
* ``client`` / ``other_client`` -- kazoo clients from :func:`sd.zk.connect`
  (2 s sessions), connected; stopped and closed after the test;
* ``path`` -- a node path no other test uses.

Without ZooKeeper the fixtures FAIL with the install hint
(``kitsd servers install zookeeper``); they never fall back to a fake.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from kitsd.compose.zookeeper import (
    ExternalZooKeeper,
    ZooKeeperNotInstalled,
    ZooKeeperServer,
    standalone,
)
from kitsd.sd.zk import close_client, connect
from tests.helpers import wait_for

Server = ZooKeeperServer | ExternalZooKeeper

SESSION_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def _zk_server() -> Iterator[Server]:
    try:
        server = standalone()
    except ZooKeeperNotInstalled as error:
        pytest.fail(str(error), pytrace=False)
    with server:
        yield server


@pytest.fixture
def zk_server(_zk_server: Server) -> Server:
    """The module's server, running."""
    if isinstance(_zk_server, ZooKeeperServer) and not _zk_server.running:
        _zk_server.start()
    return _zk_server


def require_restartable(server: Server) -> ZooKeeperServer:
    """Skip, loudly, when the server is one we did not start."""
    if not isinstance(server, ZooKeeperServer):
        pytest.skip("SKIPPED ON PURPOSE: KITSD_ZK_HOSTS points at a server kitsd did not start,"
                    " and this test must restart it; unset it to run this test")
    return server


def connected(address: str, *, timeout: float = SESSION_TIMEOUT, **options: Any) -> Any:
    """A started client of :func:`sd.zk.connect` (session ``timeout``), waited until connected."""
    client = connect(address, timeout=timeout, **options)
    wait_for(lambda: client.connected, timeout=10, what="the kazoo client to connect")
    return client


@pytest.fixture
def client(zk_server: Server) -> Iterator[Any]:
    made = connected(zk_server.address)
    yield made
    close_client(made)


@pytest.fixture
def other_client(zk_server: Server) -> Iterator[Any]:
    made = connected(zk_server.address)
    yield made
    close_client(made)


@pytest.fixture
def path() -> str:
    return f"/kitsd-test/{uuid.uuid4().hex[:12]}/users"


def expire_session(address: str, client: Any) -> None:
    """Expire ``client``'s session for real: a second client joins the same session
    (same id and password) and closes it, as ZooKeeper's own tests do."""
    from kazoo.client import KazooClient

    session_id, password = client.client_id
    intruder = KazooClient(hosts=address, client_id=(session_id, password))
    intruder.start(timeout=10)
    intruder.stop()
    intruder.close()
