"""Tests for sd.etcd.instancer (against a real etcd) and the client boundary in sd.etcd.client.

Measured figures are printed with a ``FIGURE`` prefix (see them with ``-s``).
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from kitsd import lb, sd
from kitsd.compose.etcd import EtcdMember, ExternalEtcd
from kitsd.compose.process import free_ports
from kitsd.core.errors import (
    BackendError,
    MisuseError,
    PermissionDeniedError,
    RegistryUnavailableError,
)
from kitsd.sd.etcd.errors import compacted_revision, to_backend_error
from kitsd.sd.etcd.instancer import _running_watches
from kitsd.sd.event import Event
from tests.etcd.conftest import require_restartable
from tests.helpers import wait_for

pyetcd = pytest.importorskip("pyetcd")


class Recorder:
    """A subscriber that records every event (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    @property
    def last(self) -> Event:
        with self._lock:
            return self._events[-1]


def instances_are(handle: sd.InstancerHandle, *expected: str) -> Callable[[], bool]:
    want = tuple(sorted(expected))
    return lambda: handle.state.error is None and handle.state.instances == want


# ---------------------------------------------------------------------------
# the client boundary, without a server


class FakeStatus:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeRpcError(Exception):
    """Shaped like grpc.RpcError: code() and details()."""

    def __init__(self, code: str, details: str = "") -> None:
        super().__init__(details)
        self._code = FakeStatus(code)
        self._details = details

    def code(self) -> FakeStatus:
        return self._code

    def details(self) -> str:
        return self._details


def test_errors_map_to_the_kitsd_tree() -> None:
    unavailable = to_backend_error(FakeRpcError("UNAVAILABLE", "connection refused"), "watch")
    assert type(unavailable) is RegistryUnavailableError
    denied = to_backend_error(FakeRpcError("PERMISSION_DENIED", "etcdserver: denied"), "w")
    assert isinstance(denied, PermissionDeniedError)
    bad_password = FakeRpcError(
        "INVALID_ARGUMENT", "etcdserver: authentication failed, invalid user ID or password"
    )
    assert isinstance(to_backend_error(bad_password, "w"), PermissionDeniedError)
    assert isinstance(to_backend_error(FakeRpcError("UNAUTHENTICATED", "bad token"), "w"),
                      PermissionDeniedError)
    assert type(to_backend_error(ValueError("Trying to use a failed node"), "w")) \
        is RegistryUnavailableError
    # The vendor wraps gRPC errors raised while handling them; the mapping looks through.
    wrapped = pyetcd.Etcd3Exception()
    wrapped.__context__ = FakeRpcError("PERMISSION_DENIED", "nope")
    assert type(to_backend_error(wrapped, "w")) is PermissionDeniedError
    mine = RegistryUnavailableError("already mapped")
    assert to_backend_error(mine, "w") is mine


def test_an_unreachable_etcd_says_why() -> None:
    """A caller's first line said only "etcd unavailable" for a closed port."""
    refused = FakeRpcError("UNAVAILABLE", "failed to connect to all addresses; last error: "
                           "UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host: "
                           "Connection refused")
    assert str(to_backend_error(refused, "watch")) == \
        "watch: etcd unavailable (connection refused)"
    assert str(to_backend_error(FakeRpcError("DEADLINE_EXCEEDED", "Deadline Exceeded"), "w")) \
        == "w: etcd unavailable (no answer in time)"
    assert str(to_backend_error(FakeRpcError("UNAVAILABLE", "DNS resolution failed for "
                                             "nowhere.invalid:2379"), "w")) == \
        "w: etcd unavailable (host name not found)"
    assert str(to_backend_error(FakeRpcError(
        "UNAVAILABLE", "errors resolving nowhere.invalid:2379: [field:hostname lookup error:"
                       "address lookup failed for nowhere.invalid:2379: Domain name not "
                       "found]"), "w")) == "w: etcd unavailable (host name not found)"
    assert str(to_backend_error(ValueError("Trying to use a failed node"), "w")) == \
        "w: etcd unavailable"


def test_compaction_is_recognised() -> None:
    from pyetcd.exceptions import RevisionCompactedError

    assert compacted_revision(RevisionCompactedError(42)) == 42
    assert compacted_revision(ValueError("x")) is None
    assert compacted_revision(None) is None


def test_instancer_rejects_misuse() -> None:
    with pytest.raises(MisuseError):
        sd.etcd.EtcdInstancer(object(), "")
    with pytest.raises(TypeError, match="not an etcd client"):
        sd.etcd.EtcdInstancer(object(), "/svc/")


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"liveness_timeout": 0}, "liveness_timeout"),
     ({"liveness_timeout": -1.0}, "liveness_timeout"),
     ({"liveness_timeout": float("nan")}, "liveness_timeout"),
     ({"liveness_timeout": float("inf")}, "liveness_timeout"),
     ({"liveness_timeout": True}, "liveness_timeout"),
     ({"page_size": 0}, "page_size"),
     ({"page_size": 2.5}, "page_size")],
)
def test_bad_instancer_arguments_fail_before_anything_starts(
    kwargs: dict[str, Any], name: str, no_thread_leaks: None
) -> None:
    threads_before = threading.active_count()
    client = pyetcd.client("127.0.0.1", free_ports(1)[0])
    try:
        with pytest.raises(MisuseError, match=name):
            sd.etcd.EtcdInstancer(client, "/svc/", **kwargs)
        assert _running_watches() == 0, "a shared-watch entry was left behind"
        assert threading.active_count() == threads_before
    finally:
        client.close()


def test_sd_etcd_imports_without_client_libraries() -> None:
    code = (
        "import sys\n"
        "sys.modules['pyetcd'] = None\n"
        "sys.modules['etcd3'] = None\n"
        "from kitsd import sd\nimport kitsd.sd.etcd\n"
        "assert 'grpc' not in sys.modules, 'grpc imported eagerly'\n"
        "try:\n"
        "    sd.etcd.connect()\n"
        "except ValueError as error:\n"
        "    assert 'pip install' in str(error), error\n"
        "else:\n"
        "    raise SystemExit('connect() without a client library must raise')\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.integration
def test_connect_falls_back_to_the_etcd3_module(
    monkeypatch: pytest.MonkeyPatch, etcd_member: EtcdMember | ExternalEtcd, prefix: str
) -> None:
    """Without pyetcd, connect() uses ``etcd3``: the multi-endpoint layout of
    python-etcd3 0.12 and the single ``etcd3.client()`` of older releases (both
    stood in for here by pyetcd, the fork that shares their API)."""
    monkeypatch.setitem(sys.modules, "pyetcd", None)
    old_style = types.ModuleType("etcd3")
    old_style.client = pyetcd.client  # type: ignore[attr-defined]
    for module in (pyetcd, old_style):
        monkeypatch.setitem(sys.modules, "etcd3", module)
        client = sd.etcd.connect(etcd_member.host, etcd_member.client_port)
        try:
            client.put(f"{prefix}a", "10.0.0.1:80")
            with sd.etcd.EtcdInstancer(client, prefix) as instancer:
                wait_for(instances_are(instancer, "10.0.0.1:80"), 5, f"a read via {module}")
        finally:
            sd.etcd.close_client(client)
    with pytest.raises(MisuseError, match="fail over"):
        sd.etcd.connect(endpoints=["127.0.0.1:1", "127.0.0.1:2"])


# ---------------------------------------------------------------------------
# without a server: errors as data, prompt stop


def _dead_endpoint() -> tuple[str, int]:
    return "127.0.0.1", free_ports(1)[0]


def test_unreachable_etcd_is_an_error_event_and_stop_is_prompt(
    no_thread_leaks: None, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = _dead_endpoint()
    client = pyetcd.client(host, port)  # the user's own client, vendor defaults
    caplog.set_level(logging.WARNING, logger="kitsd.sd.etcd.instancer")
    retry = re.compile(r"retrying in ([0-9.]+)s")

    def longest_wait() -> float:
        waits = [float(m.group(1)) for r in caplog.records if (m := retry.search(r.getMessage()))]
        return max(waits, default=0.0)

    try:
        instancer = sd.etcd.EtcdInstancer(client, "/svc/")
        recorder = Recorder()
        instancer.subscribe(recorder)
        wait_for(lambda: instancer.state.error is not None, 5, "an error event")
        error = instancer.state.error
        assert isinstance(error, RegistryUnavailableError)
        assert isinstance(error, BackendError)
        assert error.__cause__ is not None
        assert type(error.__cause__).__module__.split(".")[0] in {"pyetcd", "grpc", "builtins"}
        assert instancer.state.instances == ()
        # Let the backoff grow past a second, then stop in the middle of that wait.
        wait_for(lambda: longest_wait() > 1.0, 15, "a backoff longer than 1 s")
        started = time.monotonic()
        instancer.stop()
        elapsed = time.monotonic() - started
        print(f"FIGURE stop latency during a {longest_wait():.2f}s backoff:"
              f" {elapsed * 1000:.1f} ms")
        assert elapsed < 1.0
        assert _running_watches() == 0
        # The same error is not re-sent to subscribers on every retry.
        errors = [event for event in recorder.events if event.error is not None]
        assert 1 <= len(errors) <= 2
    finally:
        client.close()


# ---------------------------------------------------------------------------
# against a real etcd


@pytest.mark.integration
def test_reads_then_watches(client: Any, prefix: str) -> None:
    client.put(f"{prefix}a", "10.0.0.1:80")
    client.put(f"{prefix}b", "10.0.0.2:80")
    client.put(f"{prefix.rstrip('/')}-sibling/x", "10.9.9.9:1")  # same string prefix, other dir
    with sd.etcd.EtcdInstancer(client, prefix) as instancer:
        assert isinstance(instancer, sd.Instancer)
        recorder = Recorder()
        instancer.subscribe(recorder)
        wait_for(instances_are(instancer, "10.0.0.1:80", "10.0.0.2:80"), 5, "the initial read")
        client.put(f"{prefix}c", "10.0.0.3:80")
        client.delete(f"{prefix}a")
        wait_for(instances_are(instancer, "10.0.0.2:80", "10.0.0.3:80"), 5, "watched changes")
        assert all(event.error is None for event in recorder.events)
        snapshots = [event.instances for event in recorder.events]
        assert len(snapshots) == len(set(snapshots)), "an unchanged state was re-sent"
        assert "EtcdInstancer" in repr(instancer)
        assert prefix in repr(instancer)


@pytest.mark.integration
def test_the_first_event_is_the_prefix_as_read_never_an_empty_set(
    client: Any, prefix: str
) -> None:
    """Issue 15.4: ``Event(())`` came first, then the real set 10-30 ms later."""
    client.put(f"{prefix}a", "10.0.0.1:80")
    for _ in range(5):  # a fresh watch each time
        with sd.etcd.EtcdInstancer(client, prefix) as instancer:
            recorder = Recorder()
            instancer.subscribe(recorder)
            assert recorder.events == [Event(("10.0.0.1:80",))]
    with sd.etcd.EtcdInstancer(client, prefix) as instancer, \
            sd.Endpointer(instancer, lambda instance: lambda request: instance) as endpointer:
        # built and called at once: no NoEndpointsError
        assert lb.RoundRobin(endpointer).endpoint()(None) == "10.0.0.1:80"
        assert endpointer.answered
        assert endpointer.error is None


@pytest.mark.integration
def test_an_empty_prefix_is_answered_as_empty(client: Any, prefix: str) -> None:
    with sd.etcd.EtcdInstancer(client, prefix) as instancer, \
            sd.Endpointer(instancer, lambda instance: lambda request: instance) as endpointer:
        assert instancer.answered
        assert endpointer.answered
        assert endpointer.instances == ()


def test_an_unreachable_etcd_is_the_first_event_not_an_empty_set(no_thread_leaks: None) -> None:
    host, port = _dead_endpoint()
    client = sd.etcd.connect(host, port, timeout=1)
    try:
        with sd.etcd.EtcdInstancer(client, "/svc/") as instancer:
            recorder = Recorder()
            instancer.subscribe(recorder)
            first = recorder.events[0]
            assert isinstance(first.error, RegistryUnavailableError), recorder.events
            assert first.instances == ()
            with sd.Endpointer(instancer, lambda i: lambda r: i) as endpointer:
                assert not endpointer.answered
                assert isinstance(endpointer.error, RegistryUnavailableError)
    finally:
        sd.etcd.close_client(client)


@pytest.mark.integration
def test_subscribers_share_one_watch(client: Any, prefix: str) -> None:
    first = sd.etcd.EtcdInstancer(client, prefix)
    second = sd.etcd.EtcdInstancer(client, prefix)
    try:
        assert _running_watches() == 1
        seen_first, seen_second = Recorder(), Recorder()
        first.subscribe(seen_first)
        second.subscribe(seen_second)
        client.put(f"{prefix}a", "10.0.0.1:80")
        for handle in (first, second):
            wait_for(instances_are(handle, "10.0.0.1:80"), 5, "the change on every handle")
        first.stop()
        assert _running_watches() == 1
        client.put(f"{prefix}b", "10.0.0.2:80")
        wait_for(instances_are(second, "10.0.0.1:80", "10.0.0.2:80"), 5, "changes after one stop")
        assert seen_first.last.instances == ("10.0.0.1:80",), "a stopped handle got an event"
    finally:
        first.stop()
        second.stop()
    assert _running_watches() == 0


@pytest.mark.integration
def test_bad_values_are_skipped_and_the_watch_goes_on(
    client: Any, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="kitsd.sd.etcd.revision")
    client.put(f"{prefix}bad-utf8", b"\xff\xfe\xfd")
    with sd.etcd.EtcdInstancer(client, prefix) as instancer:
        client.put(f"{prefix}no-port", "just-a-host")
        client.put(f"{prefix}good", "10.0.0.1:80")
        wait_for(instances_are(instancer, "10.0.0.1:80"), 5, "the good value")
        client.put(f"{prefix}good2", "10.0.0.2:80")
        wait_for(instances_are(instancer, "10.0.0.1:80", "10.0.0.2:80"), 5, "later changes")
    messages = "\n".join(record.getMessage() for record in caplog.records)
    assert "bad-utf8" in messages
    assert "UTF-8" in messages
    assert "no-port" in messages
    assert "no port" in messages


@pytest.mark.integration
def test_go_kit_url_values_are_served_and_the_rest_refused_for_the_true_reason(
    client: Any, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 15.4: ``http://1.2.3.4:8080`` (go-kit's etcd documentation) was skipped as
    "IPv6 hosts must be in brackets"."""
    caplog.set_level(logging.WARNING, logger="kitsd.sd.etcd.revision")
    client.put(f"{prefix}a", "http://10.0.0.1:8080")
    client.put(f"{prefix}b", "https://10.0.0.2:8443/")
    client.put(f"{prefix}c", "10.0.0.3:80")
    client.put(f"{prefix}no-port", "http://10.0.0.9")
    client.put(f"{prefix}path", "http://10.0.0.9:80/api")
    client.put(f"{prefix}creds", "http://u:S3CRET@10.0.0.9:80")
    with sd.etcd.EtcdInstancer(client, prefix) as instancer:
        assert instancer.state == Event(("10.0.0.1:8080", "10.0.0.2:8443", "10.0.0.3:80"))
        client.put(f"{prefix}d", "http://10.0.0.4:8080")  # a watched change, same form
        wait_for(instances_are(instancer, "10.0.0.1:8080", "10.0.0.2:8443", "10.0.0.3:80",
                               "10.0.0.4:8080"), 5, "the watched URL value")
    messages = "\n".join(record.getMessage() for record in caplog.records)
    assert "IPv6" not in messages
    assert "without a port" in messages
    assert "with a path" in messages
    assert "user information" in messages
    assert "S3CRET" not in messages


@pytest.mark.integration
def test_stop_while_watching_is_prompt_and_leaves_no_thread(
    no_thread_leaks: None, etcd_member: EtcdMember | ExternalEtcd, prefix: str
) -> None:
    client = sd.etcd.connect(etcd_member.host, etcd_member.client_port)
    try:
        instancer = sd.etcd.EtcdInstancer(client, prefix)
        client.put(f"{prefix}a", "10.0.0.1:80")
        wait_for(instances_are(instancer, "10.0.0.1:80"), 5, "the watch to run")
        started = time.monotonic()
        instancer.stop()
        elapsed = time.monotonic() - started
        instancer.stop()  # idempotent
        print(f"FIGURE stop latency while watching: {elapsed * 1000:.1f} ms")
        assert elapsed < 1.0
        assert not [t for t in threading.enumerate() if t.name.startswith("kitsd-etcd")]
    finally:
        sd.etcd.close_client(client)


@pytest.mark.integration
def test_restart_recovers_within_seconds_with_the_users_own_client(
    etcd_member: EtcdMember | ExternalEtcd,
    user_client: Any,
    client: Any,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A plain pyetcd client marks the endpoint failed for 300 s on the first error;
    the instancer must not stay blind that long."""
    require_restartable(etcd_member)
    caplog.set_level(logging.DEBUG, logger="kitsd.sd.etcd.adapter")
    assert isinstance(etcd_member, EtcdMember)
    user_client.put(f"{prefix}a", "10.0.0.1:80")
    with sd.etcd.EtcdInstancer(user_client, prefix) as instancer:
        recorder = Recorder()
        instancer.subscribe(recorder)
        wait_for(instances_are(instancer, "10.0.0.1:80"), 5, "the initial read")
        etcd_member.kill()  # a crash: the port closes at once
        wait_for(lambda: instancer.state.error is not None, 5, "the outage to be reported")
        # A call of the user's own during the outage marks the endpoint failed for 300 s.
        with pytest.raises(Exception):  # noqa: B017 - the vendor's connection error
            user_client.get(f"{prefix}a")
        assert user_client.endpoints[etcd_member.endpoint].is_failed()
        outage = instancer.state
        assert isinstance(outage.error, RegistryUnavailableError)
        assert outage.error.__cause__ is not None
        assert outage.instances == ("10.0.0.1:80",), "the last instances are kept"
        etcd_member.start()
        etcd_member.wait_healthy()
        healthy_at = time.monotonic()
        client.put(f"{prefix}b", "10.0.0.2:80")  # a change made after the restart
        wait_for(instances_are(instancer, "10.0.0.1:80", "10.0.0.2:80"), 15, "recovery")
        recovery = time.monotonic() - healthy_at
        print(f"FIGURE recovery after an etcd restart (user's own client): {recovery:.2f} s")
        assert recovery < 10.0
        assert any("cleared the failed mark" in r.getMessage() for r in caplog.records)
        # The user's client works again too (its failed mark was cleared).
        assert user_client.get(f"{prefix}a")[0] == b"10.0.0.1:80"


class GatedClient:
    """A real client with a switch that takes its watches down (and keeps them down).

    Not a fake etcd: every call goes to the real server.  ``close_gate()``
    cancels the live watches and tells their callbacks the stream broke, and
    new watches are refused until ``open_gate()``, so the test controls when
    the instancer's watch is away while the prefix changes and history is
    compacted.
    """

    def __init__(self, real: Any) -> None:
        self.real = real
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._watches: dict[Any, Callable[[object], object]] = {}
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def add_watch_prefix_callback(self, key: str, callback: Callable[[object], object],
                                  **kwargs: Any) -> Any:
        if not self._open.is_set():
            with self._lock:
                self.refused += 1
            raise ConnectionError("watch refused while the gate is closed (test)")
        watch_id = self.real.add_watch_prefix_callback(key, callback, **kwargs)
        with self._lock:
            self._watches[watch_id] = callback
        return watch_id

    def cancel_watch(self, watch_id: Any) -> Any:
        with self._lock:
            self._watches.pop(watch_id, None)
        return self.real.cancel_watch(watch_id)

    def close_gate(self) -> None:
        self._open.clear()
        with self._lock:
            watches, self._watches = dict(self._watches), {}
        for watch_id, callback in watches.items():
            self.real.cancel_watch(watch_id)
            callback(ConnectionError("watch stream broken (test)"))

    def open_gate(self) -> None:
        self._open.set()


@pytest.mark.integration
def test_compaction_while_the_watch_is_down_forces_a_reread(
    client: Any, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kitsd.sd.etcd.revision")
    gated = GatedClient(client.vendor)
    client.put(f"{prefix}a", "10.0.0.1:80")
    client.put(f"{prefix}b", "10.0.0.2:80")
    with sd.etcd.EtcdInstancer(cast(Any, gated), prefix) as instancer:
        wait_for(instances_are(instancer, "10.0.0.1:80", "10.0.0.2:80"), 5, "the initial read")
        gated.close_gate()
        wait_for(lambda: instancer.state.error is not None, 5, "the broken watch to be reported")
        wait_for(lambda: gated.refused >= 1, 5, "a refused reconnect")
        # While the watch is away: a delete, an add, a change -- then history is compacted.
        client.delete(f"{prefix}a")
        client.put(f"{prefix}c", "10.0.0.3:80")
        client.put(f"{prefix}b", "10.0.0.20:80")
        revision = client.put(f"{prefix}c", "10.0.0.30:80")
        client.vendor.compact(revision, physical=True)
        assert instancer.state.instances == ("10.0.0.1:80", "10.0.0.2:80"), "no watch, no news"
        gated.open_gate()
        wait_for(instances_are(instancer, "10.0.0.20:80", "10.0.0.30:80"), 10, "the re-read")
        messages = "\n".join(record.getMessage() for record in caplog.records)
        assert "compacted" in messages, "the re-read must come from the compaction"
        # The watch continues after the re-read.
        client.put(f"{prefix}d", "10.0.0.4:80")
        wait_for(instances_are(instancer, "10.0.0.20:80", "10.0.0.30:80", "10.0.0.4:80"), 5,
                 "changes after the re-read")


@pytest.mark.integration
def test_a_resumed_watch_gets_the_changes_made_while_it_was_down(client: Any, prefix: str) -> None:
    gated = GatedClient(client.vendor)
    with sd.etcd.EtcdInstancer(cast(Any, gated), prefix) as instancer:
        recorder = Recorder()
        instancer.subscribe(recorder)
        client.put(f"{prefix}a", "10.0.0.1:80")
        wait_for(instances_are(instancer, "10.0.0.1:80"), 5, "the first change")
        gated.close_gate()
        wait_for(lambda: gated.refused >= 1, 5, "a refused reconnect")
        # Each state is distinct, so a lost or repeated change shows in the snapshots.
        client.put(f"{prefix}b", "10.0.0.2:80")
        client.delete(f"{prefix}a")
        client.put(f"{prefix}c", "10.0.0.3:80")
        gated.open_gate()
        wait_for(instances_are(instancer, "10.0.0.2:80", "10.0.0.3:80"), 10, "the resumed watch")
        good = [event.instances for event in recorder.events if event.error is None]
        allowed = [
            (),
            ("10.0.0.1:80",),
            ("10.0.0.1:80", "10.0.0.2:80"),
            ("10.0.0.2:80",),
            ("10.0.0.2:80", "10.0.0.3:80"),
        ]
        positions = [allowed.index(snapshot) for snapshot in good]
        assert positions == sorted(positions), f"snapshots out of order: {good}"


@pytest.fixture
def stoppable_instancer(client: Any, prefix: str) -> Iterator[sd.etcd.EtcdInstancer]:
    instancer = sd.etcd.EtcdInstancer(client, prefix)
    yield instancer
    instancer.stop()


@pytest.mark.integration
def test_a_subscriber_may_stop_the_instancer_from_its_callback(
    client: Any, prefix: str, stoppable_instancer: sd.etcd.EtcdInstancer
) -> None:
    stopped = threading.Event()

    def stop_on_first_instance(event: Event) -> None:
        if event.instances:
            stoppable_instancer.stop()
            stopped.set()

    stoppable_instancer.subscribe(stop_on_first_instance)
    client.put(f"{prefix}a", "10.0.0.1:80")
    assert stopped.wait(5)
    wait_for(lambda: _running_watches() == 0, 5, "the watch thread to end")
    wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith("kitsd-etcd")],
             5, "no kitsd thread")


# ---------------------------------------------------------------------------
# a prefix larger than the client accepts (issue 7.2)

MIB = 1 << 20


@pytest.mark.integration
def test_a_prefix_larger_than_4_mib_is_read_in_pages_and_junk_skipped(
    client: Any, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Five 1 MiB junk values make one range read over grpcio's 4 MiB limit
    (RESOURCE_EXHAUSTED); the instancer must still serve the good instances."""
    caplog.set_level(logging.WARNING)
    client.put(f"{prefix}a-good", "10.0.0.1:80")
    for index in range(5):
        client.put(f"{prefix}junk{index}", b"x" * MIB)
    client.put(f"{prefix}z-good", "10.0.0.2:80")
    with sd.etcd.EtcdInstancer(client, prefix) as instancer:
        wait_for(instances_are(instancer, "10.0.0.1:80", "10.0.0.2:80"), 15, "the good values")
        client.put(f"{prefix}m-good", "10.0.0.3:80")
        wait_for(instances_are(instancer, "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"), 5,
                 "a watched change after the paged read")
    messages = [record.getMessage() for record in caplog.records]
    assert any("junk0" in message for message in messages), "the bad entries are named"
    assert max(len(message) for message in messages) < 2_000, "values are truncated in logs"


@pytest.mark.integration
def test_a_reread_after_compaction_over_a_huge_prefix_is_not_stale(
    client: Any, prefix: str
) -> None:
    gated = GatedClient(client.vendor)
    client.put(f"{prefix}a", "10.0.0.1:80")
    with sd.etcd.EtcdInstancer(cast(Any, gated), prefix) as instancer:
        wait_for(instances_are(instancer, "10.0.0.1:80"), 5, "the initial read")
        gated.close_gate()
        wait_for(lambda: gated.refused >= 1, 5, "a refused reconnect")
        for index in range(5):
            client.put(f"{prefix}junk{index}", b"\xff" * MIB)
        revision = client.put(f"{prefix}b", "10.0.0.2:80")
        client.vendor.compact(revision, physical=True)
        gated.open_gate()
        wait_for(instances_are(instancer, "10.0.0.1:80", "10.0.0.2:80"), 15,
                 "the re-read after compaction")


@pytest.mark.integration
def test_the_real_error_is_named_when_a_read_is_too_large(client: Any, prefix: str) -> None:
    for index in range(5):
        client.put(f"{prefix}junk{index}", b"x" * MIB)
    with pytest.raises(Exception) as raised:
        client.read_prefix(prefix.encode())
    mapped = to_backend_error(raised.value, "reading")
    assert "RESOURCE_EXHAUSTED" in str(mapped)
    assert "unavailable" not in str(mapped)
