"""ACL default deny against a real agent (``integration``): an empty answer is a refusal.

The agent runs with ``default_policy = "deny"``; services are registered with
the management token, and watched with no token, with a token that can read
nodes but not services, and with one that can read both.  Both instancers
must report the refusal as a :class:`~kitsd.core.errors.PermissionDeniedError`
event, never as a silent empty set, and show instances once the token may
read them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator

import httpx
import pytest

from kitsd.compose.consul import ConsulDevAgent
from kitsd.core.errors import PermissionDeniedError
from kitsd.sd.consul import (
    AsyncConsulInstancer,
    ConsulInstancer,
    ConsulRegistrar,
    HttpxConsul,
    connect,
)
from kitsd.sd.event import Event
from tests.consul.conftest import skip_unless_restartable, start_agent
from tests.helpers import async_wait_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_thread_leaks")]

MANAGEMENT = "kitsd-deny-mgmt-5b0c2e"


class DenyAgent:
    """A default-deny agent, its management client, and tokens of given rules."""

    def __init__(self, agent: ConsulDevAgent) -> None:
        self.agent = agent
        self.address = agent.http_addr
        self.management = connect(self.address, token=MANAGEMENT)

    def token(self, rules: str) -> str:
        """A new token whose one policy has ``rules``."""
        name = f"p-{uuid.uuid4().hex[:8]}"
        base = f"http://{self.address}/v1/acl"
        headers = {"X-Consul-Token": MANAGEMENT}
        httpx.put(f"{base}/policy", headers=headers,
                  json={"Name": name, "Rules": rules}).raise_for_status()
        answer = httpx.put(f"{base}/token", headers=headers,
                           json={"Policies": [{"Name": name}]})
        answer.raise_for_status()
        secret = answer.json()["SecretID"]
        assert isinstance(secret, str)
        # A new token takes a moment to be known to the agent's ACL resolver.
        wait_for(lambda: httpx.get(f"{base}/token/self",
                                   headers={"X-Consul-Token": secret}).status_code == 200,
                 what="the new token to be usable")
        return secret


@pytest.fixture(scope="module")
def deny() -> Iterator[DenyAgent]:
    skip_unless_restartable("needs an agent started with default-deny ACLs")
    hcl = ('acl { enabled = true\n default_policy = "deny"\n'
           f' tokens {{ initial_management = "{MANAGEMENT}" }} }}')
    agent = start_agent(lambda: ConsulDevAgent(name="kitsd-deny", extra_args=("-hcl", hcl),
                                               token=MANAGEMENT))
    with agent:
        found = DenyAgent(agent)
        with found.management:
            yield found


@pytest.fixture
def service(deny: DenyAgent) -> Iterator[str]:
    """A service with one passing instance, registered with the management token."""
    name = f"kitsd-deny-{uuid.uuid4().hex[:8]}"
    with ConsulRegistrar(deny.management, name, "127.0.0.1", 18901):
        wait_for(lambda: bool(deny.management.health.service(name, passing=True)[1]),
                 what="the instance to be passing")
        yield name


NODE_ONLY = 'node_prefix "" { policy = "read" }'
READ_ALL = NODE_ONLY + '\nservice_prefix "" { policy = "read" }'


@pytest.mark.parametrize("rules", [None, NODE_ONLY], ids=["no-token", "node-read-only"])
def test_the_thread_instancer_reports_the_refusal(
    deny: DenyAgent, service: str, rules: str | None, caplog: pytest.LogCaptureFixture,
) -> None:
    token = deny.token(rules) if rules is not None else None
    caplog.set_level(logging.DEBUG)
    with connect(deny.address, token=token) as client, \
            ConsulInstancer(client, service) as instancer:
        state = instancer.state
    assert isinstance(state.error, PermissionDeniedError)
    assert "permission denied" in str(state.error)
    assert state.instances == ()
    assert ("no ACL token was sent" in str(state.error)) is (token is None)
    assert token is None or token not in caplog.text


@pytest.mark.parametrize("rules", [None, NODE_ONLY], ids=["no-token", "node-read-only"])
async def test_the_asyncio_instancer_reports_the_refusal(
    deny: DenyAgent, service: str, rules: str | None,
) -> None:
    token = deny.token(rules) if rules is not None else None
    async with AsyncConsulInstancer(deny.address, service, token=token) as instancer:
        async with asyncio.timeout(10):
            await instancer.wait_answered()
        assert isinstance(instancer.state.error, PermissionDeniedError)
        assert instancer.state.instances == ()


def test_a_token_that_may_read_sees_the_instances(deny: DenyAgent, service: str) -> None:
    client: HttpxConsul
    with connect(deny.address, token=deny.token(READ_ALL)) as client, \
            ConsulInstancer(client, service) as instancer:
        assert instancer.state == Event(("127.0.0.1:18901",))


async def test_both_instancers_over_one_client_agree(deny: DenyAgent, service: str) -> None:
    with connect(deny.address, token=deny.token(READ_ALL)) as client:
        async with AsyncConsulInstancer(client, service) as async_instancer:
            await async_wait_for(lambda: async_instancer.state.instances != (),
                                 what="instances on asyncio")
            with ConsulInstancer(client, service) as instancer:
                assert instancer.state == async_instancer.state == Event(("127.0.0.1:18901",))
