"""kitsd.serve.Service on asyncio: register when ready, drain, signals, failures, cleanup."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import signal
import time
from collections.abc import Iterator

import pytest

from kitsd.core.errors import MisuseError
from kitsd.serve import DRAINING_HEADER, Phase, Service
from tests.serve.fakes import ScriptedRegistrar

pytestmark = pytest.mark.usefixtures("no_thread_leaks")


async def wait_until(predicate: object, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.005)


def body(answer: tuple[int, list[tuple[str, str]], bytes]) -> dict[str, object]:
    result: dict[str, object] = json.loads(answer[2])
    return result


async def test_registers_when_ready_and_drains_on_shutdown() -> None:
    gone = False

    def probe() -> bool:
        return gone

    registrar = ScriptedRegistrar()
    async with Service(registrar, self_check=False, signals=(), margin=0.2,
                       probe=probe) as service:
        await asyncio.sleep(0.05)
        assert registrar.names() == []  # not before ready()
        assert (await service.health())[0] == 200
        service.ready()
        await wait_until(lambda: service.registered)
        assert service.phase is Phase.SERVING
        status, headers, _ = await service.health()
        assert status == 200
        assert body(await service.health()) == {
            "status": "serving", "registered": True}
        service.shutdown()
        await wait_until(lambda: "deregister" in registrar.names())
        assert service.draining
        status, headers, _ = await service.health()
        assert status == 503
        assert (DRAINING_HEADER, "1") in headers
        assert ("connection", "close") in headers
        await asyncio.sleep(0.2)
        assert service.phase.value == "draining"  # the registry still shows it
        gone = True
        gone_at = time.monotonic()
        assert await asyncio.wait_for(service.released(), 5) == "gone"
        assert time.monotonic() - gone_at >= 0.2  # the margin, after the registry said gone
    assert registrar.names() == ["register", "deregister"]  # the close does not repeat it


async def test_registry_unreachable_at_startup_is_retried_while_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registrar = ScriptedRegistrar(fail_registers=3)
    with caplog.at_level(logging.WARNING, "kitsd.serve"):
        async with Service(registrar, self_check=False, signals=()) as service:
            service.ready()
            await wait_until(lambda: registrar.names().count("register") >= 2)
            assert (await service.health())[0] == 200
            assert body(await service.health())["registered"] is False
            await wait_until(lambda: service.registered, within=5)
    calls = [when for name, when in registrar.calls if name == "register"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert len(calls) == 4
    assert gaps[0] >= 0.05
    assert gaps[2] >= 0.2
    assert sum("registering" in record.message for record in caplog.records) == 3


async def test_a_second_shutdown_ends_the_drain_at_once() -> None:
    registrar = ScriptedRegistrar()
    async with Service(registrar, self_check=False, signals=(), drain=60,
                       probe=lambda: False) as service:
        service.ready()
        await wait_until(lambda: service.registered)
        service.shutdown()
        await wait_until(lambda: "deregister" in registrar.names())
        started = time.monotonic()
        service.shutdown()
        assert await asyncio.wait_for(service.released(), 2) == "cut"
        assert time.monotonic() - started < 1


async def test_drain_is_bounded_by_drain_seconds() -> None:
    registrar = ScriptedRegistrar()
    async with Service(registrar, self_check=False, signals=(), drain=0.3,
                       probe=lambda: False) as service:
        service.ready()
        await wait_until(lambda: service.registered)
        started = time.monotonic()
        service.shutdown()
        assert await asyncio.wait_for(service.released(), 3) == "deadline"
        assert 0.25 <= time.monotonic() - started < 1.5


async def test_a_hung_deregistration_is_bounded_too() -> None:
    release = asyncio.Event()
    loop = asyncio.get_running_loop()
    hold = __import__("threading").Event()
    registrar = ScriptedRegistrar(on_deregister=lambda: hold.wait(5))
    async with Service(registrar, self_check=False, signals=(), drain=0.2) as service:
        service.ready()
        await wait_until(lambda: service.registered)
        service.shutdown()
        assert await asyncio.wait_for(service.released(), 3) == "deadline"
        loop.call_later(0.1, hold.set)
        release.set()
    assert not registrar.registered  # aclose waited for the call in its thread


async def test_closing_without_a_drain_deregisters() -> None:
    registrar = ScriptedRegistrar()
    async with Service(registrar, self_check=False, signals=()) as service:
        service.ready()
        await wait_until(lambda: service.registered)
    assert registrar.names() == ["register", "deregister"]
    assert service.reason == "closed"


async def test_a_shutdown_before_ready_never_registers() -> None:
    registrar = ScriptedRegistrar()
    async with Service(registrar, self_check=False, signals=()) as service:
        service.shutdown()
        assert await asyncio.wait_for(service.released(), 2) == "never registered"
        service.ready()
        await asyncio.sleep(0.05)
    assert "register" not in registrar.names()


async def test_the_app_check_gates_registration_and_health() -> None:
    ready = False

    async def check() -> bool:
        return ready

    registrar = ScriptedRegistrar()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    registrar.instance = f"127.0.0.1:{port}"
    async with server, Service(registrar, check=check, health_path=None, signals=()) as service:
        # no health path: the self-check connects to the instance; the check still gates
        service.ready()
        await wait_until(lambda: service.registered)
        assert (await service.health())[0] == 503
        ready = True
        assert (await service.health())[0] == 200


async def test_self_check_waits_for_the_health_route() -> None:
    answers = [503, 503, 200]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        status = answers.pop(0) if answers else 200
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    registrar = ScriptedRegistrar(f"127.0.0.1:{port}")
    async with server, Service(registrar, signals=()) as service:
        service.ready()
        await wait_until(lambda: service.registered)
    assert answers == []  # registered only after the third GET passed


@pytest.fixture
def restore_sigterm() -> Iterator[None]:
    before = signal.getsignal(signal.SIGTERM)
    received: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    yield
    signal.signal(signal.SIGTERM, before)


@pytest.mark.usefixtures("restore_sigterm")
async def test_sigterm_starts_the_drain_a_second_cuts_it_then_the_old_handler_gets_it() -> None:
    forwarded: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: forwarded.append(signum))
    registrar = ScriptedRegistrar()
    async with Service(registrar, self_check=False, drain=60, probe=lambda: False) as service:
        service.ready()
        await wait_until(lambda: service.registered)
        signal.raise_signal(signal.SIGTERM)
        await wait_until(lambda: "deregister" in registrar.names())
        assert forwarded == []  # the server's handler waits for the drain
        signal.raise_signal(signal.SIGTERM)
        assert await asyncio.wait_for(service.released(), 2) == "cut"
        assert forwarded == [signal.SIGTERM]  # handed on once, at release
        signal.raise_signal(signal.SIGTERM)
        await wait_until(lambda: len(forwarded) == 2)  # later ones go straight on
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler)
    handler(signal.SIGTERM, None)
    assert forwarded == [signal.SIGTERM] * 3  # the previous handler is back


class _NotARegistrar:
    pass


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"drain": -1}, MisuseError, "drain"),
        ({"margin": "2"}, TypeError, "margin"),
        ({"probe_interval": 0}, MisuseError, "probe_interval"),
        ({"health_path": "healthz"}, MisuseError, "health_path"),
        ({"signals": ("SIGNOPE",)}, MisuseError, "signals"),
        ({"signals": "SIGTERM"}, TypeError, "signals"),
        ({"self_check": "ftp://x/"}, MisuseError, "self_check"),
        ({"self_check": 3}, TypeError, "self_check"),
        ({"check": 5}, TypeError, "check"),
        ({"probe": "yes"}, TypeError, "probe"),
    ],
)
def test_bad_options_fail_at_construction_naming_them(
    kwargs: dict[str, object], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        Service(ScriptedRegistrar(), **kwargs)  # type: ignore[arg-type]


def test_a_registrar_is_required_and_self_check_needs_its_instance() -> None:
    with pytest.raises(TypeError, match="registrar"):
        Service(_NotARegistrar())
    nameless = ScriptedRegistrar()
    del nameless.instance
    with pytest.raises(MisuseError, match="self_check"):
        Service(nameless)
    Service(nameless, self_check="http://127.0.0.1:1/healthz")
    Service(nameless, self_check=False)
