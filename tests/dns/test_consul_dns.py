"""SRVInstancer against a real DNS server: Consul's DNS interface."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from kitsd import sd
from kitsd.compose.consul import ConsulDevAgent
from kitsd.core.errors import RegistryUnavailableError
from kitsd.sd.consul import HttpxConsul, connect
from kitsd.sd.dns import SRVInstancer
from kitsd.sd.dns.instancer import _running_watches
from tests.helpers import WatchProcess, assert_no_new_threads, wait_for

pytestmark = pytest.mark.integration


def srv_name(service: str) -> str:
    return f"_{service}._tcp.service.consul"


def test_registered_instances_appear_and_leave_through_dns(
    dns_agent: ConsulDevAgent, register: Callable[..., str],
    consul_client: HttpxConsul, service_name: str, no_thread_leaks: None,
) -> None:
    events: list[sd.Event] = []
    with SRVInstancer(srv_name(service_name), resolver=dns_agent.dns_addr,
                      min_ttl=0.1) as instancer:
        instancer.subscribe(events.append)
        wait_for(lambda: bool(events) and events[-1] == sd.Event(()), what="NXDOMAIN: an empty set")
        register(service_name, "a", address="10.1.0.1", port=8080)
        wait_for(lambda: events[-1].instances == ("10.1.0.1:8080",), what="the first instance")
        register(service_name, "b", port=8081)  # no service address: the node's (127.0.0.1)
        wait_for(lambda: events[-1].instances == ("10.1.0.1:8080", "127.0.0.1:8081"))
        assert {record.target for record in instancer.records} == {
            "0a010001.addr.dc1.consul", f"{dns_agent.node_name}.node.dc1.consul"}
        assert all(record.priority == 1 and record.weight == 1 for record in instancer.records)
        consul_client.agent.service.deregister("a")
        wait_for(lambda: events[-1].instances == ("127.0.0.1:8081",))
        consul_client.agent.service.deregister("b")
        wait_for(lambda: events[-1] == sd.Event(()), what="an empty set again")
    assert all(event.error is None for event in events)
    assert _running_watches() == 0


def test_target_names_are_kept_on_request(
    dns_agent: ConsulDevAgent, register: Callable[..., str], service_name: str,
) -> None:
    register(service_name, "n", port=9000)
    with SRVInstancer(srv_name(service_name), resolver=dns_agent.dns_addr, resolve=False,
                      min_ttl=0.1) as instancer:
        events: list[sd.Event] = []
        instancer.subscribe(events.append)
        wait_for(lambda: events[-1].instances == (f"{dns_agent.node_name}.node.dc1.consul:9000",))


def test_dns_server_down_publishes_an_error_and_keeps_the_instances(service_name: str) -> None:
    with ConsulDevAgent(name="kitsd-dns-down", dns=True) as agent:
        with connect(agent.http_addr) as client:
            client.agent.service.register(service_name, service_id="x", address="10.2.0.1",
                                          port=80)
        events: list[sd.Event] = []
        before = set(threading.enumerate())
        instancer = SRVInstancer(srv_name(service_name), resolver=agent.dns_addr,
                                 min_ttl=0.1, timeout=0.5)
        try:
            instancer.subscribe(events.append)
            wait_for(lambda: events[-1].instances == ("10.2.0.1:80",))
            agent.kill()
            wait_for(lambda: events[-1].error is not None, timeout=10,
                     what="an error event while the DNS server is down")
            assert isinstance(events[-1].error, RegistryUnavailableError)
            assert events[-1].instances == ("10.2.0.1:80",)
        finally:
            instancer.stop()
        assert_no_new_threads(before, timeout=1.0)


def test_kitsd_watch_shows_live_changes(
    dns_agent: ConsulDevAgent, register: Callable[..., str],
    consul_client: HttpxConsul, service_name: str,
) -> None:
    watch = WatchProcess(
        f"dnssrv://{srv_name(service_name)}?server={dns_agent.dns_addr}&min_ttl=0.1")
    try:
        watch.wait_line(lambda line: "0 instances" in line)
        register(service_name, "w", address="10.3.0.1", port=7000)
        watch.wait_line(lambda line: "1 instance: 10.3.0.1:7000" in line)
        consul_client.agent.service.deregister("w")
        watch.wait_line(lambda line: "0 instances" in line)
    finally:
        watch.close()
    assert watch.process.returncode == WatchProcess.INTERRUPTED


def test_every_instance_arrives_not_just_consuls_three_udp_records(
    dns_agent: ConsulDevAgent, register: Callable[..., str], service_name: str,
) -> None:
    # Consul answers SRV over UDP with at most 3 records (udp_answer_limit), a different
    # 3 each time and without the truncation flag; over TCP it sends them all.
    expected = tuple(sorted(f"10.4.0.{index + 1}:{9000 + index}" for index in range(12)))
    for index in range(12):
        register(service_name, f"i{index}", address=f"10.4.0.{index + 1}", port=9000 + index)
    events: list[sd.Event] = []
    with SRVInstancer(srv_name(service_name), resolver=dns_agent.dns_addr,
                      min_ttl=0.1) as instancer:
        instancer.subscribe(events.append)
        wait_for(lambda: events[-1].instances == expected, what="all twelve instances")
