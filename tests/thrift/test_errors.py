"""The error tree, the failure rules and the deadline rules of sd.thrift."""

from __future__ import annotations

from typing import Any

import pytest

from kitsd.core.errors import ConnectionFailure, KitsdError, MisuseError
from kitsd.lb.outlier_detection import is_counted_error
from kitsd.sd import thrift
from kitsd.sd.thrift._errors import application_error_name, failure
from kitsd.sd.thrift._options import Options

INSTANCE, M = "10.0.0.7:9090", "Store.get"


def test_tree() -> None:
    for kind in (thrift.ThriftConnectError, thrift.ThriftTimeout, thrift.ThriftConnectionLost,
                 thrift.ThriftProtocolError, thrift.ThriftApplicationError):
        assert issubclass(kind, thrift.ThriftError)
        assert issubclass(kind, KitsdError)
    assert issubclass(thrift.ThriftTimeout, TimeoutError)
    assert issubclass(thrift.ThriftConnectTimeout, thrift.ThriftConnectError)
    assert issubclass(thrift.ThriftConnectTimeout, TimeoutError)


@pytest.mark.parametrize(("phase", "error", "connect_timeout", "kind", "connection_failure",
                          "sent"), [
    ("connect", ConnectionRefusedError(111, "Connection refused"), False,
     thrift.ThriftConnectError, True, None),
    ("connect", TimeoutError(), True, thrift.ThriftConnectTimeout, True, False),
    ("connect", TimeoutError(), False, thrift.ThriftTimeout, False, False),
    ("write", BrokenPipeError(32, "Broken pipe"), False, thrift.ThriftConnectError, True, None),
    ("write", TimeoutError(), False, thrift.ThriftTimeout, False, False),
    ("read", TimeoutError(), False, thrift.ThriftTimeout, False, True),
    ("read", ConnectionResetError(104, "Connection reset by peer"), False,
     thrift.ThriftConnectionLost, False, None),
    ("read", None, False, thrift.ThriftConnectionLost, False, None),
])
def test_failure_rules(phase: Any, error: BaseException | None, connect_timeout: bool,
                       kind: type[thrift.ThriftError], connection_failure: bool,
                       sent: bool | None) -> None:
    result = failure(INSTANCE, M, phase, error, bound="the retry deadline",
                     connect_timeout=connect_timeout)
    assert type(result) is kind
    assert isinstance(result, ConnectionFailure) is connection_failure
    assert result.instance == INSTANCE
    assert result.method == M
    assert str(result).startswith(f"Thrift {M} on {INSTANCE}: ")
    if sent is not None:
        assert isinstance(result, thrift.ThriftTimeout)
        assert result.sent is sent
        assert result.phase == phase


def test_messages() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    assert str(failure(INSTANCE, M, "connect", refused, bound="x")) == \
        f"Thrift {M} on {INSTANCE}: cannot connect: Connection refused"
    broken = BrokenPipeError(32, "Broken pipe")
    assert "it was not sent" in str(failure(INSTANCE, M, "write", broken, bound="x"))
    assert str(failure(INSTANCE, M, "read", TimeoutError(), bound="timeout=2s")) == \
        f"Thrift {M} on {INSTANCE}: timeout=2s passed while waiting for the reply"
    assert "the connection was closed after the request was sent" in str(
        failure(INSTANCE, M, "read", None, bound="x"))


def test_what_outlier_detection_counts() -> None:
    """Timeouts count as an instance answering badly; application errors do not."""
    assert is_counted_error(failure(INSTANCE, M, "read", TimeoutError(), bound="x"))
    assert not is_counted_error(thrift.ThriftApplicationError(INSTANCE, M, 6, "boom"))
    assert not isinstance(thrift.ThriftApplicationError(INSTANCE, M, 6, "boom"), ConnectionFailure)


def test_application_error_names() -> None:
    assert application_error_name(6) == "INTERNAL_ERROR"
    assert application_error_name(99) == "TYPE_99"
    long = thrift.ThriftApplicationError(INSTANCE, M, 0, "x" * 500)
    assert len(str(long)) < 250


def _options(store: Any, **given: Any) -> Options:
    settings: dict[str, Any] = {"transport": "buffered", "protocol": "binary", "timeout": None,
                                "connect_timeout": None, "max_idle": 4, "idle_timeout": None,
                                "max_frame_size": 100, **given}
    return Options(store.Store, "echo", **settings)


def test_deadline_rules(store: Any) -> None:
    assert _options(store).deadline(None, 100.0).at is None
    retry = _options(store).deadline(105.0, 100.0)
    assert (retry.at, retry.what) == (105.0, "the retry deadline")
    own = _options(store, timeout=2).deadline(None, 100.0)
    assert (own.at, own.what) == (102.0, "timeout=2s")
    assert _options(store, timeout=2).deadline(101.0, 100.0).at == 101.0  # earlier wins
    assert _options(store, timeout=2).deadline(150.0, 100.0).at == 102.0


def test_connect_wait(store: Any) -> None:
    deadline = _options(store).deadline(105.0, 100.0)
    assert _options(store).connect_wait(deadline, 101.0) == (4.0, "the retry deadline", False)
    assert _options(store, connect_timeout=1).connect_wait(deadline, 101.0) == (
        1.0, "connect_timeout=1s", True)
    assert _options(store, connect_timeout=9).connect_wait(deadline, 101.0)[2] is False
    unbounded = _options(store).deadline(None, 100.0)
    assert _options(store).connect_wait(unbounded, 100.0) == (None, "no deadline", False)


@pytest.mark.parametrize(("name", "value"), [
    ("timeout", 0), ("timeout", float("inf")), ("timeout", "1"), ("connect_timeout", -1),
    ("idle_timeout", float("nan")), ("max_idle", -1), ("max_idle", 1.5), ("max_idle", True),
])
def test_option_checks_name_the_argument(store: Any, name: str, value: object) -> None:
    with pytest.raises(MisuseError, match=name):
        _options(store, **{name: value})
