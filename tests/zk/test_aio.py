"""asyncio over the ZooKeeper driver: sd.EventStream and sd.AsyncRegistrar (kazoo is threaded)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kitsd import sd
from kitsd.sd.zk import ZKInstancer, ZKRegistrar

pytestmark = pytest.mark.integration


async def test_event_stream_sees_an_async_registration(
    client: Any, other_client: Any, path: str
) -> None:
    with ZKInstancer(client, path) as instancer:
        async with sd.EventStream(instancer) as stream:
            first = await asyncio.wait_for(anext(stream), 10)
            assert first == sd.Event(())
            async with sd.AsyncRegistrar(ZKRegistrar(other_client, path, "10.0.0.7:80")):
                event = await asyncio.wait_for(anext(stream), 10)
                assert event == sd.Event(("10.0.0.7:80",))
            event = await asyncio.wait_for(anext(stream), 10)
            assert event == sd.Event(())
