"""ThreadedService: the same lifecycle on a thread (gunicorn's master, threaded servers)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import pytest

from kitsd.core.errors import MisuseError
from kitsd.serve import Phase, ThreadedService
from tests.helpers import wait_for
from tests.serve.fakes import ScriptedRegistrar

pytestmark = pytest.mark.usefixtures("no_thread_leaks")


def test_registers_when_ready_drains_and_reports_each_change() -> None:
    changes: list[tuple[Phase, bool]] = []
    gone = threading.Event()
    registrar = ScriptedRegistrar()
    with ThreadedService(registrar, self_check=False, signals=(), margin=0.2,
                         probe=gone.is_set, on_change=lambda *c: changes.append(c)) as service:
        time.sleep(0.05)
        assert registrar.names() == []
        service.ready()
        wait_for(lambda: service.registered, what="registration")
        service.shutdown()
        wait_for(lambda: "deregister" in registrar.names(), what="deregistration")
        assert service.draining
        assert not service.wait_released(0.2)  # the registry still shows it
        gone.set()
        gone_at = time.monotonic()
        assert service.wait_released(5)
        assert time.monotonic() - gone_at >= 0.2
        assert service.reason == "gone"
    assert registrar.names() == ["register", "deregister"]
    assert (Phase.SERVING, True) in changes
    assert (Phase.DRAINING, False) in changes
    assert changes[-1] == (Phase.RELEASED, False)


def test_registry_down_at_startup_is_retried() -> None:
    registrar = ScriptedRegistrar(fail_registers=2)
    with ThreadedService(registrar, self_check=False, signals=()) as service:
        service.ready()
        wait_for(lambda: service.registered, what="registration after two failures")
    assert registrar.names() == ["register"] * 3 + ["deregister"]


def test_second_shutdown_cuts_and_a_hung_deregistration_is_bounded() -> None:
    hold = threading.Event()
    registrar = ScriptedRegistrar(on_deregister=lambda: hold.wait(5))
    service = ThreadedService(registrar, self_check=False, signals=(), drain=60)
    service.start()
    try:
        service.ready()
        wait_for(lambda: service.registered, what="registration")
        service.shutdown()
        time.sleep(0.1)
        started = time.monotonic()
        service.shutdown()
        assert service.wait_released(2)
        assert service.reason == "cut"
        assert time.monotonic() - started < 1
    finally:
        hold.set()
        service.close()
    assert not registrar.registered


def test_deadline() -> None:
    registrar = ScriptedRegistrar()
    with ThreadedService(registrar, self_check=False, signals=(), drain=0.3,
                         probe=lambda: False) as service:
        service.ready()
        wait_for(lambda: service.registered, what="registration")
        service.shutdown()
        assert service.wait_released(3)
        assert service.reason == "deadline"


@pytest.fixture
def sigterm_handler() -> Iterator[list[int]]:
    before = signal.getsignal(signal.SIGTERM)
    forwarded: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: forwarded.append(signum))
    yield forwarded
    signal.signal(signal.SIGTERM, before)


def test_sigterm_drains_then_is_handed_on(sigterm_handler: list[int]) -> None:
    registrar = ScriptedRegistrar()
    with ThreadedService(registrar, self_check=False, margin=0.1) as service:
        service.ready()
        wait_for(lambda: service.registered, what="registration")
        signal.raise_signal(signal.SIGTERM)
        assert service.wait_released(5)
        assert service.reason == "gone"
        wait_for(lambda: sigterm_handler == [signal.SIGTERM], what="the signal handed on")
    assert signal.getsignal(signal.SIGTERM) != service._on_signal


def test_bad_options() -> None:
    with pytest.raises(MisuseError, match="margin"):
        ThreadedService(ScriptedRegistrar(), margin=-1)
    with pytest.raises(TypeError, match="on_change"):
        ThreadedService(ScriptedRegistrar(), on_change=3)  # type: ignore[arg-type]
