"""ZKInstancer against a real ZooKeeper: changes, bad values, restarts and session expiry."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from kitsd import sd
from kitsd.compose.zookeeper import ZooKeeperServer
from kitsd.core.errors import MisuseError, RegistryUnavailableError
from kitsd.sd.zk import ZKInstancer, close_client
from kitsd.sd.zk.instancer import _running_watches
from tests.helpers import assert_no_new_threads, wait_for
from tests.zk.conftest import Server, connected, expire_session, require_restartable

pytestmark = pytest.mark.integration


def subscribe(client: Any, path: str) -> tuple[ZKInstancer, list[sd.Event]]:
    instancer = ZKInstancer(client, path)
    events: list[sd.Event] = []
    instancer.subscribe(events.append)
    return instancer, events


def last(events: list[sd.Event]) -> sd.Event:
    return events[-1] if events else sd.Event((), RuntimeError("no event yet"))


def test_children_data_changes_and_removals_arrive(
    client: Any, other_client: Any, path: str
) -> None:
    other_client.ensure_path(path)
    other_client.create(f"{path}/a", b"10.0.0.1:80")
    instancer, events = subscribe(client, path)
    with instancer:
        wait_for(lambda: last(events) == sd.Event(("10.0.0.1:80",)), what="the first child")
        other_client.create(f"{path}/b", b"10.0.0.2:80")
        wait_for(lambda: last(events).instances == ("10.0.0.1:80", "10.0.0.2:80"))
        other_client.set(f"{path}/a", b"10.0.0.3:80")  # data change of an existing child
        wait_for(lambda: last(events).instances == ("10.0.0.2:80", "10.0.0.3:80"))
        other_client.delete(f"{path}/b")
        wait_for(lambda: last(events).instances == ("10.0.0.3:80",))
    assert all(event.error is None for event in events)


def test_missing_node_is_empty_until_it_is_created(
    client: Any, other_client: Any, path: str
) -> None:
    instancer, events = subscribe(client, path)
    with instancer:
        wait_for(lambda: last(events) == sd.Event(()), what="an empty set for a missing node")
        other_client.create(f"{path}/a", b"10.0.0.1:80", makepath=True)
        wait_for(lambda: last(events).instances == ("10.0.0.1:80",), what="creation seen")
        other_client.delete(path, recursive=True)
        wait_for(lambda: last(events) == sd.Event(()), what="deletion seen")
        other_client.create(f"{path}/b", b"10.0.0.2:80", makepath=True)
        wait_for(lambda: last(events).instances == ("10.0.0.2:80",), what="re-creation seen")


def test_bad_values_are_skipped_and_the_good_ones_served(
    client: Any, other_client: Any, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    other_client.ensure_path(path)
    other_client.create(f"{path}/junk", b"x" * 500_000)
    other_client.create(f"{path}/binary", b"\xff\x00")
    other_client.create(f"{path}/empty")
    other_client.create(f"{path}/evil", b"evil\n:80")
    other_client.create(f"{path}/good", b"10.0.0.1:80")
    instancer, events = subscribe(client, path)
    with instancer:
        wait_for(lambda: last(events) == sd.Event(("10.0.0.1:80",)))
    warnings = [r.getMessage() for r in caplog.records if r.name == "kitsd.sd.zk.view"]
    assert len(warnings) == 4
    assert all(len(message) < 300 for message in warnings)


def test_server_restart_reports_an_error_then_recovers_without_losing_changes(
    zk_server: Server, path: str
) -> None:
    server = require_restartable(zk_server)
    # a session long enough to outlive the restart on a loaded machine: this test is
    # about a connection loss within one session (expiry has its own test)
    client = connected(server.address, timeout=20.0)
    try:
        restart_and_check(server, client, path)
    finally:
        close_client(client)


def restart_and_check(server: ZooKeeperServer, client: Any, path: str) -> None:
    client.create(f"{path}/a", b"10.0.0.1:80", makepath=True)
    client.create(f"{path}/c", b"not an instance yet")
    session = client.client_id[0]
    instancer, events = subscribe(client, path)
    with instancer:
        wait_for(lambda: last(events).instances == ("10.0.0.1:80",))
        server.stop()
        wait_for(lambda: last(events).error is not None, what="an error while the server is down")
        assert isinstance(last(events).error, RegistryUnavailableError)
        assert last(events).instances == ("10.0.0.1:80",)
        server.start()
        server.members[0].wait_ready()
        # A change made by someone else the moment the server is back, racing our reconnect.
        writer = connected(server.address)
        try:
            writer.create(f"{path}/b", b"10.0.0.2:80")
            writer.delete(f"{path}/a")
            wait_for(lambda: last(events) == sd.Event(("10.0.0.2:80",)), timeout=15,
                     what="the change made during the reconnect")
            assert client.client_id[0] == session, "the session survived the restart"
            # kazoo dropped every data watch with the connection: the data of a child
            # that existed before must still be watched after the reconnect.
            writer.set(f"{path}/c", b"10.0.0.30:80")
            wait_for(lambda: last(events) == sd.Event(("10.0.0.2:80", "10.0.0.30:80")),
                     what="a data change of a child that predates the restart")
        finally:
            close_client(writer)


def test_session_expiry_loses_no_change(
    zk_server: Server, client: Any, other_client: Any, path: str
) -> None:
    other_client.create(f"{path}/a", b"10.0.0.1:80", makepath=True)
    other_client.create(f"{path}/b", b"10.0.0.2:80")
    instancer, events = subscribe(client, path)
    with instancer:
        wait_for(lambda: last(events).instances == ("10.0.0.1:80", "10.0.0.2:80"))
        old_session = client.client_id[0]
        expire_session(zk_server.address, client)
        # Changes right after the expiry, before the instancer has a new session.
        other_client.delete(f"{path}/a")
        other_client.set(f"{path}/b", b"10.0.0.20:80")
        other_client.create(f"{path}/c", b"10.0.0.3:80")
        wait_for(lambda: last(events) == sd.Event(("10.0.0.20:80", "10.0.0.3:80")), timeout=15,
                 what="every change made around the expiry")
        assert client.client_id[0] != old_session, "the session did expire"
        assert any(isinstance(event.error, RegistryUnavailableError) for event in events)
        # and the watches set on the new session work
        other_client.delete(f"{path}/c")
        wait_for(lambda: last(events) == sd.Event(("10.0.0.20:80",)))


def test_stop_is_prompt_and_leaves_nothing_behind(client: Any, path: str) -> None:
    before = set(threading.enumerate())
    listeners = set(client.state_listeners)
    first, _ = subscribe(client, path)
    second, events = subscribe(client, path)  # shares the first one's watch
    assert _running_watches() == 1
    wait_for(lambda: bool(events))
    first.stop()
    assert _running_watches() == 1
    started = time.monotonic()
    second.stop()
    second.stop()  # idempotent
    assert time.monotonic() - started < 1.0
    assert _running_watches() == 0
    assert set(client.state_listeners) == listeners
    assert_no_new_threads(before, timeout=1.0)
    assert client.connected, "the caller's client is left alone"


def test_stop_while_the_server_is_down_is_prompt(zk_server: Server, client: Any, path: str
                                                  ) -> None:
    server = require_restartable(zk_server)
    before = set(threading.enumerate())
    instancer, events = subscribe(client, path)
    wait_for(lambda: bool(events))
    server.stop()
    wait_for(lambda: last(events).error is not None)
    started = time.monotonic()
    instancer.stop()
    assert time.monotonic() - started < 1.0
    assert_no_new_threads(before, timeout=1.0)


@pytest.mark.parametrize(
    ("target", "bad_path", "error"),
    [
        ("client", "", MisuseError),
        ("client", "relative", MisuseError),
        ("client", "/a//b", MisuseError),
        ("client", None, TypeError),
        ("none", "/a", TypeError),
        ("object", "/a", TypeError),
    ],
)
def test_bad_arguments_fail_at_construction(
    client: Any, target: str, bad_path: Any, error: type[Exception]
) -> None:
    before = set(threading.enumerate())
    listeners = set(client.state_listeners)
    subject = {"client": client, "none": None, "object": object()}[target]
    with pytest.raises(error):
        ZKInstancer(subject, bad_path)
    assert _running_watches() == 0
    assert set(client.state_listeners) == listeners
    assert_no_new_threads(before, timeout=0.5)


def test_the_first_event_is_the_children_as_read_never_an_empty_set(
    zk_server: Server, client: Any, other_client: Any, path: str
) -> None:
    """Issue 15.4: ``Event(())`` came first, then the real set ~10-30 ms later."""
    other_client.create(f"{path}/a", b"10.0.0.1:80", makepath=True)
    for _ in range(3):  # a fresh watch each time, on a connected client
        instancer, events = subscribe(client, path)
        with instancer:
            assert events == [sd.Event(("10.0.0.1:80",))]
    for _ in range(3):  # a URL's own client, still connecting when subscribe() is called
        with sd.instancer_from_url(f"zk://{zk_server.address}{path}") as from_url:
            seen: list[sd.Event] = []
            from_url.subscribe(seen.append)
            assert seen == [sd.Event(("10.0.0.1:80",))]
            with sd.Endpointer(from_url, lambda instance: lambda request: instance) as endpointer:
                assert endpointer.endpoints()[0](None) == "10.0.0.1:80"  # no NoEndpointsError
                assert endpointer.answered


def test_a_missing_node_is_answered_as_empty_first(client: Any, path: str) -> None:
    instancer, events = subscribe(client, path)
    with instancer:
        assert events == [sd.Event(())]
        assert instancer.answered


def test_calls_right_after_connect_wait_for_the_connection(zk_server: Server, path: str) -> None:
    """Issue 15.4: ``ensure_path`` right after ``connect()`` raised ConnectionClosedError."""
    for _ in range(10):
        client = sd.zk.connect(zk_server.address, timeout=2.0)
        try:
            client.ensure_path(path)  # before the client is connected
            assert client.exists(path) is not None
        finally:
            close_client(client)


def test_no_thread_is_left_after_an_expiry_and_a_server_restart(
    zk_server: Server, path: str
) -> None:
    """Issue 16.15: stop() and closing every client must leave no thread behind."""
    server = require_restartable(zk_server)
    before = set(threading.enumerate())
    client = connected(server.address)
    other = connected(server.address)
    try:
        other.create(f"{path}/a", b"10.0.0.1:80", makepath=True)
        instancer, events = subscribe(client, path)
        expire_session(server.address, client)
        wait_for(lambda: any(event.error is not None for event in events), timeout=15,
                 what="the expiry to be reported")
        server.stop()
        server.start()
        server.members[0].wait_ready()
        wait_for(lambda: last(events) == sd.Event(("10.0.0.1:80",)), timeout=30,
                 what="recovery after the restart")
        instancer.stop()
    finally:
        close_client(client)
        close_client(other)
    assert_no_new_threads(before)
    assert _running_watches() == 0


def test_url_values_are_served_and_the_rest_refused_for_the_true_reason(
    client: Any, other_client: Any, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 15.4: the URL form go-kit services write (``http://host:port``)."""
    import logging

    caplog.set_level(logging.WARNING, logger="kitsd.sd.zk.view")
    other_client.create(f"{path}/a", b"http://10.0.0.1:8080", makepath=True)
    other_client.create(f"{path}/b", b"10.0.0.2:80")
    other_client.create(f"{path}/c", b"http://10.0.0.9:80/api")
    instancer, events = subscribe(client, path)
    with instancer:
        assert events == [sd.Event(("10.0.0.1:8080", "10.0.0.2:80"))]
    messages = "\n".join(record.getMessage() for record in caplog.records)
    assert "with a path" in messages
    assert "IPv6" not in messages


def test_a_slow_connection_is_waited_for_not_reported(
    zk_server: Server, other_client: Any, path: str
) -> None:
    """Item 1: a ZooKeeper that took longer than a second to connect (a loaded server, a
    TLS handshake, a first server that drops packets) was reported 'not connected within
    1s' as the instancer's first state -- a fresh zk:// transport's first calls failed
    with NoEndpointsError.  Only servers that failed are an error; a slow one is waited for."""
    from kitsd.compose.proxy import BlackHoleProxy
    from kitsd.sd.zk.client import attempts_of

    other_client.create(f"{path}/a", b"10.0.0.1:80", makepath=True)
    host, port = zk_server.address.rsplit(":", 1)
    with BlackHoleProxy(host, int(port)) as proxy:
        proxy.stall()  # connections are accepted, then nothing answers until resume()
        client = sd.zk.connect(proxy.endpoint, timeout=10.0)
        slow = threading.Timer(1.5, proxy.resume)
        slow.start()
        try:
            instancer, events = subscribe(client, path)
            with instancer:
                assert events == [sd.Event(("10.0.0.1:80",))]
                attempts = attempts_of(client)
                assert attempts is not None
                assert not attempts.failing
        finally:
            slow.cancel()
            close_client(client)


def test_a_client_kitsd_did_not_build_is_reported_after_the_grace(
    monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """A KazooClient of the user's own cannot say whether its attempts fail: the watch
    reports it not connected after CONNECT_GRACE (nobody waits for a first answer here)."""
    from kazoo.client import KazooClient

    from kitsd.compose.process import free_ports
    from kitsd.sd.zk import instancer as zk_instancer

    monkeypatch.setattr(zk_instancer, "CONNECT_GRACE", 0.3)
    client = KazooClient(hosts=f"127.0.0.1:{free_ports(1)[0]}")
    client.start_async()
    try:
        with ZKInstancer(client, path, first_answer_timeout=0) as instancer:
            events: list[sd.Event] = []
            instancer.subscribe(events.append)
            wait_for(lambda: bool(events), timeout=10, what="the not-connected error")
            assert isinstance(events[0].error, RegistryUnavailableError)
            assert "not connected within 0.3s (still trying)" in str(events[0].error)
    finally:
        client.stop()
        client.close()
