"""The etcd watch loop against scripted clients (no server): the protocol of
sd.etcd.client is small enough to fake, so odd answers are easy to produce."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from kitsd import sd
from kitsd.core.errors import RegistryUnavailableError
from kitsd.sd.etcd.client import Compacted, RangePage, WatchBatch, WatchCallback
from kitsd.sd.etcd.instancer import _running_watches
from kitsd.sd.etcd.revision import KeyValue, WatchEvent
from tests.helpers import wait_for


class Status:
    def __init__(self, name: str) -> None:
        self.name = name


class RpcError(Exception):
    """Shaped like grpc.RpcError."""

    def __init__(self, code: str, details: str = "") -> None:
        super().__init__(details)
        self._code = Status(code)
        self._details = details

    def code(self) -> Status:
        return self._code

    def details(self) -> str:
        return self._details


class Scripted:
    """An EtcdReader (and Reconnecting) whose answers the test controls."""

    def __init__(self, kvs: dict[bytes, bytes]) -> None:
        self.kvs = dict(sorted(kvs.items()))
        self.revision = 10
        self.lock = threading.Lock()
        self.reads = 0
        self.read_error: BaseException | None = None
        self.hang = threading.Event()  # set: reads block until their timeout, then fail
        self.max_keys_per_answer = 10**9
        self.callbacks: dict[int, WatchCallback] = {}
        self.next_id = 1
        self.wake_at_once = False

    # EtcdReader
    def read_prefix(self, prefix: bytes, *, after: bytes | None = None, revision: int = 0,
                    limit: int = 0, keys_only: bool = False,
                    timeout: float | None = None) -> RangePage:
        with self.lock:
            self.reads += 1
            error = self.read_error
        if self.hang.is_set():
            time.sleep(timeout or 0)
            raise RpcError("DEADLINE_EXCEEDED", "Deadline Exceeded")
        if error is not None:
            raise error
        keys = [k for k in self.kvs if k.startswith(prefix) and (after is None or k > after)]
        chosen = keys[:limit] if limit else keys
        if not keys_only and len(chosen) > self.max_keys_per_answer:
            raise RpcError("RESOURCE_EXHAUSTED", "Received message larger than max")
        kvs = tuple(KeyValue(k, b"" if keys_only else self.kvs[k], 1) for k in chosen)
        return RangePage(kvs, self.revision, len(keys) > len(chosen))

    def watch(self, prefix: bytes, start_revision: int, callback: WatchCallback) -> object:
        with self.lock:
            watch_id = self.next_id
            self.next_id += 1
            self.callbacks[watch_id] = callback
        return watch_id

    def cancel(self, watch_id: object) -> None:
        with self.lock:
            self.callbacks.pop(watch_id, None)  # type: ignore[call-overload]

    # Reconnecting
    def recover(self, error: BaseException | None) -> None:
        return None

    def wait_connected(self, timeout: float, wake: threading.Event) -> None:
        if self.wake_at_once:
            wake.set()  # "the connection is back" -- every single time
        wake.wait(timeout)

    def send(self, item: Any) -> None:
        with self.lock:
            callbacks = list(self.callbacks.values())
        for callback in callbacks:
            callback(item)


def test_a_scripted_client_drives_read_watch_and_compaction() -> None:
    client = Scripted({b"/s/a": b"10.0.0.1:80"})
    with sd.etcd.EtcdInstancer(client, "/s/") as instancer:
        wait_for(lambda: instancer.state.instances == ("10.0.0.1:80",), 5, "the read")
        wait_for(lambda: bool(client.callbacks), 5, "the watch")
        client.send(WatchBatch((WatchEvent("put", b"/s/b", 11, b"10.0.0.2:80"),), 11))
        wait_for(lambda: instancer.state.instances == ("10.0.0.1:80", "10.0.0.2:80"), 5,
                 "a watched put")
        client.kvs = {b"/s/c": b"10.0.0.3:80"}
        client.send(Compacted(20))
        wait_for(lambda: instancer.state.instances == ("10.0.0.3:80",), 5, "the re-read")
    assert _running_watches() == 0


def test_oversized_answers_are_paged_and_served() -> None:
    client = Scripted({f"/s/{i:03d}".encode(): f"10.0.0.{i}:80".encode() for i in range(1, 41)})
    client.max_keys_per_answer = 7  # as if grpcio refused anything larger
    with sd.etcd.EtcdInstancer(client, "/s/", page_size=100) as instancer:
        wait_for(lambda: len(instancer.state.instances) == 40, 5, "every instance, in pages")
        assert instancer.state.error is None


def test_a_hung_connection_is_reported_within_the_liveness_timeout() -> None:
    client = Scripted({b"/s/a": b"10.0.0.1:80"})
    with sd.etcd.EtcdInstancer(client, "/s/", liveness_timeout=0.4) as instancer:
        wait_for(lambda: instancer.state.instances == ("10.0.0.1:80",), 5, "the read")
        wait_for(lambda: bool(client.callbacks), 5, "the watch")
        client.hang.set()
        hung_at = time.monotonic()
        wait_for(lambda: instancer.state.error is not None, 5, "an error event")
        assert time.monotonic() - hung_at < 0.4 + 0.5
        assert isinstance(instancer.state.error, RegistryUnavailableError)
        assert "liveness" in str(instancer.state.error)
        client.hang.clear()
        wait_for(lambda: instancer.state.error is None, 5, "recovery")


def test_no_hot_loop_when_the_connection_keeps_coming_back_but_calls_fail() -> None:
    """A server that accepts connections and fails every call: early wake-ups must not
    turn the backoff into a loop (at most one early attempt per backoff step)."""
    client = Scripted({})
    client.read_error = RpcError("UNAVAILABLE", "etcdserver: no leader")
    client.wake_at_once = True
    with sd.etcd.EtcdInstancer(client, "/s/") as instancer:
        wait_for(lambda: instancer.state.error is not None, 5, "the error")
        time.sleep(2.0)  # the observation window of a rate, not synchronisation
        reads = client.reads
    # Without the guard this is thousands; the plain backoff alone makes ~7 in 2 s.
    assert reads <= 20, f"{reads} reads in 2 s"


@pytest.mark.parametrize("value", [b"x" * 1_000_000, b"\xff" * 1_000_000])
def test_a_huge_junk_value_is_skipped_with_a_short_warning(
    value: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.WARNING)
    client = Scripted({b"/s/a": b"10.0.0.1:80", b"/s/junk": value})
    with sd.etcd.EtcdInstancer(client, "/s/") as instancer:
        wait_for(lambda: instancer.state.instances == ("10.0.0.1:80",), 5, "the good value")
    assert any("junk" in record.getMessage() for record in caplog.records)
    assert max(len(record.getMessage()) for record in caplog.records) < 1000
