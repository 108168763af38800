"""sd.grpc against real in-process grpcio servers, sync and grpc.aio."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from kitsd import lb, sd
from kitsd.core.errors import ConnectionFailure, MisuseError
from tests.grpc.servers import METHOD, GRPCInstance, SilentInstance
from tests.helpers import async_wait_for, wait_for

Instances = Callable[[int], list[GRPCInstance]]


def _registry(*found: GRPCInstance) -> tuple[sd.MemoryRegistry, list[Any]]:
    registry = sd.MemoryRegistry()
    registrars = [registry.registrar("echo", each.address) for each in found]
    for registrar in registrars:
        registrar.register()
    return registry, registrars


def test_unary_call_balanced(grpc_instances: Instances) -> None:
    found = grpc_instances(2)
    registry, _ = _registry(*found)
    with sd.Endpointer(registry.instancer("echo"), sd.grpc.factory(METHOD)) as endpointer:
        call = lb.retry(3, 5.0, lb.RoundRobin(endpointer))
        ports = {call(b"hi").split(b":")[0] for _ in range(4)}
    assert ports == {str(each.port).encode() for each in found}


def test_json_serializers(grpc_instances: Instances) -> None:
    import json
    (one,) = grpc_instances(1)
    registry, _ = _registry(one)
    factory = sd.grpc.factory(METHOD, lambda value: json.dumps(value).encode(),
                              lambda data: data.decode())
    with sd.Endpointer(registry.instancer("echo"), factory) as endpointer:
        assert lb.retry(1, 5.0, lb.RoundRobin(endpointer))({"a": 1}) == f'{one.port}:{{"a": 1}}'


def test_status_codes_mapped(grpc_instances: Instances) -> None:
    (one,) = grpc_instances(1)
    endpoint = sd.grpc.factory(METHOD)(one.address)
    try:
        with pytest.raises(sd.grpc.GRPCStatusError) as caught:
            endpoint(b"fail:INVALID_ARGUMENT")
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert str(caught.value) == (
            f"gRPC INVALID_ARGUMENT from {one.address} ({METHOD}): told to fail")
        assert not isinstance(caught.value, ConnectionFailure)
        with pytest.raises(sd.grpc.UnavailableError) as unavailable:
            endpoint(b"fail:UNAVAILABLE")
        assert isinstance(unavailable.value, ConnectionFailure)
    finally:
        endpoint.close()


def test_deadline_from_retry(grpc_instances: Instances) -> None:
    (one,) = grpc_instances(1)
    registry, _ = _registry(one)
    with sd.Endpointer(registry.instancer("echo"), sd.grpc.factory(METHOD)) as endpointer:
        call = lb.retry(3, 0.5, lb.RoundRobin(endpointer))
        start = time.monotonic()
        with pytest.raises(lb.RetryTimeout) as caught:
            call(b"hang")
    assert time.monotonic() - start < 1.5
    assert all(isinstance(error, sd.grpc.DeadlineExceededError) for error in caught.value.errors)
    assert caught.value.errors


def test_dead_instance_is_unavailable_and_ejected(grpc_instances: Instances) -> None:
    dead, good = grpc_instances(2)
    dead.kill()
    registry, _ = _registry(dead, good)
    with sd.Endpointer(registry.instancer("echo"), sd.grpc.factory(METHOD)) as endpointer:
        balancer = lb.RoundRobin(endpointer)
        call = lb.retry(2, 5.0, balancer)
        for _ in range(10):
            assert call(b"x").startswith(str(good.port).encode())
    assert good.calls == 10


def test_channel_closed_when_instance_leaves(grpc_instances: Instances) -> None:
    (one,) = grpc_instances(1)
    registry, registrars = _registry(one)
    with sd.Endpointer(registry.instancer("echo"), sd.grpc.factory(METHOD)) as endpointer:
        (endpoint,) = endpointer.endpoints()
        assert endpoint(b"a").endswith(b"a")
        registrars[0].deregister()
        wait_for(lambda: not endpointer.endpoints(), what="instance gone")

        def closed() -> bool:
            try:
                endpoint(b"b")
            except ValueError:  # grpcio: "Cannot invoke RPC on closed channel!"
                return True
            except sd.grpc.GRPCStatusError as error:  # or CANCELLED "Channel closed!"
                return bool(error.code == grpc.StatusCode.CANCELLED)
            return False

        wait_for(closed, what="channel closed")


def test_bad_arguments() -> None:
    with pytest.raises(MisuseError, match="method"):
        sd.grpc.factory("Call")
    with pytest.raises(TypeError, match="method"):
        sd.grpc.factory(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="request_serializer"):
        sd.grpc.async_factory(METHOD, "json")  # type: ignore[arg-type]
    with pytest.raises(MisuseError, match="timeout"):
        sd.grpc.factory(METHOD, timeout=0)
    with pytest.raises(ValueError, match="instance"):
        sd.grpc.factory(METHOD)("no-port")


def test_kill_mid_load_zero_failures(grpc_instances: Instances) -> None:
    found = grpc_instances(3)
    registry, _ = _registry(*found)
    failures: list[BaseException] = []
    done = 0
    stop = threading.Event()
    lock = threading.Lock()
    with sd.Endpointer(registry.instancer("echo"), sd.grpc.factory(METHOD)) as endpointer:
        call = lb.retry(3, 5.0, lb.LeastLoaded(endpointer))

        def load() -> None:
            nonlocal done
            while not stop.is_set():
                try:
                    call(b"x")
                except Exception as error:
                    failures.append(error)
                with lock:
                    done += 1

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        wait_for(lambda: done > 200, timeout=20, what="load")
        found[0].kill()
        before = done
        wait_for(lambda: done > before + 400, timeout=20, what="load after the kill")
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert found[1].calls
    assert found[2].calls


async def test_async_kill_mid_load_zero_failures(grpc_instances: Instances) -> None:
    found = grpc_instances(3)
    registry, _ = _registry(*found)
    failures: list[BaseException] = []
    done = 0
    stop = asyncio.Event()
    async with sd.Endpointer(registry.instancer("echo"),
                             sd.grpc.async_factory(METHOD)) as endpointer:
        call = lb.retry_async(3, 5.0, lb.LeastLoaded(endpointer))

        async def load() -> None:
            nonlocal done
            while not stop.is_set():
                try:
                    await call(b"x")
                except Exception as error:
                    failures.append(error)
                done += 1

        tasks = [asyncio.create_task(load()) for _ in range(8)]
        await async_wait_for(lambda: done > 200, timeout=20, what="load")
        await asyncio.to_thread(found[0].kill)
        before = done
        await async_wait_for(lambda: done > before + 400, timeout=20, what="load after kill")
        stop.set()
        await asyncio.gather(*tasks)
    assert failures == []


async def test_async_status_and_deadline(grpc_instances: Instances) -> None:
    (one,) = grpc_instances(1)
    registry, _ = _registry(one)
    async with sd.Endpointer(registry.instancer("echo"),
                             sd.grpc.async_factory(METHOD)) as endpointer:
        call = lb.retry_async(1, 0.5, lb.RoundRobin(endpointer))
        assert (await call(b"ok")).endswith(b"ok")
        with pytest.raises(lb.RetryError) as caught:
            await call(b"fail:PERMISSION_DENIED")
        assert isinstance(caught.value.final, sd.grpc.GRPCStatusError)
        assert "PERMISSION_DENIED" in str(caught.value)
        assert one.address in str(caught.value)
        with pytest.raises(lb.RetryTimeout):
            await call(b"hang")


# --- one silent instance beside a healthy one (issue 16.7) -----------------------------------


def test_a_silent_instance_costs_one_bounded_attempt_and_is_ejected(
    grpc_instances: Instances, silent_instance: SilentInstance
) -> None:
    """Was: 10 of 20 calls ended in RetryTimeout, ``timeout=0.2`` ignored in a retry."""
    (good,) = grpc_instances(1)
    registry, _ = _registry(good, silent_instance)  # type: ignore[arg-type]
    errors: list[BaseException] = []

    def seen(attempt: int, error: BaseException) -> tuple[bool, BaseException | None]:
        errors.append(error)
        return attempt < 3, None

    factory = sd.grpc.factory(METHOD, timeout=0.2)
    with sd.Endpointer(registry.instancer("echo"), factory) as endpointer:
        call = lb.retry(3, 2.0, lb.RoundRobin(endpointer), callback=seen)
        started = time.monotonic()
        for _ in range(20):
            assert call(b"x").startswith(str(good.port).encode())
        took = time.monotonic() - started
    print(f"FIGURE sync, one silent instance: 0 of 20 calls failed in {took:.2f}s;"
          f" {len(errors)} attempt(s) on it")
    assert good.calls == 20
    # one attempt, bounded by the factory's timeout, then ejected: no second one
    assert len(errors) == 1
    assert isinstance(errors[0], sd.grpc.ConnectTimeoutError)
    assert isinstance(errors[0], ConnectionFailure)
    assert isinstance(errors[0], TimeoutError)
    assert silent_instance.address in str(errors[0])


async def test_async_a_silent_instance_costs_one_bounded_attempt_and_is_ejected(
    grpc_instances: Instances, silent_instance: SilentInstance
) -> None:
    """Was: 5 of 10 calls ended in RetryTimeout."""
    (good,) = grpc_instances(1)
    registry, _ = _registry(good, silent_instance)  # type: ignore[arg-type]
    errors: list[BaseException] = []

    def seen(attempt: int, error: BaseException) -> tuple[bool, BaseException | None]:
        errors.append(error)
        return attempt < 3, None

    factory = sd.grpc.async_factory(METHOD, timeout=0.2)
    async with sd.Endpointer(registry.instancer("echo"), factory) as endpointer:
        call = lb.retry_async(3, 2.0, lb.RoundRobin(endpointer), callback=seen)
        for _ in range(10):
            assert (await call(b"x")).startswith(str(good.port).encode())
    assert good.calls == 10
    assert len(errors) == 1
    assert isinstance(errors[0], sd.grpc.ConnectTimeoutError)


def test_the_factory_timeout_bounds_each_attempt_inside_a_retry(
    grpc_instances: Instances,
) -> None:
    (one,) = grpc_instances(1)
    registry, _ = _registry(one)
    factory = sd.grpc.factory(METHOD, timeout=0.2)
    with sd.Endpointer(registry.instancer("echo"), factory) as endpointer:
        call = lb.retry(3, 5.0, lb.RoundRobin(endpointer))
        started = time.monotonic()
        with pytest.raises(lb.RetryError) as caught:
            call(b"hang")  # a connected instance that never answers: three bounded attempts
        took = time.monotonic() - started
    assert took < 4.0  # three attempts of 0.2 s, not the retry's 5 s
    assert len(caught.value.errors) == 3
    # connected, so a plain deadline (counted by consecutive_errors), not a connect timeout
    assert all(type(error) is sd.grpc.DeadlineExceededError for error in caught.value.errors)


def test_channel_state_contract(grpc_instances: Instances, silent_instance: SilentInstance
                                ) -> None:
    """The vendor seam sd.grpc._endpoint._connected relies on (grpcio's Cython channel)."""
    from kitsd.sd.grpc._endpoint import _connected

    (one,) = grpc_instances(1)
    healthy = grpc.insecure_channel(one.address)
    silent = grpc.insecure_channel(silent_instance.address)
    try:
        assert _connected(healthy) is False  # idle: never asked to connect
        healthy.unary_unary(METHOD)(b"x", timeout=5)
        assert _connected(healthy) is True
        with pytest.raises(grpc.RpcError):
            silent.unary_unary(METHOD)(b"x", timeout=0.2)
        assert _connected(silent) is False
    finally:
        healthy.close()
        silent.close()
    assert _connected(object()) is None
