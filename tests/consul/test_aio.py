"""asyncio over a real Consul agent: AsyncRegistrar of a ConsulRegistrar seen by an EventStream."""

from __future__ import annotations

import asyncio

import pytest

from kitsd import sd
from kitsd.sd.consul import ConsulInstancer, ConsulRegistrar, HttpxConsul


async def _until(stream: sd.EventStream, instances: tuple[str, ...]) -> None:
    async with asyncio.timeout(10):
        async for event in stream:
            if event.instances == instances and event.error is None:
                return


@pytest.mark.integration
async def test_async_registration_reaches_an_async_stream(
    client: HttpxConsul, service_name: str
) -> None:
    registrar = ConsulRegistrar(client, service_name, "127.0.0.1", 18401)
    with ConsulInstancer(client, service_name) as instancer:
        async with sd.EventStream(instancer) as stream:
            await _until(stream, ())
            async with sd.AsyncRegistrar(registrar):
                await _until(stream, ("127.0.0.1:18401",))
            await _until(stream, ())
