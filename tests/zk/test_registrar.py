"""ZKRegistrar against a real ZooKeeper: ephemeral sequential nodes that survive expiry."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from kitsd import sd
from kitsd.core.errors import InvalidInstanceError, MisuseError, RegistryUnavailableError
from kitsd.sd.zk import ZKInstancer, ZKRegistrar, close_client
from tests.helpers import assert_no_new_threads, wait_for
from tests.zk.conftest import Server, connected, expire_session, require_restartable

pytestmark = pytest.mark.integration


def test_register_creates_a_protected_ephemeral_sequential_node(
    client: Any, other_client: Any, path: str, no_thread_leaks: None
) -> None:
    registrar = ZKRegistrar(client, path, "10.0.0.1:8080", name="users")
    registrar.register()
    registrar.register()  # idempotent
    try:
        node = registrar.node
        assert node is not None
        name = node.rpartition("/")[2]
        assert name.startswith("_c_")
        assert name[-10:].isdigit(), "a sequential node"
        assert name[:-10].endswith("-users")
        data, stat = other_client.get(node)
        assert data == b"10.0.0.1:8080"
        assert stat.ephemeralOwner == client.client_id[0]
        assert other_client.get_children(path) == [name]
    finally:
        registrar.deregister()
        registrar.deregister()  # idempotent
    assert other_client.get_children(path) == []
    assert registrar.node is None


def test_two_registrars_for_one_path_make_two_nodes_and_can_register_again(
    client: Any, other_client: Any, path: str
) -> None:
    with ZKRegistrar(client, path, "10.0.0.1:80"), ZKRegistrar(client, path, "10.0.0.2:80"):
        assert len(other_client.get_children(path)) == 2
    assert other_client.get_children(path) == []
    again = ZKRegistrar(client, path, "10.0.0.3:80")
    with again:
        pass
    with again:
        assert len(other_client.get_children(path)) == 1
    assert again.creations == 2


def test_session_expiry_recreates_the_node_and_watchers_see_it_back(
    zk_server: Server, client: Any, other_client: Any, path: str
) -> None:
    events: list[sd.Event] = []
    with ZKRegistrar(client, path, "10.0.0.1:80") as registrar, \
            ZKInstancer(other_client, path) as instancer:
        instancer.subscribe(events.append)
        wait_for(lambda: bool(events) and events[-1].instances == ("10.0.0.1:80",))
        first_node = registrar.node
        expire_session(zk_server.address, client)
        wait_for(lambda: registrar.creations == 2, timeout=15,
                 what="the node to be created again on the new session")
        assert registrar.node != first_node
        wait_for(lambda: events[-1].instances == ("10.0.0.1:80",))
        assert len(other_client.get_children(path)) == 1
        _, stat = other_client.get(registrar.node)
        assert stat.ephemeralOwner == client.client_id[0]


def test_server_restart_keeps_the_node_of_a_live_session(
    zk_server: Server, other_client: Any, path: str
) -> None:
    server = require_restartable(zk_server)
    # a session long enough to outlive the restart on a loaded machine
    client = connected(server.address, timeout=20.0)
    try:
        with ZKRegistrar(client, path, "10.0.0.1:80") as registrar:
            node = registrar.node
            session = client.client_id[0]
            server.restart()
            wait_for(lambda: client.connected, timeout=15)
            wait_for(lambda: other_client.connected, timeout=15)
            assert client.client_id[0] == session
            assert other_client.get(node)[0] == b"10.0.0.1:80"
            assert registrar.creations == 1
    finally:
        close_client(client)


def test_register_against_a_stopped_server_fails_with_a_backend_error(
    zk_server: Server, client: Any, path: str
) -> None:
    server = require_restartable(zk_server)
    before = set(threading.enumerate())
    server.stop()
    wait_for(lambda: not client.connected)
    registrar = ZKRegistrar(client, path, "10.0.0.1:80", retry_for=0)
    with sd.backoff.testing(), pytest.raises(RegistryUnavailableError):
        registrar.register()
    assert not registrar.registered
    assert_no_new_threads(before, timeout=1.0)


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        (("", "10.0.0.1:80"), {}, MisuseError),
        (("/a", "no-port"), {}, InvalidInstanceError),
        (("/a", "evil\n:80"), {}, InvalidInstanceError),
        (("/a", "10.0.0.1:80"), {"name": "a/b"}, MisuseError),
        (("/a", "10.0.0.1:80"), {"name": ""}, MisuseError),
        (("/a", "10.0.0.1:80"), {"retry_for": math.nan}, MisuseError),
        (("/a", "10.0.0.1:80"), {"retry_for": -1}, MisuseError),
    ],
)
def test_bad_arguments_fail_at_construction(
    client: Any, args: tuple[str, str], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        ZKRegistrar(client, *args, **kwargs)


def test_not_a_client_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="KazooClient"):
        ZKRegistrar(object(), "/a", "10.0.0.1:80")
