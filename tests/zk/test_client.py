"""``sd.zk.connect`` and the error mapping, without a server."""

from __future__ import annotations

import logging
import math
import threading

import pytest
from kazoo.exceptions import ConnectionLoss, NoAuthError

from kitsd.core.errors import MisuseError, PermissionDeniedError, RegistryUnavailableError
from kitsd.sd.zk.client import KAZOO_LOGGER, connect, to_backend_error


@pytest.mark.parametrize(
    ("kwargs", "mentions"),
    [
        ({"hosts": ""}, "hosts"),
        ({"hosts": "127.0.0.1:2181", "timeout": 0}, "timeout"),
        ({"hosts": "127.0.0.1:2181", "timeout": math.nan}, "timeout"),
        ({"hosts": "127.0.0.1:2181", "timeout": True}, "timeout"),
        ({"hosts": "127.0.0.1:2181", "auth": "no-colon"}, "user:password"),
    ],
)
def test_bad_arguments_fail_before_a_client_exists(kwargs: dict[str, object], mentions: str
                                                   ) -> None:
    before = set(threading.enumerate())
    with pytest.raises(MisuseError, match=mentions):
        connect(**kwargs)  # type: ignore[arg-type]
    assert set(threading.enumerate()) == before


def test_auth_error_is_not_echoed() -> None:
    with pytest.raises(MisuseError) as caught:
        connect("127.0.0.1:2181", auth="only-a-secret-9d2")
    assert "only-a-secret-9d2" not in str(caught.value)


def test_errors_map_to_the_kitsd_tree() -> None:
    denied = to_backend_error(NoAuthError(), "reading /a")
    assert isinstance(denied, PermissionDeniedError)
    assert isinstance(denied.__cause__, NoAuthError)
    lost = to_backend_error(ConnectionLoss(), "reading /a")
    assert isinstance(lost, RegistryUnavailableError)
    assert "reading /a" in str(lost)


def test_kazoo_auth_packets_are_redacted_in_its_debug_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from kazoo.protocol.serialization import Auth

    caplog.set_level(logging.DEBUG, logger=KAZOO_LOGGER)
    logging.getLogger(KAZOO_LOGGER).debug("Sending request(xid=%s): %s", -4,
                                          Auth(0, "digest", "alice:pw-5e1"))
    assert "pw-5e1" not in caplog.text
    assert "digest" in caplog.text


def test_calls_before_the_connection_wait_instead_of_failing(no_thread_leaks: None) -> None:
    """The kazoo contract :func:`start_connecting` relies on (a vendor workaround): a new
    client is CONNECTING as soon as connect() returns, so a call queues until connected
    rather than failing with ConnectionClosedError -- even while no server answers."""
    from kitsd.compose.process import free_ports
    from kitsd.sd.zk.client import close_client

    client = connect(f"127.0.0.1:{free_ports(1)[0]}", timeout=2.0)  # nothing listens there
    try:
        assert client.client_state == "CONNECTING"
        pending = client.exists_async("/")
        assert not pending.wait(0.2)  # queued: it waits for a connection, it did not fail
    finally:
        close_client(client)


def test_an_unreachable_zookeeper_is_an_error_first_within_a_second_or_so(
    no_thread_leaks: None,
) -> None:
    """kazoo reports nothing while it keeps failing to connect; the watch says so as soon
    as every server failed (ConnectAttempts), so the instancer's first state is that
    error, not a 5 s silence."""
    import time

    from kitsd import sd
    from kitsd.compose.process import free_ports

    started = time.monotonic()
    with sd.instancer_from_url(f"zk://127.0.0.1:{free_ports(1)[0]}/svc") as instancer:
        took = time.monotonic() - started
        state = instancer.state
    assert isinstance(state.error, RegistryUnavailableError)
    assert "no server could be reached (still trying)" in str(state.error)
    assert state.instances == ()
    assert took < 2.0  # not the 5 s first-answer wait


def test_connect_attempts_report_every_server_failing(no_thread_leaks: None) -> None:
    """The kazoo contract ConnectAttempts relies on (a vendor workaround): kazoo's
    connection retry sleeps through the handler's sleep_func after a round in which
    every server failed, and the client accepts that handler and retry."""
    from kitsd.compose.process import free_ports
    from kitsd.sd.zk.client import attempts_of, close_client

    closed = free_ports(2)
    client = connect(",".join(f"127.0.0.1:{port}" for port in closed), timeout=2.0)
    try:
        attempts = attempts_of(client)
        assert attempts is not None
        heard = threading.Event()
        attempts.add_listener(heard.set)
        assert heard.wait(5) or attempts.failing  # (it may have failed before we listened)
        assert attempts.failing
        assert client.client_state == "CONNECTING"
    finally:
        close_client(client)


def test_a_client_kitsd_did_not_build_has_no_connect_attempts() -> None:
    from kazoo.client import KazooClient

    from kitsd.sd.zk.client import attempts_of

    assert attempts_of(KazooClient(hosts="127.0.0.1:1")) is None
    assert attempts_of(object()) is None


def test_closing_during_a_handshake_nobody_answers_is_prompt(no_thread_leaks: None) -> None:
    """The kazoo contract ConnectAttempts.select relies on: kazoo's stop() waited for a
    session handshake with a server that accepts and never answers to time out (9.5 s
    with the default 10 s session); kazoo reads the handshake through the handler's
    select on the one socket, which close_client now ends at once."""
    import socket
    import time

    from kitsd.sd.zk.client import close_client

    accepted: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as hole:
        client = connect(f"127.0.0.1:{hole.getsockname()[1]}")  # 10 s session
        connection, _ = hole.accept()  # kazoo connected; the handshake waits for us
        accepted.append(connection)
        started = time.monotonic()
        close_client(client)
        took = time.monotonic() - started
    for connection in accepted:
        connection.close()
    assert took < 2.0


def test_a_handshake_nobody_answers_is_given_up_after_the_handshake_timeout(
    monkeypatch: pytest.MonkeyPatch, no_thread_leaks: None
) -> None:
    """A ZooKeeper accepting connections while it starts sometimes never answers the
    session handshake (2 of 50 restarts here); kazoo waited the session timeout (20 s
    in tests/zk's restart test, which then timed out) and the session expired.  Now the
    attempt ends after HANDSHAKE_TIMEOUT and kazoo asks again."""
    import socket
    import time

    from kitsd.sd.zk import client as zk_client
    from kitsd.sd.zk.client import attempts_of, close_client

    monkeypatch.setattr(zk_client, "HANDSHAKE_TIMEOUT", 0.5)
    accepted: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as hole:
        client = connect(f"127.0.0.1:{hole.getsockname()[1]}", timeout=20.0)
        try:
            attempts = attempts_of(client)
            assert attempts is not None
            connection, _ = hole.accept()
            accepted.append(connection)
            started = time.monotonic()
            hole.settimeout(10)
            connection, _ = hole.accept()  # kazoo gave up the first handshake: asks again
            accepted.append(connection)
            took = time.monotonic() - started
            assert attempts.failing
        finally:
            close_client(client)
    for connection in accepted:
        connection.close()
    assert took < 3.0  # not the 20 s session timeout
