"""TLS and mTLS against a real agent (``integration``), from code and from ``consuls://`` URLs.

The agent serves HTTPS with certificates made by ``consul tls`` and requires a
client certificate there (``verify_incoming``).  The settings of one
:func:`sd.consul.connect` client (scheme, CA, client certificate) must reach
the registrar, the thread instancer and the asyncio instancer alike: the
asyncio path once dropped the client certificate.
"""

from __future__ import annotations

import asyncio
import urllib.parse
import uuid
from collections.abc import Iterator

import pytest

from kitsd.compose.consul import ConsulDevAgent, TLSFiles
from kitsd.core.errors import RegistryUnavailableError
from kitsd.sd.consul import (
    AsyncConsulInstancer,
    ConsulInstancer,
    ConsulRegistrar,
    HttpxConsul,
    connect,
)
from kitsd.sd.consul.url import instancer_from_url
from kitsd.sd.event import Event
from tests.consul.conftest import skip_unless_restartable, start_agent
from tests.helpers import async_wait_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_thread_leaks")]


@pytest.fixture(scope="module")
def tls_agent() -> Iterator[ConsulDevAgent]:
    skip_unless_restartable("needs an agent started with TLS")
    agent = start_agent(lambda: ConsulDevAgent(name="kitsd-tls", tls=True))
    with agent:
        yield agent


def files(agent: ConsulDevAgent) -> TLSFiles:
    assert agent.tls is not None
    return agent.tls


def mtls_client(agent: ConsulDevAgent) -> HttpxConsul:
    tls = files(agent)
    return connect(agent.https_addr, scheme="https", verify=str(tls.ca),
                   cert=(str(tls.client_cert), str(tls.client_key)))


@pytest.fixture
def registered(tls_agent: ConsulDevAgent) -> Iterator[str]:
    """A service registered over HTTPS with the client certificate."""
    name = f"kitsd-tls-{uuid.uuid4().hex[:8]}"
    with mtls_client(tls_agent) as client, ConsulRegistrar(client, name, "127.0.0.1", 18701):
        yield name


def test_both_instancers_carry_the_client_certificate(
    tls_agent: ConsulDevAgent, registered: str
) -> None:
    want = Event(("127.0.0.1:18701",))
    with mtls_client(tls_agent) as client:
        with ConsulInstancer(client, registered) as instancer:
            wait_for(lambda: instancer.state == want, what="the instance over mTLS")

        async def on_asyncio() -> Event:
            async with AsyncConsulInstancer(client, registered) as async_instancer:
                await async_wait_for(lambda: async_instancer.state == want,
                                     what="the instance over mTLS on asyncio")
                return async_instancer.state

        assert asyncio.run(on_asyncio()) == want


def test_without_a_client_certificate_the_agent_refuses_both(
    tls_agent: ConsulDevAgent, registered: str
) -> None:
    with connect(tls_agent.https_addr, scheme="https", verify=str(files(tls_agent).ca)) as client:
        with ConsulInstancer(client, registered) as instancer:
            assert isinstance(instancer.state.error, RegistryUnavailableError)

        async def on_asyncio() -> BaseException | None:
            async with AsyncConsulInstancer(client, registered) as async_instancer:
                async with asyncio.timeout(10):
                    await async_instancer.wait_answered()
                return async_instancer.state.error

        assert isinstance(asyncio.run(on_asyncio()), RegistryUnavailableError)


def test_a_consuls_url_reaches_the_tls_agent(tls_agent: ConsulDevAgent, registered: str) -> None:
    tls = files(tls_agent)
    query = urllib.parse.urlencode({"ca": tls.ca, "cert": tls.client_cert,
                                    "key": tls.client_key})
    url = f"consuls://{tls_agent.https_addr}/{registered}?{query}"
    instancer = instancer_from_url(urllib.parse.urlsplit(url))
    try:
        wait_for(lambda: instancer.state == Event(("127.0.0.1:18701",)), what="the instance")
        client = instancer.client
        assert isinstance(client, HttpxConsul)
        assert client.settings.scheme == "https"
    finally:
        instancer.stop()
    assert client.closed


def test_a_consuls_url_without_the_ca_does_not_trust_the_agent(
    tls_agent: ConsulDevAgent, registered: str
) -> None:
    tls = files(tls_agent)
    query = urllib.parse.urlencode({"cert": tls.client_cert, "key": tls.client_key})
    url = f"consuls://{tls_agent.https_addr}/{registered}?{query}"
    instancer = instancer_from_url(urllib.parse.urlsplit(url))
    try:
        assert isinstance(instancer.state.error, RegistryUnavailableError)
    finally:
        instancer.stop()
