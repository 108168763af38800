"""asyncio over a real etcd: EventStream of an EtcdInstancer, AsyncRegistrar of an EtcdRegistrar."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kitsd import sd


async def _until(stream: sd.EventStream, instances: tuple[str, ...]) -> None:
    async with asyncio.timeout(10):
        async for event in stream:
            if event.instances == instances and event.error is None:
                return


@pytest.mark.integration
async def test_async_registration_reaches_an_async_stream(client: Any, prefix: str) -> None:
    registrar = sd.etcd.EtcdRegistrar(client, f"{prefix}a", "10.0.0.7:80", ttl=5)
    with sd.etcd.EtcdInstancer(client, prefix) as instancer:
        async with sd.EventStream(instancer) as stream:
            await _until(stream, ())
            async with sd.AsyncRegistrar(registrar):
                await _until(stream, ("10.0.0.7:80",))
            await _until(stream, ())
