"""kitsd.serve attacked: options no server could use, a registry that stops answering,
a health check that hangs, 200 health probes at once, closing twice, using after close.

Each test failed before its fix (see the README's reliability table)."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from pathlib import Path

import pytest

from kitsd.core.errors import MisuseError
from kitsd.serve import Service, ThreadedService, gunicorn_hooks, wsgi
from tests.helpers import wait_for
from tests.serve.fakes import ScriptedRegistrar
from tests.serve.test_uvicorn import Served

pytestmark = pytest.mark.usefixtures("no_thread_leaks")

CLOSE_GRACE = 1.0  # kitsd.serve._service.CLOSE_GRACE: what close() still waits after a drain


async def until(predicate: object, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.005)


# -- options --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"drain": 1e300}, MisuseError, "drain"),  # overflowed the thread driver's wait
        ({"margin": 1e300}, MisuseError, "margin"),
        ({"probe_interval": 1e300}, MisuseError, "probe_interval"),
        ({"signals": ("SIGKILL",)}, MisuseError, "signals"),  # start() raised OSError
        ({"signals": (signal.SIGSTOP,)}, MisuseError, "signals"),
        ({"signals": (True,)}, TypeError, "signals"),  # was SIGHUP
        ({"self_check": 1}, TypeError, "self_check"),  # was True
        ({"self_check": "http://"}, MisuseError, "self_check"),  # no host: never passed
        ({"check_timeout": 0}, MisuseError, "check_timeout"),
        ({"check_timeout": float("nan")}, MisuseError, "check_timeout"),
        ({"check_timeout": True}, TypeError, "check_timeout"),
    ],
)
def test_bad_options_fail_at_construction(
    kwargs: dict[str, object], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        Service(ScriptedRegistrar(), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(error, match=named):
        ThreadedService(ScriptedRegistrar(), **kwargs)  # type: ignore[arg-type]


def test_a_self_check_url_with_a_password_is_never_echoed() -> None:
    for url in ("ftp://admin:hunter2@127.0.0.1/healthz", "http://admin:hunter2@/x"):
        with pytest.raises(MisuseError, match="self_check") as raised:
            Service(ScriptedRegistrar(), self_check=url)
        assert "hunter2" not in str(raised.value)


def test_gunicorn_hooks_check_their_options_when_the_config_is_read() -> None:
    # before: accepted here, raised in gunicorn's master once it was ready
    with pytest.raises(MisuseError, match="drain"):
        gunicorn_hooks(ScriptedRegistrar, drain=-1)
    with pytest.raises(TypeError, match="bogus"):
        gunicorn_hooks(ScriptedRegistrar, bogus=1)

    async def check() -> bool:
        return False

    with pytest.raises(TypeError, match="check"):  # bool(coroutine) was True: always 200
        gunicorn_hooks(ScriptedRegistrar, check=check)


def test_a_large_drain_drives_the_thread_driver_too() -> None:
    registrar = ScriptedRegistrar()
    service = ThreadedService(registrar, self_check=False, signals=(), drain=86_400,
                              probe=lambda: False)
    service.start()
    try:
        service.ready()
        wait_for(lambda: service.registered, what="registration")
        service.shutdown()
        wait_for(lambda: "deregister" in registrar.names(), what="deregistration")
        assert not service.wait_released(0.3)  # draining, not crashed out of its loop
        service.shutdown()
        assert service.wait_released(2)
        assert service.reason == "cut"
    finally:
        service.close()


# -- a registry that stops answering ------------------------------------------------


async def test_close_after_a_drain_is_bounded_when_deregister_hangs(
        caplog: pytest.LogCaptureFixture) -> None:
    hold = threading.Event()
    deregisters: list[float] = []

    def hang() -> None:
        deregisters.append(time.monotonic())
        hold.wait()

    registrar = ScriptedRegistrar(on_deregister=hang)
    try:
        service = Service(registrar, self_check=False, signals=(), drain=0.3)
        async with service:
            service.ready()
            await until(lambda: service.registered)
            service.shutdown()
            assert await asyncio.wait_for(service.released(), 3) == "deadline"
            started = time.monotonic()
        closed_in = time.monotonic() - started
        assert closed_in < CLOSE_GRACE + 1.0  # before: until deregister returned (never)
        assert "still running at close" in caplog.text
        assert len(deregisters) == 1  # no second call piled on the hung one
    finally:
        hold.set()
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "kitsd-serve-call"],
             what="the abandoned call's thread to end once the registry answers")


async def test_close_without_a_drain_is_bounded_by_drain_when_register_hangs() -> None:
    hold = threading.Event()
    registrar = ScriptedRegistrar()
    registrar.register = hold.wait  # type: ignore[assignment,method-assign]
    try:
        started = time.monotonic()
        async with Service(registrar, self_check=False, signals=(), drain=0.5) as service:
            service.ready()
            await asyncio.sleep(0.05)
        assert time.monotonic() - started < 0.5 + CLOSE_GRACE + 1.0
    finally:
        hold.set()
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "kitsd-serve-call"],
             what="the abandoned call's thread")


def test_threaded_close_is_bounded_when_deregister_hangs() -> None:
    hold = threading.Event()
    registrar = ScriptedRegistrar(on_deregister=hold.wait)
    service = ThreadedService(registrar, self_check=False, signals=(), drain=0.3)
    service.start()
    try:
        service.ready()
        wait_for(lambda: service.registered, what="registration")
        service.shutdown()
        assert service.wait_released(3)
        started = time.monotonic()
        service.close()
        assert time.monotonic() - started < CLOSE_GRACE + 1.0  # before: never returned
    finally:
        hold.set()
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "kitsd-serve-call"],
             what="the abandoned call's thread")


def test_uvicorn_exits_after_sigterm_when_the_registry_hangs(tmp_path: Path) -> None:
    served = Served(tmp_path, "--hang-deregister", "--drain", "1", "--margin", "0.1")
    try:
        wait_for(lambda: served.lines() == ["register"], timeout=20, what="registration")
        served.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        # drain 1 s + the close grace 1 s, and uvicorn's own shutdown; before: never
        assert served.process.wait(15) in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 10
        assert served.lines() == ["register", "deregister"]
    finally:
        served.close()


# -- a health check that hangs ------------------------------------------------------


async def test_a_hung_sync_check_answers_503_in_time_and_never_blocks_the_loop() -> None:
    hold = threading.Event()
    calls = 0

    def check() -> bool:
        nonlocal calls
        calls += 1
        hold.wait()
        return True

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    try:
        async with Service(ScriptedRegistrar(), self_check=False, signals=(), check=check,
                           check_timeout=0.3) as service:
            running = asyncio.create_task(ticker())
            started = time.monotonic()
            answers = await asyncio.gather(*(service.health() for _ in range(200)))
            took = time.monotonic() - started
            running.cancel()
            assert {status for status, _, _ in answers} == {503}
            assert took < 2  # 0.3 s, not forever
            assert ticks >= 10  # the loop kept running (before: frozen inside check())
            assert calls == 1  # 200 probes shared one call of the hung check
            hold.set()
            await until(lambda: service._check_runner is not None
                        and service._check_runner.start().done())
            assert (await service.health())[0] == 200  # answers again once it does
    finally:
        hold.set()


async def test_a_hung_async_check_answers_503_in_time() -> None:
    async def check() -> bool:
        await asyncio.Event().wait()
        return True

    async with Service(ScriptedRegistrar(), self_check=False, signals=(), check=check,
                       check_timeout=0.2) as service:
        started = time.monotonic()
        status, _, _ = await asyncio.wait_for(service.health(), 3)  # before: never
        assert status == 503
        assert time.monotonic() - started < 1.5


def test_uvicorn_with_a_hung_check_serves_and_exits(tmp_path: Path) -> None:
    for option in ("--hang-check", "--hang-async-check"):
        served = Served(tmp_path, option, "--drain", "1", "--margin", "0.1")
        try:
            wait_for(lambda s=served: s.lines() == ["register"], timeout=20,  # type: ignore[misc]
                     what="registration")
            assert served.get("/healthz").status_code == 503  # before: no answer at all
            assert served.get("/work").status_code == 200  # before: the loop was frozen
            served.process.send_signal(signal.SIGTERM)
            assert served.process.wait(15) in (0, -signal.SIGTERM)  # before: hung
        finally:
            served.close()


def test_wsgi_health_with_a_hung_check_answers_503_in_time() -> None:
    hold = threading.Event()
    hooks = gunicorn_hooks(ScriptedRegistrar, check=hold.wait, check_timeout=0.2)
    app = wsgi(lambda environ, start: [b"app"], hooks)
    statuses: list[str] = []
    try:
        started = time.monotonic()
        body = app({"PATH_INFO": "/healthz"}, lambda status, headers: statuses.append(status))
        assert time.monotonic() - started < 1.5  # before: the worker hung in check()
        assert statuses == ["503 Service Unavailable"]
        assert b"registered" in b"".join(body)
    finally:
        hold.set()


# -- lifecycle misuse -----------------------------------------------------------------


async def test_closing_leaves_no_task_and_restores_the_handler() -> None:
    before_handler = signal.getsignal(signal.SIGTERM)
    before = len(asyncio.all_tasks())
    for index in range(50):
        async with Service(ScriptedRegistrar(), self_check=False, margin=0) as service:
            service.ready()
            await until(lambda s=service: s.registered)
            if index % 2:
                service.shutdown()
                await service.released()
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before  # before: one idle wait leaked per close
    assert signal.getsignal(signal.SIGTERM) == before_handler


async def test_a_closed_service_cannot_start_again() -> None:
    before_handler = signal.getsignal(signal.SIGTERM)
    service = Service(ScriptedRegistrar(), self_check=False)
    await service.start()
    await service.aclose()
    await service.aclose()  # twice: nothing more
    with pytest.raises(RuntimeError, match="closed"):
        await service.start()  # before: a second driver, and a handler never put back
    assert signal.getsignal(signal.SIGTERM) == before_handler
    threaded = ThreadedService(ScriptedRegistrar(), self_check=False)
    threaded.start()
    threaded.close()
    threaded.close()
    with pytest.raises(RuntimeError, match="closed"):
        threaded.start()
    assert signal.getsignal(signal.SIGTERM) == before_handler


async def test_an_error_inside_async_with_still_cleans_up() -> None:
    before_handler = signal.getsignal(signal.SIGTERM)
    registrar = ScriptedRegistrar()

    async def serve_and_fail() -> None:
        async with Service(registrar, self_check=False) as service:
            service.ready()
            await until(lambda: service.registered)
            raise ValueError("app failed")

    with pytest.raises(ValueError, match="app failed"):
        await serve_and_fail()
    assert registrar.names() == ["register", "deregister"]
    assert signal.getsignal(signal.SIGTERM) == before_handler


async def test_200_health_probes_during_a_drain_all_say_draining() -> None:
    async with Service(ScriptedRegistrar(), self_check=False, signals=(), drain=5,
                       probe=lambda: False) as service:
        service.ready()
        await until(lambda: service.registered)
        service.shutdown()
        await until(lambda: service.draining)
        answers = await asyncio.gather(*(service.health() for _ in range(200)))
        assert {status for status, _, _ in answers} == {503}
        assert all(("kitsd-draining", "1") in headers for _, headers, _ in answers)
        service.shutdown()
        assert await service.released() == "cut"


def test_a_registrar_whose_register_raises_is_retried_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kitsd.serve")
    registrar = ScriptedRegistrar(fail_registers=3)
    with ThreadedService(registrar, self_check=False, signals=()) as service:
        service.ready()
        wait_for(lambda: service.registered, timeout=10, what="registration")
    assert registrar.names() == ["register"] * 4 + ["deregister"]
    assert caplog.text.count("registering") == 3



def test_wait_released_and_wsgi_check_their_arguments() -> None:
    service = ThreadedService(ScriptedRegistrar(), self_check=False, signals=())
    service.start()
    try:
        for bad in (float("nan"), -1, 1e300):  # NaN returned at once, 1e300 OverflowError
            with pytest.raises(MisuseError, match="timeout"):
                service.wait_released(bad)
        with pytest.raises(TypeError, match="timeout"):
            service.wait_released(True)  # was a 1-second wait
    finally:
        service.close()
    assert service.wait_released(0)
    with pytest.raises(TypeError, match="hooks"):  # was AttributeError at the first request
        wsgi(lambda environ, start: [b""], hooks=5)  # type: ignore[arg-type]
