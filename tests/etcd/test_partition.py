"""A black-holed connection to etcd is reported within the documented bound (issue 7.3).

Between the client and a real etcd sits :class:`tests.etcd.blackhole.BlackHoleProxy`;
``stall()`` stops every byte without closing a connection, as a partition does.
grpcio alone notices only after its keepalive ping times out (60 s by default);
the instancer's liveness probe must publish an error within ``liveness_timeout``.

Measured figures are printed with a ``FIGURE`` prefix (see them with ``-s``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kitsd import sd
from kitsd.compose.etcd import EtcdMember, ExternalEtcd
from kitsd.compose.proxy import BlackHoleProxy
from kitsd.core.errors import RegistryUnavailableError
from tests.helpers import wait_for

pyetcd = pytest.importorskip("pyetcd")

pytestmark = pytest.mark.integration

LIVENESS = 2.0
SLACK = 2.0  # scheduling on a loaded 2-core machine


@pytest.fixture
def proxy(etcd_member: EtcdMember | ExternalEtcd) -> Iterator[BlackHoleProxy]:
    with BlackHoleProxy(etcd_member.host, etcd_member.client_port) as made:
        yield made


def _partition_is_reported(
    instancer: sd.etcd.EtcdInstancer, proxy: BlackHoleProxy, writer: Any, prefix: str
) -> float:
    wait_for(lambda: instancer.state.instances == ("10.0.0.1:80",)
             and instancer.state.error is None, 10, "the initial read")
    proxy.stall()
    stalled_at = time.monotonic()
    wait_for(lambda: instancer.state.error is not None, LIVENESS + SLACK + 5,
             "an error event after the partition")
    detected = time.monotonic() - stalled_at
    error = instancer.state.error
    assert isinstance(error, RegistryUnavailableError)
    assert "liveness" in str(error), error
    assert instancer.state.instances == ("10.0.0.1:80",), "the last instances are kept"
    proxy.resume()
    writer.put(f"{prefix}b", "10.0.0.2:80")
    wait_for(lambda: instancer.state.instances == ("10.0.0.1:80", "10.0.0.2:80")
             and instancer.state.error is None, 15, "recovery once the partition heals")
    return detected


def test_a_partition_is_reported_within_the_liveness_timeout(
    proxy: BlackHoleProxy, client: Any, prefix: str
) -> None:
    client.put(f"{prefix}a", "10.0.0.1:80")
    behind = sd.etcd.connect("127.0.0.1", proxy.port)
    try:
        with sd.etcd.EtcdInstancer(behind, prefix, liveness_timeout=LIVENESS) as instancer:
            detected = _partition_is_reported(instancer, proxy, client, prefix)
    finally:
        behind.close()
    print(f"FIGURE partition reported after {detected:.2f} s (liveness_timeout {LIVENESS} s)")
    assert detected <= LIVENESS + SLACK


def test_a_partition_is_reported_with_the_users_own_client(
    proxy: BlackHoleProxy, client: Any, prefix: str
) -> None:
    """A plain pyetcd client: no keepalive, no call timeout; the bound still holds."""
    client.put(f"{prefix}a", "10.0.0.1:80")
    users = pyetcd.client("127.0.0.1", proxy.port)
    try:
        with sd.etcd.EtcdInstancer(users, prefix, liveness_timeout=LIVENESS) as instancer:
            detected = _partition_is_reported(instancer, proxy, client, prefix)
    finally:
        users.close()
    print(f"FIGURE partition reported after {detected:.2f} s, user's client")
    assert detected <= LIVENESS + SLACK


def _watch_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate()
            if thread.name.startswith(("pyetcd_watch_", "etcd3_watch_"))]


def test_a_failover_leaves_no_watch_stream_behind(
    etcd_member: EtcdMember | ExternalEtcd, client: Any, prefix: str
) -> None:
    """The client drops its watcher when it fails over, ending only the request side
    of the stream; etcd keeps such a stream open until the client cancels it, so each
    failover left a thread (and, across a partition, a socket) for the life of the
    client: a chaos run's one cut grew the process by 6 threads and 13 fds for good."""
    client.put(f"{prefix}a", "10.0.0.1:80")
    with BlackHoleProxy(etcd_member.host, etcd_member.client_port) as first, \
            BlackHoleProxy(etcd_member.host, etcd_member.client_port) as second:
        behind = sd.etcd.connect(endpoints=[first.endpoint, second.endpoint])
        try:
            with sd.etcd.EtcdInstancer(behind, prefix, liveness_timeout=LIVENESS) as instancer:
                wait_for(lambda: instancer.state.instances == ("10.0.0.1:80",), 10,
                         "the initial read")
                assert len(_watch_threads()) == 1
                first.stall()  # the endpoint in use goes silent: the client fails over
                client.put(f"{prefix}b", "10.0.0.2:80")  # seen only through the other one
                wait_for(lambda: instancer.state.instances == ("10.0.0.1:80", "10.0.0.2:80")
                         and instancer.state.error is None, LIVENESS + SLACK + 15,
                         "the watch on the other endpoint")
                wait_for(lambda: len(_watch_threads()) == 1, 5,
                         f"the dropped watcher's thread to end: {_watch_threads()}")
        finally:
            behind.close()
