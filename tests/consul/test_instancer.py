"""ConsulInstancer against a real Consul agent (``integration``), plus its interrupt path."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import consul
import httpx
import pytest

from kitsd.compose.consul import ConsulDevAgent
from kitsd.core.errors import PermissionDeniedError, RegistryUnavailableError
from kitsd.sd.consul import (
    AsyncConsulInstancer,
    ConsulInstancer,
    ConsulRegistrar,
    HttpxConsul,
    connect,
)
from kitsd.sd.consul._http11 import Http11Transport
from kitsd.sd.event import Event
from kitsd.sd.instance_info import InstanceInfo
from tests.consul.conftest import ACL_TOKEN, Agent
from tests.helpers import async_wait_for, wait_for

pytestmark = pytest.mark.usefixtures("no_thread_leaks")
integration = pytest.mark.integration


def record(instancer: ConsulInstancer | AsyncConsulInstancer) -> list[Event]:
    events: list[Event] = []
    instancer.subscribe(events.append)
    return events


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n[consul] {text}")


# --- the interrupt path, on a socket that never answers ---------------------------------------


@dataclass
class BlackHole:
    """A listener that accepts connections and never answers."""

    listener: socket.socket

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.listener.getsockname()[1]}"

    def connection_pending(self) -> bool:
        readable, _, _ = select.select([self.listener], [], [], 0)
        return bool(readable)


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield BlackHole(listener)
    finally:
        listener.close()


def test_stop_interrupts_a_request_the_agent_never_answers(black_hole: BlackHole) -> None:
    with connect(black_hole.address, timeout=60) as client:
        instancer = ConsulInstancer(client, "web", first_answer_timeout=0)
        wait_for(black_hole.connection_pending, what="the query to be sent")
        assert instancer.state == Event()  # no answer: the request hangs
        started = time.monotonic()
        instancer.stop()
        assert time.monotonic() - started < 0.5
        assert not client.closed  # the watch interrupted its private copy, not our client


# --- against a real agent ---------------------------------------------------------------------


@integration
def test_registered_instances_are_seen_with_their_address_and_port(
    client: HttpxConsul, service_name: str
) -> None:
    with ConsulRegistrar(client, service_name, "127.0.0.1", 18101), \
            ConsulRegistrar(client, service_name, "::1", 18102), \
            ConsulInstancer(client, service_name) as instancer:
        wait_for(lambda: instancer.state == Event(("127.0.0.1:18101", "[::1]:18102")),
                 what="both instances")


@integration
def test_changes_reach_subscribers(client: HttpxConsul, service_name: str) -> None:
    first = ConsulRegistrar(client, service_name, "127.0.0.1", 18111, ttl=5)
    second = ConsulRegistrar(client, service_name, "127.0.0.1", 18112, ttl=5)
    with ConsulInstancer(client, service_name) as instancer:
        events = record(instancer)
        assert events == [Event()]
        first.register()
        wait_for(lambda: events[-1] == Event(("127.0.0.1:18111",)), what="the first instance")
        second.register()
        wait_for(lambda: events[-1] == Event(("127.0.0.1:18111", "127.0.0.1:18112")),
                 what="both instances")
        first.deregister()
        wait_for(lambda: events[-1] == Event(("127.0.0.1:18112",)), what="the removal")
        second.deregister()
        wait_for(lambda: events[-1] == Event(), what="the second removal")
    assert all(event.error is None for event in events)
    assert [e.instances for e in events] == [
        (), ("127.0.0.1:18111",), ("127.0.0.1:18111", "127.0.0.1:18112"), ("127.0.0.1:18112",), ()
    ]


@integration
def test_tags_after_the_first_are_filtered_by_the_client(
    client: HttpxConsul, service_name: str, raw_services: Callable[..., str]
) -> None:
    raw_services(service_name, f"{service_name}-ab", address="127.0.0.1", port=18121,
                 tags=["a", "b"])
    raw_services(service_name, f"{service_name}-a", address="127.0.0.1", port=18122, tags=["a"])
    raw_services(service_name, f"{service_name}-b", address="127.0.0.1", port=18123, tags=["b"])
    expected = {
        ("a", "b"): ("127.0.0.1:18121",),
        ("b", "a"): ("127.0.0.1:18121",),
        ("a",): ("127.0.0.1:18121", "127.0.0.1:18122"),
        ("b",): ("127.0.0.1:18121", "127.0.0.1:18123"),
        (): ("127.0.0.1:18121", "127.0.0.1:18122", "127.0.0.1:18123"),
        ("c",): (),
    }
    tags_of = {"127.0.0.1:18121": ("a", "b"), "127.0.0.1:18122": ("a",),
               "127.0.0.1:18123": ("b",)}
    for tags, instances in expected.items():
        # each instance comes with its own tags as metadata
        want = Event(instances, info={i: InstanceInfo(tags=tags_of[i]) for i in instances})
        with ConsulInstancer(client, service_name, tags=tags) as instancer:
            wait_for(lambda i=instancer, want=want: i.state == want,  # type: ignore[misc]
                     what=f"instances tagged {tags}")


@integration
def test_a_service_without_address_is_found_at_its_node_address(
    client: HttpxConsul, service_name: str, raw_services: Callable[..., str],
    consul_agent: Agent,
) -> None:
    _, node = client.catalog.node(consul_agent.node_name)
    node_address = node["Node"]["Address"]
    raw_services(service_name, f"{service_name}-noaddr", port=18131)
    with ConsulInstancer(client, service_name) as instancer:
        wait_for(lambda: instancer.state == Event((f"{node_address}:18131",)),
                 what="the node's address")


@integration
def test_passing_only_false_includes_critical_instances(
    client: HttpxConsul, service_name: str, raw_services: Callable[..., str]
) -> None:
    import consul

    raw_services(service_name, f"{service_name}-ok", address="127.0.0.1", port=18141)
    # A TTL check that is never passed stays critical.
    raw_services(service_name, f"{service_name}-sick", address="127.0.0.1", port=18142,
                 check=consul.Check.ttl("60s"))
    with ConsulInstancer(client, service_name) as passing, \
            ConsulInstancer(client, service_name, passing_only=False) as everything:
        wait_for(lambda: passing.state == Event(("127.0.0.1:18141",)), what="passing ones")
        wait_for(lambda: everything.state == Event(("127.0.0.1:18141", "127.0.0.1:18142")),
                 what="all of them")


@integration
def test_instancers_with_the_same_arguments_share_one_watch(
    client: HttpxConsul, service_name: str
) -> None:
    def watches() -> list[threading.Thread]:
        name = f"kitsd-consul-watch-{service_name}"
        return [thread for thread in threading.enumerate() if thread.name == name]

    first = ConsulInstancer(client, service_name, tags=["a"])
    second = ConsulInstancer(client, service_name, tags=("a",))
    third = ConsulInstancer(client, service_name)
    try:
        assert len(watches()) == 2
        with ConsulRegistrar(client, service_name, "127.0.0.1", 18151, tags=["a"]):
            first.stop()
            tagged = Event(("127.0.0.1:18151",),
                           info={"127.0.0.1:18151": InstanceInfo(tags=("a",))})
            wait_for(lambda: second.state == tagged, what="the instance")
            wait_for(lambda: third.state == tagged, what="the instance")
    finally:
        for instancer in (first, second, third):
            instancer.stop()
    assert watches() == []


@integration
def test_stop_is_prompt_while_a_blocking_query_is_held(
    client: HttpxConsul, service_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    latencies = []
    with ConsulRegistrar(client, service_name, "127.0.0.1", 18161, ttl=None):
        for _ in range(3):
            instancer = ConsulInstancer(client, service_name, wait=30)
            # After the first answer the loop goes straight into a query held for up to 30 s.
            wait_for(lambda i=instancer: i.state == Event(("127.0.0.1:18161",)),  # type: ignore[misc]
                     what="the first answer")
            started = time.monotonic()
            instancer.stop()
            latencies.append(time.monotonic() - started)
    assert max(latencies) < 1.0
    report(capsys, "stop() during a held blocking query: "
                   + ", ".join(f"{latency * 1000:.1f} ms" for latency in latencies))


@pytest.fixture
def health_requests(monkeypatch: pytest.MonkeyPatch, service_name: str) -> list[float]:
    """Times of every ``/v1/health/service/<service_name>`` request any watch sends.

    Counted at ``Http11Transport.handle_async_request``, where every watch's
    private client sends.
    """
    calls: list[float] = []
    original = Http11Transport.handle_async_request
    path = f"/v1/health/service/{service_name}"

    async def counting_send(transport: Http11Transport,
                            request: httpx.Request) -> httpx.Response:
        if request.url.path == path:
            calls.append(time.monotonic())
        return await original(transport, request)

    monkeypatch.setattr(Http11Transport, "handle_async_request", counting_send)
    return calls


@integration
def test_no_hot_loop_while_the_agent_is_down_and_recovery_after_restart(
    restartable_agent: ConsulDevAgent, service_name: str, health_requests: list[float],
    capsys: pytest.CaptureFixture[str],
) -> None:
    agent = restartable_agent
    with connect(agent.http_addr) as real:
        registrar = ConsulRegistrar(real, service_name, "127.0.0.1", 18171, ttl=1.5)
        with registrar, ConsulInstancer(real, service_name) as instancer:
            events = record(instancer)
            wait_for(lambda: events[-1] == Event(("127.0.0.1:18171",)), what="the instance")
            agent.stop()
            wait_for(lambda: events[-1].error is not None, what="an error event")
            down = events[-1]
            assert isinstance(down.error, RegistryUnavailableError)
            assert down.instances == ("127.0.0.1:18171",)  # the last instances are kept
            window = 1.5
            before = len(health_requests)
            time.sleep(window)  # the observation window itself, not synchronisation
            requests_while_down = len(health_requests) - before
            # A refused connection every 0.1-0.2 s (sd.consul.index, "Recovery"): at most
            # 15 in 1.5 s, and none of them reaches the agent.
            assert requests_while_down <= 16

            started = time.monotonic()
            agent.start()  # same ports, empty state: the registrar must register again
            ready = time.monotonic()
            wait_for(lambda: events[-1] == Event(("127.0.0.1:18171",)), timeout=20,
                     what="recovery after the restart")
            recovered = time.monotonic() - ready
            assert registrar.service_id in real.agent.services()
            stopped = time.monotonic()
            instancer.stop()
            stop_latency = time.monotonic() - stopped
    errors = [event for event in events if event.error is not None]
    assert len({str(event.error) for event in errors}) <= 3  # not one event per retry
    assert requests_while_down >= 1  # the counter sees the watch's requests
    report(capsys, f"agent down: {requests_while_down} requests in {window}s; agent start "
                   f"took {ready - started:.2f}s; instancer recovered {recovered:.2f}s after "
                   f"the agent was ready; stop took {stop_latency * 1000:.1f} ms")


@integration
def test_stop_while_the_agent_is_down_is_prompt(
    restartable_agent: ConsulDevAgent, service_name: str
) -> None:
    with connect(restartable_agent.http_addr) as client:
        instancer = ConsulInstancer(client, service_name)
        restartable_agent.kill()
        wait_for(lambda: instancer.state.error is not None, what="an error event")
        started = time.monotonic()
        instancer.stop()
        assert time.monotonic() - started < 1.0


# --- the asyncio twin ------------------------------------------------------------------------


def only_this_task() -> bool:
    return asyncio.all_tasks() == {asyncio.current_task()}


def test_async_instancer_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        AsyncConsulInstancer("127.0.0.1:8500", "web")


async def test_async_aclose_abandons_a_request_the_agent_never_answers(
    black_hole: BlackHole,
) -> None:
    instancer = AsyncConsulInstancer(black_hole.address, "web", timeout=60)
    await async_wait_for(black_hole.connection_pending, what="the query to be sent")
    assert instancer.state == Event()
    started = time.monotonic()
    await instancer.aclose()
    assert time.monotonic() - started < 0.5
    assert only_this_task()


@integration
async def test_async_instancer_sees_instances_filters_tags_and_stops_promptly(
    client: HttpxConsul, service_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ab = {"127.0.0.1:18301": InstanceInfo(tags=("a", "b"))}
    with ConsulRegistrar(client, service_name, "127.0.0.1", 18301, tags=["a", "b"]), \
            ConsulRegistrar(client, service_name, "::1", 18302, tags=["a"]):
        async with AsyncConsulInstancer(client, service_name, tags=("a", "b")) as both, \
                AsyncConsulInstancer(client, service_name, tags=["a"], wait=30) as first:
            events = record(both)
            await async_wait_for(lambda: both.state == Event(("127.0.0.1:18301",), info=ab),
                                 what="the instance tagged a and b")
            await async_wait_for(
                lambda: first.state == Event(("127.0.0.1:18301", "[::1]:18302"),
                                             info={**ab, "[::1]:18302": InstanceInfo(tags=("a",))}),
                what="both instances tagged a")
            started = time.monotonic()
            await first.aclose()  # its blocking query is held for up to 30 s
            latency = time.monotonic() - started
    assert latency < 1.0
    assert only_this_task()
    assert events[-1] == Event(("127.0.0.1:18301",), info=ab)
    report(capsys, f"async aclose() during a held blocking query: {latency * 1000:.1f} ms")


@integration
async def test_async_instancer_recovers_after_an_agent_restart(
    restartable_agent: ConsulDevAgent, service_name: str
) -> None:
    with connect(restartable_agent.http_addr) as client, \
            ConsulRegistrar(client, service_name, "127.0.0.1", 18311, ttl=1):
        async with AsyncConsulInstancer(restartable_agent.http_addr, service_name) as instancer:
            await async_wait_for(lambda: instancer.state == Event(("127.0.0.1:18311",)),
                                 what="the instance")
            restartable_agent.stop()
            await async_wait_for(lambda: instancer.state.error is not None, what="an error")
            assert isinstance(instancer.state.error, RegistryUnavailableError)
            assert instancer.state.instances == ("127.0.0.1:18311",)
            restartable_agent.start()
            await async_wait_for(lambda: instancer.state == Event(("127.0.0.1:18311",)),
                                 timeout=20, what="recovery")
    assert only_this_task()


@integration
async def test_async_instancer_reports_an_acl_refusal(
    acl_agent: ConsulDevAgent, service_name: str
) -> None:
    wrong = "kitsd-wrong-token"
    async with AsyncConsulInstancer(acl_agent.http_addr, service_name, token=wrong) as refused, \
            AsyncConsulInstancer(acl_agent.http_addr, service_name, token=ACL_TOKEN) as allowed:
        await async_wait_for(lambda: refused.state.error is not None, what="the refusal")
        assert isinstance(refused.state.error, PermissionDeniedError)
        assert isinstance(refused.state.error.__cause__, consul.ACLPermissionDenied)
        await allowed.wait_answered()
        assert allowed.state == Event()
        assert wrong not in repr(refused) + str(refused.state.error)
