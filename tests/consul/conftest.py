"""Fixtures for the Consul driver tests.

Real-agent tests are marked ``integration`` and use the agents of
:mod:`compose.consul`: one shared ``-dev`` agent for the session
(``consul_agent``), a fresh one per test for tests that stop or restart it
(``restartable_agent``), and their own cluster in ``test_cluster.py``.  If
``/usr/local/bin/consul`` is missing these fixtures FAIL, saying how to install
it (``kitsd servers install consul``); they never fall back to a fake.

``KITSD_CONSUL_HTTP_ADDR=host:port`` runs the shared-agent tests against an
agent you run (``KITSD_CONSUL_TOKEN`` is then sent as the ACL token); tests that
must stop or restart the agent, or need agents of their own (ACLs enabled, the
three-server cluster), skip, saying why.

Reaping takes long: Consul enforces at least one minute of
``DeregisterCriticalServiceAfter`` and reaps every 30 s, so a crashed
registrar's service disappears 60-90 s after its check went critical.  To keep
the suite short, when ``test_killed_registrar_is_reaped`` is selected its
scenario (a registrar process started and SIGKILLed) begins with the first
Consul test and the test itself runs last, while the rest of the suite runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kitsd.compose.consul import (
    HTTP_ADDR_ENV,
    ConsulDevAgent,
    ConsulNotInstalled,
    ExternalConsul,
    dev_agent,
    require_binary,
)
from kitsd.sd.consul import HttpxConsul, connect
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
REAP_TEST = "test_killed_registrar_is_reaped"

Agent = ConsulDevAgent | ExternalConsul
AgentT = TypeVar("AgentT")


def _token() -> str | None:
    return os.environ.get("KITSD_CONSUL_TOKEN") or None


def _external() -> bool:
    return bool(os.environ.get(HTTP_ADDR_ENV, "").strip())


def start_agent(factory: Callable[[], AgentT]) -> AgentT:
    """``factory()``, failing the test (not skipping it) with the install hint if
    there is no Consul binary."""
    try:
        return factory()
    except ConsulNotInstalled as error:
        pytest.fail(str(error), pytrace=False)


def skip_unless_restartable(needs: str = "must stop/restart the agent") -> None:
    """Skip (loudly) when the tests run against an agent we did not start."""
    if _external():
        pytest.skip(
            f"SKIPPED ON PURPOSE: {HTTP_ADDR_ENV} points at an agent kitsd did not start, "
            f"and this test {needs}; unset it to run this test"
        )


@pytest.fixture(scope="session")
def consul_agent(kitsd_consul: Agent) -> Agent:
    """The session's shared agent (the plugin's ``kitsd_consul``): a ``-dev`` agent, or
    ``KITSD_CONSUL_HTTP_ADDR``'s."""
    return kitsd_consul


@pytest.fixture
def restartable_agent() -> Iterator[ConsulDevAgent]:
    """A fresh ``-dev`` agent of this test's own, free to stop and restart."""
    skip_unless_restartable()
    agent = start_agent(lambda: ConsulDevAgent(name="kitsd-restart"))
    with agent:
        yield agent


ACL_TOKEN = "kitsd-acl-9c1e77d2-secret"  # noqa: S105 - a throwaway test agent's management token


@pytest.fixture
def acl_agent() -> Iterator[ConsulDevAgent]:
    """A ``-dev`` agent with ACLs on (default allow; management token ``ACL_TOKEN``):
    an unknown token gets a real 403."""
    skip_unless_restartable("needs an agent started with ACLs enabled")
    hcl = ('acl { enabled = true\n default_policy = "allow"\n'
           f' tokens {{ initial_management = "{ACL_TOKEN}" }} }}')
    agent = start_agent(lambda: ConsulDevAgent(name="kitsd-acl", extra_args=("-hcl", hcl)))
    with agent:
        yield agent


@pytest.fixture
def client(consul_agent: Agent) -> Iterator[HttpxConsul]:
    """A py-consul client for the shared agent, closed after the test."""
    with connect(consul_agent.http_addr, token=_token()) as consul_client:
        yield consul_client


@pytest.fixture
def service_name() -> str:
    """A service name no other test uses."""
    return f"kitsd-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def raw_services(client: HttpxConsul) -> Iterator[Callable[..., str]]:
    """``register(name, service_id, **kwargs)`` straight through py-consul; removed after."""
    registered: list[str] = []

    def register(name: str, service_id: str, **kwargs: Any) -> str:
        client.agent.service.register(name, service_id=service_id, **kwargs)
        registered.append(service_id)
        return service_id

    yield register
    for service_id in registered:
        client.agent.service.deregister(service_id)


def passing_instances(consul_client: HttpxConsul, service: str,
                      passing: bool = True) -> list[str]:
    """What Consul itself says, ``address:port`` per health entry (for cross-checks)."""
    _, entries = consul_client.health.service(service, passing=passing or None)
    result = []
    for entry in entries or []:
        address = entry["Service"]["Address"] or entry["Node"]["Address"]
        result.append(f"{address}:{entry['Service']['Port']}")
    return sorted(result)


# --- a registrar in another process, to be killed ------------------------------------

CHILD = """
import os, signal, sys
from kitsd.sd.consul import ConsulRegistrar, connect
addr, service, port, ttl, reap = sys.argv[1:6]
client = connect(addr, token=os.environ.get("KITSD_CONSUL_TOKEN") or None)
registrar = ConsulRegistrar(client, service, "127.0.0.1", int(port), ttl=float(ttl),
                            deregister_critical_after=float(reap))
registrar.register()
signal.pause()  # heartbeats run on their thread until this process is killed
"""


def spawn_registrar(http_addr: str, service: str, port: int, *, ttl: float,
                    deregister_critical_after: float) -> subprocess.Popen[bytes]:
    """A child process registering ``127.0.0.1:port`` and heartbeating until killed."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, http_addr, service, str(port), str(ttl),
         str(deregister_critical_after)],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def kill_process(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap (idempotent)."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    if process.stderr is not None:
        process.stderr.close()


@dataclass
class ReapScenario:
    """A registrar process that registered (ttl 1 s, reap after 1 s) and was SIGKILLed."""

    client: HttpxConsul
    service: str
    instance: str
    killed_at: float
    critical_after: float


@pytest.fixture(scope="session")
def reaping_registrar() -> Iterator[ReapScenario]:
    """Start the reap scenario: register from a child process, then SIGKILL it."""
    agent = start_agent(lambda: dev_agent(name="kitsd-reap"))
    with agent, connect(agent.http_addr, token=_token()) as consul_client:
        service = f"kitsd-reap-{uuid.uuid4().hex[:8]}"
        child = spawn_registrar(agent.http_addr, service, 4242, ttl=1.0,
                                deregister_critical_after=1.0)
        try:
            wait_for(lambda: passing_instances(consul_client, service) == ["127.0.0.1:4242"],
                     timeout=20, what="the child registrar to be passing")
            kill_process(child)
            killed_at = time.monotonic()
            wait_for(lambda: passing_instances(consul_client, service) == [],
                     timeout=10, what="the killed registrar's check to go critical")
            scenario = ReapScenario(consul_client, service, "127.0.0.1:4242", killed_at,
                                    time.monotonic() - killed_at)
            yield scenario
        finally:
            kill_process(child)
            consul_client.agent.service.deregister(f"{service}-127.0.0.1-4242")


@pytest.fixture(scope="session", autouse=True)
def _start_reap_scenario_early(request: pytest.FixtureRequest) -> None:
    """Begin the reap scenario with the first Consul test when its test is selected."""
    selected = any(item.name == REAP_TEST for item in request.session.items)
    if not selected:
        return
    try:
        if not _external():
            require_binary()
    except ConsulNotInstalled:
        return  # the reap test itself fails with the install hint
    request.getfixturevalue("reaping_registrar")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the reap test last: its wait then overlaps the rest of the suite."""
    last = [item for item in items if item.name == REAP_TEST]
    if last:
        items[:] = [item for item in items if item.name != REAP_TEST] + last


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On failure, attach the tail of every Consul log the test used."""
    report = yield
    if report.failed and call.when in {"setup", "call"}:
        funcargs = getattr(item, "funcargs", {})
        for name, value in funcargs.items():
            tails = getattr(value, "log_tails", None)
            if callable(tails):
                report.sections.append((f"consul logs ({name})", tails()))
    return report
