"""Tests for sd.etcd.adapter (the one place that touches pyetcd/etcd3) and sd.etcd.connect.

The first group fails loudly when an installed vendor release no longer has an
attribute a workaround relies on: that is the moment to re-verify the
workaround, not a production watch going blind.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Any

import pytest

from kitsd import sd
from kitsd.compose.process import free_ports
from kitsd.core.errors import MisuseError
from kitsd.sd.etcd.adapter import (
    VENDOR_METHODS,
    Login,
    VendorClient,
    _channels,
    _clear_failed_marks,
    _etcdrpc,
    _unbounded_request_queues,
    adapt,
    cancel_abandoned_watches,
)
from kitsd.sd.etcd.client import EtcdClient, EtcdLeases, EtcdReader, RangePage, Reconnecting
from tests.helpers import assert_no_new_threads

pyetcd = pytest.importorskip("pyetcd")


@pytest.fixture
def dead_client() -> Any:
    """A pyetcd client on a port nobody listens on (the constructor makes no call)."""
    made = pyetcd.client("127.0.0.1", free_ports(1)[0])
    yield made
    made.close()


# ---------------------------------------------------------------------------
# the vendor layout every workaround relies on


def test_vendor_layout_the_workarounds_rely_on(dead_client: Any) -> None:
    client_module = sys.modules[type(dead_client).__module__]  # pyetcd.client
    # _clear_failed_marks / _mark_failed: endpoints by netloc, each with a failed mark.
    assert isinstance(dead_client.endpoints, dict)
    endpoint = next(iter(dead_client.endpoints.values()))
    for name in ("last_failed", "time_retry", "netloc", "channel"):
        assert hasattr(endpoint, name), f"pyetcd.Endpoint lost {name!r}"
    for name in ("fail", "is_failed", "use"):
        assert callable(getattr(endpoint, name, None)), f"pyetcd.Endpoint lost {name}()"
    assert "failover" in vars(dead_client)
    # _range_with_deadline: the KV stub, the request class, credentials and metadata.
    rpc = _etcdrpc(dead_client)
    assert rpc is not None, "pyetcd.etcdrpc.RangeRequest is gone"
    request = rpc.RangeRequest(key=b"a", range_end=b"b", limit=1, revision=0, keys_only=True)
    assert request.limit == 1
    assert callable(getattr(dead_client.kvstub, "Range", None))
    assert hasattr(dead_client, "call_credentials")
    assert hasattr(dead_client, "metadata")
    assert hasattr(dead_client, "timeout")
    # _replace_token: Authenticate, the token plugin, the watcher property and its factory.
    assert callable(getattr(dead_client.authstub, "Authenticate", None))
    assert hasattr(rpc, "AuthenticateRequest")
    assert hasattr(client_module, "EtcdTokenCallCredentials")
    assert isinstance(type(dead_client).__dict__.get("watcher")
                      or type(dead_client).__mro__[1].__dict__.get("watcher"), property)
    assert callable(getattr(dead_client, "get_watcher", None))
    assert callable(getattr(dead_client.watcher, "close", None))
    # _channels: a grpc channel per endpoint that can be subscribed to.
    channels = _channels(dead_client)
    assert len(channels) == 1
    assert callable(getattr(channels[0], "subscribe", None))
    # The watch: callbacks, ids, cancel; the public verbs the adapter calls.
    for name in VENDOR_METHODS:
        assert callable(getattr(dead_client, name, None)), f"pyetcd client lost {name}()"


def test_vendor_versions_are_the_verified_ones() -> None:
    """The workarounds were verified against these releases (pinned in pyproject.toml)."""
    from importlib.metadata import version

    assert version("etcd-sdk-python") == "0.0.7", "re-verify sd/etcd/adapter.py's workarounds"


# ---------------------------------------------------------------------------
# failed marks


def test_clear_failed_marks_undoes_the_five_minute_failed_mark() -> None:
    endpoint = pyetcd.Endpoint("127.0.0.1", 1, secure=False)
    user_client = pyetcd.MultiEndpointEtcd3Client(endpoints=[endpoint])
    try:
        endpoint.fail()
        assert endpoint.is_failed()
        with pytest.raises(ValueError, match="failed node"):
            _ = user_client.channel
        assert _clear_failed_marks(user_client) == ["127.0.0.1:1"]
        assert not endpoint.is_failed()
        assert user_client.channel is not None
        assert _clear_failed_marks(user_client) == []
    finally:
        user_client.close()


def test_clear_failed_marks_leaves_failover_to_a_healthy_member() -> None:
    from pyetcd.exceptions import NoServerAvailableError

    endpoints = [pyetcd.Endpoint("127.0.0.1", port, secure=False) for port in (1, 2, 3)]
    failover = pyetcd.MultiEndpointEtcd3Client(endpoints=endpoints, failover=True)
    try:
        endpoints[0].fail()
        assert _clear_failed_marks(failover) == []  # 2 and 3 are usable: fail over to them
        assert endpoints[0].is_failed()
        endpoints[1].fail()
        endpoints[2].fail()
        with pytest.raises(NoServerAvailableError):
            _ = failover.channel
        assert sorted(_clear_failed_marks(failover)) == ["127.0.0.1:1", "127.0.0.1:2",
                                                         "127.0.0.1:3"]
        assert failover.channel is not None
    finally:
        failover.close()


def test_clear_failed_marks_ignores_clients_without_marks() -> None:
    class Old:
        channel = object()

    assert _clear_failed_marks(Old()) == []
    assert _clear_failed_marks(object()) == []


def test_recover_clears_the_mark_of_a_users_client(dead_client: Any) -> None:
    endpoint = next(iter(dead_client.endpoints.values()))
    endpoint.fail()
    VendorClient(dead_client).recover(None)
    assert not endpoint.is_failed()


# ---------------------------------------------------------------------------
# adapting


def test_adapt_wraps_vendor_clients_and_keeps_protocol_objects(dead_client: Any) -> None:
    adapted = adapt(dead_client)
    assert isinstance(adapted, VendorClient)
    assert adapted.vendor is dead_client
    for protocol in (EtcdClient, EtcdReader, EtcdLeases, Reconnecting):
        assert isinstance(adapted, protocol)
    assert adapt(adapted) is adapted

    class Scripted:
        def read_prefix(self, prefix: bytes, **kwargs: Any) -> RangePage:
            return RangePage((), 1)

        def watch(self, prefix: bytes, start_revision: int, callback: Any) -> object:
            return 1

        def cancel(self, watch_id: object) -> None:
            return None

        grant = keep_alive = put = delete = revoke = cancel

    scripted: object = Scripted()
    assert adapt(scripted) is scripted
    with pytest.raises(TypeError, match="not an etcd client"):
        adapt(object())
    adapted.close()  # not owned: the user's client stays open
    assert dead_client.endpoints  # still usable


def test_the_adapter_never_shows_the_password(dead_client: Any) -> None:
    login = Login("alice", "s3cret-pw", secure=False)
    adapter = VendorClient(dead_client, login=login)
    for text in (repr(adapter), str(adapter), repr(login)):
        assert "s3cret-pw" not in text
    assert "alice" in repr(adapter)


def test_credentials_belong_to_the_adapter_not_the_process(dead_client: Any) -> None:
    """Two adapters over one vendor client keep their own logins (no process-wide map)."""
    first = VendorClient(dead_client, login=Login("a", "pa"))
    second = VendorClient(dead_client, login=Login("b", "pb"))
    assert repr(first) != repr(second)
    import kitsd.sd.etcd.adapter as adapter_module
    globals_holding_state = [name for name, value in vars(adapter_module).items()
                             if isinstance(value, dict | list | set) and not name.startswith("__")
                             and name != "__all__"]
    assert globals_holding_state == [], f"process-wide state: {globals_holding_state}"


def test_wait_connected_is_interrupted_by_wake(dead_client: Any) -> None:
    adapter = VendorClient(dead_client)
    wake = threading.Event()
    timer = threading.Timer(0.05, wake.set)
    timer.start()
    adapter.wait_connected(10.0, wake)  # returns at once when woken, not after 10 s
    timer.join()
    assert wake.is_set()


# ---------------------------------------------------------------------------
# connect(): arguments


@pytest.mark.parametrize("timeout", [-1, 0, 0.0, math.nan, math.inf, -math.inf])
def test_connect_rejects_a_bad_timeout_naming_it(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout") as raised:
        sd.etcd.connect("127.0.0.1", 2379, timeout=timeout)
    assert isinstance(raised.value, MisuseError)


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"timeout": "5"}, TypeError, "timeout"),
        ({"timeout": True}, TypeError, "timeout"),
        ({"time_retry": -1}, MisuseError, "time_retry"),
        ({"port": 0}, MisuseError, "port"),
        ({"port": 70000}, MisuseError, "port"),
        ({"host": ""}, MisuseError, "host"),
        ({"user": "u"}, MisuseError, "password"),
        ({"cert_key": "/k"}, MisuseError, "cert_cert"),
        ({"cert_key": "/k", "cert_cert": "/c"}, MisuseError, "ca_cert"),
        ({"ca_cert": "/no/such/ca.pem"}, MisuseError, "ca_cert"),
        ({"endpoints": "h:1"}, TypeError, "endpoints"),
        ({"endpoints": ["h:x"]}, MisuseError, "endpoint"),
    ],
)
def test_connect_rejects_bad_arguments_naming_them(
    kwargs: dict[str, Any], error: type[Exception], name: str
) -> None:
    with pytest.raises(error, match=name):
        sd.etcd.connect(**kwargs)


def test_connect_returns_an_owning_adapter() -> None:
    from kitsd.sd.etcd.connect import DEFAULT_GRPC_OPTIONS

    options = dict(DEFAULT_GRPC_OPTIONS)
    # etcd cuts off clients that ping more often than every 5 s or without streams.
    assert options["grpc.keepalive_time_ms"] > 5_000
    assert options["grpc.keepalive_permit_without_calls"] == 0
    client = sd.etcd.connect("127.0.0.1", free_ports(1)[0], timeout=None)
    assert isinstance(client, VendorClient)
    assert isinstance(client.vendor, pyetcd.MultiEndpointEtcd3Client)
    closes: list[int] = []
    real_close = client.vendor.close

    def counting_close() -> None:
        closes.append(1)
        real_close()

    client.vendor.close = counting_close
    client.close()
    client.close()  # idempotent
    assert closes == [1], "connect()'s adapter owns (and closes) its vendor client"


def test_vendor_watcher_layout_the_stream_cancelling_relies_on() -> None:
    """Contract of adapter.cancel_abandoned_watches with the installed client: the client
    makes its watchers through get_watcher() (the watcher property, failovers, a new
    token), and a watcher opens its stream through its _watch_stub and ends only the
    request side on close()."""
    import inspect

    vendor_module = pytest.importorskip("pyetcd")
    watch_module = sys.modules[vendor_module.__name__ + ".watch"]
    client_class = vendor_module.MultiEndpointEtcd3Client
    watcher_property = inspect.getsource(client_class.watcher.fget)
    assert "self.get_watcher()" in watcher_property
    watcher_class = watch_module.Watcher
    assert "self._watch_stub.Watch(" in inspect.getsource(watcher_class._run)
    assert "self._watch_stub = " in inspect.getsource(watcher_class.__init__)
    assert "cancel" not in inspect.getsource(watcher_class.close)  # still only half-closes
    # _unbounded_request_queues: the bounded request queue, replaced per stream.
    assert "self._request_queue = queue.Queue(maxsize=10)" in inspect.getsource(
        watcher_class.__init__)
    assert "self._request_queue = queue.Queue(" in inspect.getsource(watcher_class._run)


def test_abandoned_watchers_cancel_their_stream() -> None:
    class Call:
        cancelled = 0

        def cancel(self) -> None:
            Call.cancelled += 1

    class Stub:
        def Watch(self, requests: Any) -> Call:
            return Call()

    class Watcher:
        closed = 0

        def __init__(self) -> None:
            self._watch_stub = Stub()

        def close(self) -> None:
            Watcher.closed += 1

    class Vendor:
        def get_watcher(self) -> Watcher:
            return Watcher()

    vendor = Vendor()
    assert cancel_abandoned_watches(vendor)
    assert not cancel_abandoned_watches(vendor)  # once
    watcher = vendor.get_watcher()
    watcher._watch_stub.Watch(iter(()))
    watcher._watch_stub.Watch(iter(()))
    watcher.close()
    assert (Watcher.closed, Call.cancelled) == (1, 2)
    watcher._watch_stub.Watch(iter(()))  # a thread that got there after the close
    assert Call.cancelled == 3
    assert not cancel_abandoned_watches(object())  # another layout: left alone


def test_watcher_request_queues_are_unbounded_also_after_the_thread_replaces_them() -> None:
    import queue

    class Watcher:
        def __init__(self) -> None:
            self._request_queue: queue.Queue[object] = queue.Queue(maxsize=10)

        def next_stream(self) -> None:  # what the vendor's thread does as its stream ends
            self._request_queue = queue.Queue(maxsize=10)

    watcher = Watcher()
    assert _unbounded_request_queues(watcher)
    assert isinstance(watcher, Watcher)
    first = watcher._request_queue
    for _ in range(20):
        first.put_nowait(None)  # queue.Full if still bounded
    watcher.next_stream()
    assert watcher._request_queue is not first
    for _ in range(20):
        watcher._request_queue.put_nowait(None)
    assert type(Watcher()) is Watcher  # only the watchers the client makes are changed
    assert not _unbounded_request_queues(object())  # another layout: left alone


def test_cancels_queued_on_a_stream_that_stopped_reading_never_block(
    etcd_member: Any,
) -> None:
    """Regression: pyetcd's watcher queues requests on a Queue(maxsize=10) that only its
    live stream drains, and puts on it with its lock held.  Ten cancels queued once the
    stream stopped reading (here: its request side ended, as the vendor's close() does;
    under load: the stream ended with cancels of many watches still queued) made the
    next put block for good -- that cancel, the client's close() and the watcher's
    thread hung (a stopped `kitsd watch` ignored Ctrl-C; a pyetcd_watch thread was left).
    """
    before = set(threading.enumerate())
    client = sd.etcd.connect(etcd_member.host, etcd_member.client_port)
    ids = [client.watch(f"/kitsd-test-queue/{i}/".encode(), 0, lambda item: None)
           for i in range(12)]
    watcher = client.vendor.watcher
    watcher._request_queue.put(None)  # the stream reads no more requests from now on
    done = threading.Event()

    def cancel_all_and_close() -> None:
        for watch_id in ids:
            client.cancel(watch_id)
        client.close()
        done.set()

    stopper = threading.Thread(target=cancel_all_and_close, daemon=True)
    stopper.start()
    # (Failing, this leaves the client and its threads: closing it would hang too.)
    assert done.wait(10), "cancel()/close() blocked on the watcher's full request queue"
    stopper.join(1)
    assert_no_new_threads(before)
