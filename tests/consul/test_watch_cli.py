"""``kitsd watch consul://...`` shows live changes from a real Consul agent."""

from __future__ import annotations

import pytest

from kitsd.sd.consul import ConsulRegistrar, HttpxConsul
from tests.consul.conftest import Agent
from tests.helpers import WatchProcess


@pytest.mark.integration
def test_watch_prints_changes_from_consul(
    consul_agent: Agent, client: HttpxConsul, service_name: str
) -> None:
    watch = WatchProcess(f"consul://{consul_agent.http_addr}/{service_name}?passing=1")
    try:
        watch.wait_line(lambda line: "0 instances" in line)
        with ConsulRegistrar(client, service_name, "127.0.0.1", 18301):
            watch.wait_line(lambda line: "1 instance: 127.0.0.1:18301" in line)
        watch.wait_line(lambda line: "0 instances" in line)
    finally:
        watch.close()
    assert watch.process.returncode == WatchProcess.INTERRUPTED
