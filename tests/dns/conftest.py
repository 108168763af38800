"""Fixtures for the DNS SRV tests: a real Consul dev agent with its DNS interface on.

Consul's DNS interface serves SRV records for registered services
(``_<service>._tcp.service.consul``), so the integration tests register
instances through Consul's HTTP API and watch them through DNS.  Without
``/usr/local/bin/consul`` the fixture FAILS with the install hint; it never
falls back to a fake.  (The unit tests use :mod:`tests.dns.fake_dns`, a
scripted DNS server, for answers Consul never gives: SERVFAIL, silence, junk.)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from kitsd.compose.consul import ConsulDevAgent, ConsulNotInstalled
from kitsd.sd.consul import HttpxConsul, connect


@pytest.fixture(scope="module")
def dns_agent() -> Iterator[ConsulDevAgent]:
    """A ``consul agent -dev`` of this module's own with DNS on a free loopback port."""
    try:
        agent = ConsulDevAgent(name="kitsd-dns", dns=True)
    except ConsulNotInstalled as error:
        pytest.fail(str(error), pytrace=False)
    with agent:
        yield agent


@pytest.fixture
def consul_client(dns_agent: ConsulDevAgent) -> Iterator[HttpxConsul]:
    """A py-consul client for the agent's HTTP API."""
    with connect(dns_agent.http_addr) as client:
        yield client


@pytest.fixture
def service_name() -> str:
    """A service name no other test uses (DNS-safe)."""
    return f"kitsd-dns-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def register(consul_client: HttpxConsul) -> Iterator[Callable[..., str]]:
    """``register(service, service_id, address=..., port=...)`` in Consul; removed after."""
    registered: list[str] = []

    def add(service: str, service_id: str, **kwargs: object) -> str:
        consul_client.agent.service.register(service, service_id=service_id, **kwargs)
        registered.append(service_id)
        return service_id

    yield add
    for service_id in registered:
        consul_client.agent.service.deregister(service_id)
